import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { bootstrapSdsClient, startServe, tempDir, writeTestConfig } from '../support/cli.js';
import { SdsClient } from '../support/sds-client.js';
import { readmeMetrics } from '../support/readme.js';

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

function find(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

async function scrape(port: number): Promise<Sample[]> {
  return parseMetrics(await scrapeText(port));
}

async function scrapeText(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

/**
 * issue 3 "Ops": the SDS metrics are on /metrics of `meshca serve` from the start (a scrape before the first stream,
 * NACK or refused caller already lists them at 0), and certificates issued are counted by type and key type.
 */
test('meshca serve exposes every SDS metric from the start, and counts issued certificates by type and key type', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  const cfg = await writeTestConfig(t.dir);
  const server = await startServe(cfg);
  let client: SdsClient | undefined;
  try {
    const text = await scrapeText(server.httpPort);
    const fresh = parseMetrics(text);
    // README "Metrics" is the list users build dashboards from: every meshca_* metric here is in it, every row marked
    // "always" is here, and each sample carries exactly the documented labels.
    const documented = new Map(readmeMetrics().map((r) => [r.name, r]));
    const served = [...text.matchAll(/^# HELP (meshca_[a-z0-9_]+) /gm)].map((m) => m[1]!);
    for (const name of served) assert.ok(documented.has(name), `${name} is on /metrics but not in README "Metrics"`);
    for (const r of documented.values()) if (r.when === 'always') assert.ok(served.includes(r.name), `README lists ${r.name} (always) but /metrics has no ${r.name}`);
    for (const sample of fresh) {
      const base = served.find((n) => sample.name === n || (sample.name.startsWith(n + '_') && /_(bucket|sum|count)$/.test(sample.name)));
      if (!base) continue;
      const labels = Object.keys(sample.labels).filter((l) => l !== 'le').sort();
      assert.deepEqual(labels, [...documented.get(base)!.labels].sort(), `labels of ${sample.name} vs README`);
    }
    for (const method of ['StreamSecrets', 'DeltaSecrets']) {
      assert.equal(find(fresh, 'meshca_sds_streams_open', { method })[0]?.value, 0, `open streams (${method}) listed at 0`);
      assert.equal(find(fresh, 'meshca_sds_nacks_total', { method })[0]?.value, 0, `NACKs (${method}) listed at 0`);
    }
    for (const method of ['StreamSecrets', 'DeltaSecrets', 'FetchSecrets']) {
      assert.equal(find(fresh, 'meshca_sds_requests_total', { method })[0]?.value, 0, `requests (${method}) listed at 0`);
    }
    for (const api of ['IdentityService.Issue', 'IdentityService.IssueBatch', 'IstioCertificateService.CreateCertificate']) {
      for (const decision of ['allow', 'deny']) {
        assert.equal(find(fresh, 'meshca_authz_decisions_total', { api, decision })[0]?.value, 0, `authz decisions (${api}, ${decision}) listed at 0`);
      }
    }
    for (const reason of ['renewal', 'bundle', 'subscription', 'reissue']) {
      assert.equal(find(fresh, 'meshca_sds_pushes_total', { reason })[0]?.value, 0, `pushes by reason ${reason} listed at 0`);
    }
    for (const type of ['tls_certificate', 'validation_context']) {
      assert.equal(find(fresh, 'meshca_sds_secrets_pushed_total', { type })[0]?.value, 0, `secrets pushed (${type}) listed at 0`);
    }
    for (const reason of ['no-certificate', 'untrusted', 'expired', 'no-spiffe-id']) {
      assert.equal(find(fresh, 'meshca_auth_failures_total', { reason })[0]?.value, 0, `auth failures (${reason}) listed at 0`);
    }
    assert.equal(find(fresh, 'meshca_certificates_issued_total', { type: 'serving', key_type: 'ec-p256' })[0]?.value, 1, 'the serving certificate');
    assert.equal(find(fresh, 'meshca_certificates_issued_total', { type: 'signing-ca', key_type: 'ec-p256' })[0]?.value, 1, 'the first signing CA');
    assert.ok(find(fresh, 'meshca_issuance_duration_seconds_count').length > 0, 'issuance latency histogram');
    assert.deepEqual(find(fresh, 'meshca_sds_served_cert_nearest_expiry_seconds'), [], 'nearest expiry absent while no certificate is served (README), not 0');

    const boot = join(t.dir, 'boot');
    client = await bootstrapSdsClient(cfg, boot, server.grpcPort!, 'spiffe://test.example/ns/default/sa/web', { id: 'web-1', cluster: 'web' });
    const s = client.streamSecrets();
    s.request(['default']);
    const r = await s.next(10_000);
    s.nack(r, '');
    await s.expectSilence(200);
    const after = await scrape(server.httpPort);
    assert.equal(find(after, 'meshca_certificates_issued_total', { type: 'workload', key_type: 'ec-p256' })[0]?.value, 1, 'the SDS leaf');
    assert.equal(find(after, 'meshca_sds_streams_open', { method: 'StreamSecrets' })[0]?.value, 1);
    assert.equal(find(after, 'meshca_sds_nacks_total', { method: 'StreamSecrets' })[0]?.value, 1);
    assert.equal(find(after, 'meshca_sds_pushes_total', { reason: 'subscription' })[0]?.value, 1);
    assert.ok((find(after, 'meshca_sds_served_cert_nearest_expiry_seconds')[0]?.value ?? 0) > 3500, 'time to the nearest expiry');
    s.cancel();

    const anon = new SdsClient({ target: `127.0.0.1:${server.grpcPort}`, tls: { caPem: await readFile(join(boot, 'bundle.pem'), 'utf8') }, node: { id: 'x', cluster: 'x' } });
    await assert.rejects(anon.fetchSecrets(['ROOTCA']), (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED);
    anon.close();
    const refused = await scrape(server.httpPort);
    assert.equal(find(refused, 'meshca_auth_failures_total', { reason: 'no-certificate' })[0]?.value, 1);
  } finally {
    client?.close();
    await server.stop('SIGKILL');
    await t.cleanup();
  }
});
