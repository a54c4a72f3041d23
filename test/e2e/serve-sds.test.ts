import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bootstrapSdsClient, runCli, startServe, tempDir, writeTestConfig } from '../support/cli.js';
import { SdsClient } from '../support/sds-client.js';

/**
 * The product as a user runs it: `meshca serve` in its own process, a bootstrap identity from `meshca issue`, and an
 * Envoy-like SDS client over mTLS; `meshca rotate` from another process re-issues the pushed certificate.
 */
test('Envoy-like client gets default and ROOTCA from meshca serve, and a new certificate after meshca rotate', { timeout: 120_000 }, async () => {
  const t = await tempDir();
  const cfg = await writeTestConfig(t.dir);
  const server = await startServe(cfg);
  let client: SdsClient | undefined;
  try {
    assert.ok(server.grpcPort, `gRPC port from logs:\n${server.logs()}`);
    const boot = join(t.dir, 'boot');
    client = await bootstrapSdsClient(cfg, boot, server.grpcPort!, 'spiffe://test.example/ns/default/sa/web', { id: 'web-7f9c', cluster: 'web' });
    const def = client.streamSecrets();
    def.request(['default']);
    const first = await def.next(10_000);
    assert.equal(first.secrets.length, 1);
    assert.equal(first.secrets[0]!.name, 'default');
    const chainPem = first.secrets[0]!.tls_certificate!.certificate_chain.inline_bytes.toString();
    const leaf = new X509Certificate(chainPem);
    assert.equal(leaf.subjectAltName, 'URI:spiffe://test.example/ns/default/sa/web');
    assert.match(first.secrets[0]!.tls_certificate!.private_key.inline_bytes.toString(), /BEGIN PRIVATE KEY/);
    def.ack(first);

    const roots = client.streamSecrets();
    roots.request(['ROOTCA']);
    const rootca = await roots.next(10_000);
    assert.equal(rootca.secrets[0]!.name, 'ROOTCA');
    const trusted = rootca.secrets[0]!.validation_context!.trusted_ca!.inline_bytes.toString();
    assert.equal(trusted, await readFile(join(boot, 'bundle.pem'), 'utf8'));
    roots.ack(rootca);

    const rotated = await runCli(['rotate', '--config', cfg]);
    assert.equal(rotated.code, 0, rotated.stderr);
    const pushed = await def.next(15_000);
    assert.notEqual(pushed.version_info, first.version_info);
    const newLeaf = new X509Certificate(pushed.secrets[0]!.tls_certificate!.certificate_chain.inline_bytes.toString());
    assert.notEqual(newLeaf.serialNumber, leaf.serialNumber);
    assert.equal(newLeaf.subjectAltName, leaf.subjectAltName);
    def.ack(pushed);

    const stop = await server.stop('SIGTERM');
    assert.equal(stop.code, 0, server.logs());
    assert.ok(stop.ms < 20_000, `drained in ${stop.ms} ms`);
  } finally {
    client?.close();
    await server.stop('SIGKILL');
    await t.cleanup();
  }
});
