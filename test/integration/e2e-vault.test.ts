// End to end with the Vault backend: the real server composition (src/main.ts startServer) against the faithful
// fake Vault (real node-vault over HTTP), checked through an Envoy-like SDS client over mTLS. Issue #5 "Tests":
// both modes end to end through SDS; Vault down longer than a leaf TTL (intermediate mode keeps serving valid
// renewed certificates, /readyz degraded with the reason); a role that forbids the SPIFFE ID gives a clear error;
// the namespace header is sent.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startFakeVault, type FakeVault, type LoggedRequest } from '../fakes/vault.js';
import { ManualClock } from '../fakes/clock.js';
import type { SotwResponse, SotwStream } from '../support/sds-client.js';
import { eventually, fingerprints, opensslVerify, pemCerts, sleep, startE2eMeshca, tempDir, verifyChain, type E2eMeshca } from '../support/e2e-meshca.js';

const TD = 'example.org';
const POLICY_DIR = new URL('../../../examples/vault/', import.meta.url);
const GRPC_INVALID_ARGUMENT = 3;
const GRPC_UNAVAILABLE = 14;

/** The SPIFFE role of examples/vault/setup.sh, in the fake's terms. */
function spiffeRole(allowedUriSans: string): Record<string, unknown> {
  return {
    allowed_uri_sans: allowedUriSans,
    require_cn: false,
    key_type: 'any',
    basic_constraints_valid_for_non_ca: true,
    allow_any_name: false,
    allowed_domains: [],
    allow_subdomains: false,
    enforce_hostnames: true,
    server_flag: true,
    client_flag: true,
    key_usage: 'DigitalSignature,KeyAgreement,KeyEncipherment',
    use_csr_sans: false,
    use_csr_common_name: false,
    allow_ip_sans: false,
    ttl: '1h',
    max_ttl: '24h',
    not_before_duration: '30s',
    no_store: true,
    generate_lease: false,
  };
}

const certPem = (r: SotwResponse, name = 'default'): string => {
  const s = r.secrets.find((x) => x.name === name);
  assert.ok(s?.tls_certificate, `response carries tls_certificate ${name}: ${JSON.stringify(r.secrets.map((x) => x.name))}`);
  return s.tls_certificate.certificate_chain.inline_bytes.toString();
};
const rootsPem = (r: SotwResponse): string => {
  const s = r.secrets.find((x) => x.name === 'ROOTCA');
  assert.ok(s?.validation_context?.trusted_ca, `response carries ROOTCA: ${JSON.stringify(r.secrets.map((x) => x.name))}`);
  return s.validation_context.trusted_ca.inline_bytes.toString();
};
const samePem = (a: string, b: string): void => assert.deepEqual(fingerprints(pemCerts(a)), fingerprints(pemCerts(b)));
const signs = (fake: FakeVault, path: string): LoggedRequest[] => fake.requests.filter((r) => r.method !== 'GET' && r.path === path);

/** Opens one SDS stream for default and one for ROOTCA as `id`; returns both first responses (acked). */
async function subscribe(m: E2eMeshca, id: string): Promise<{ def: SotwStream; roots: SotwStream; cert: SotwResponse; rootca: SotwResponse }> {
  const client = await m.clientFor(id);
  const def = client.streamSecrets();
  def.request(['default']);
  const cert = await def.next(10_000);
  def.ack(cert);
  const roots = client.streamSecrets();
  roots.request(['ROOTCA']);
  const rootca = await roots.next(10_000);
  roots.ack(rootca);
  return { def, roots, cert, rootca };
}

describe('e2e: meshca serve with the Vault backend, through SDS', { timeout: 30_000 }, () => {
  let tmp: { dir: string; cleanup(): Promise<void> };
  before(async () => {
    tmp = await tempDir('meshca-e2e-vault-');
  });
  after(async () => {
    await tmp.cleanup();
  });

  it('intermediate mode: SDS chains verify to ROOTCA = the Vault root; Vault sees one sign-intermediate for many leaves', async () => {
    const fake = await startFakeVault();
    fake.setPolicy('meshca-intermediate', await readFile(new URL('policy-intermediate.hcl', POLICY_DIR), 'utf8'));
    const token = fake.createToken({ policies: ['meshca-intermediate'], ttlSeconds: 3600 });
    const m = await startE2eMeshca({
      trustDomain: TD,
      authority: { type: 'vault', vault: { address: fake.url, mode: 'intermediate', pkiMount: 'pki', intermediateTtl: '48h', auth: { method: 'token', token } } },
    });
    try {
      const vaultRoot = pemCerts(fake.rootPem('pki'));
      const ids = ['web', 'api', 'db', 'cache', 'worker'].map((sa) => `spiffe://${TD}/ns/default/sa/${sa}`);
      const serials = new Set<string>();
      let signingCa: string | undefined;
      for (const id of ids) {
        const { cert, rootca } = await subscribe(m, id);
        const chainPem = certPem(cert);
        const trusted = rootsPem(rootca);
        assert.deepEqual(fingerprints(pemCerts(trusted)), fingerprints(vaultRoot), 'ROOTCA is exactly the fake Vault root');
        const { leaf, path } = verifyChain(chainPem, trusted, Date.now());
        assert.equal(leaf.subjectAltName, `URI:${id}`);
        assert.equal(leaf.ca, false);
        assert.equal(path.length, 3, 'leaf → meshca signing CA → Vault root');
        const ca = path[1]!;
        assert.ok(ca.ca, 'the intermediate is a CA');
        assert.equal(ca.subjectAltName, `URI:spiffe://${TD}`, 'Vault put the trust domain in the signing CA (uri_sans)');
        signingCa ??= ca.fingerprint256;
        assert.equal(ca.fingerprint256, signingCa, 'every leaf comes from the same meshca signing CA');
        assert.match(await opensslVerify(tmp.dir, chainPem, trusted, Date.now()), /OK/);
        serials.add(leaf.serialNumber);
      }
      assert.equal(serials.size, ids.length);
      // More leaves straight from the authority (the controller API / Istio path): Vault is still not involved.
      for (let i = 0; i < 20; i++) await m.running.core.authority.issue({ spiffeId: `spiffe://${TD}/ns/batch/sa/job-${i}`, source: 'api' });
      const mints = signs(fake, 'pki/root/sign-intermediate');
      assert.deepEqual(mints.map((r) => r.status), [200], 'exactly one sign-intermediate request');
      assert.equal(signs(fake, 'pki/sign/meshca').length, 0);
      assert.equal(fake.issuedCount('pki'), 1);
      const unauthenticated = (r: { path: string; headers: Record<string, unknown> }) => (r.path.startsWith('sys/') || r.path === 'pki/cert/ca_chain') && r.headers['x-vault-token'] === undefined;
      assert.ok(fake.requests.every((r) => r.headers['x-vault-token'] === token || unauthenticated(r)), 'the least-privilege token is used (and none on unauthenticated paths)');
      const ready = await m.readyz();
      assert.deepEqual(ready, { status: 200, body: { ready: true } });
    } finally {
      await m.stop();
      await fake.close();
    }
  });

  describe('leaf mode', () => {
    let fake: FakeVault;
    let m: E2eMeshca;
    before(async () => {
      fake = await startFakeVault();
      await fake.mountPki('pki_int', { parent: 'pki', caTtlSeconds: 5 * 365 * 86400 });
      fake.setRole('pki_int', 'meshca', spiffeRole(`spiffe://${TD}/*`));
      fake.setPolicy('meshca-leaf', await readFile(new URL('policy-leaf.hcl', POLICY_DIR), 'utf8'));
      // Kubernetes auth: meshca's pod logs in with its service-account token.
      fake.addKubernetesRole('meshca', {
        jwts: { 'sa-jwt-meshca-e2e': { serviceAccountName: 'meshca', serviceAccountNamespace: 'mesh-system' } },
        boundServiceAccountNames: ['meshca'],
        boundServiceAccountNamespaces: ['mesh-system'],
        policies: ['meshca-leaf'],
      });
      const saFile = join(tmp.dir, 'sa-token');
      await writeFile(saFile, 'sa-jwt-meshca-e2e\n');
      m = await startE2eMeshca({
        trustDomain: TD,
        workload: { ttl: '1h' },
        authority: {
          type: 'vault',
          vault: { address: fake.url, mode: 'leaf', pkiMount: 'pki_int', role: 'meshca', auth: { method: 'kubernetes', role: 'meshca', serviceAccountTokenFile: saFile } },
        },
      });
    });
    after(async () => {
      await m?.stop();
      await fake?.close();
    });

    it('every SDS leaf is signed by Vault at pki_int/sign/meshca with uri_sans = the SPIFFE ID', async () => {
      const vaultInt = pemCerts(fake.caPem('pki_int'))[0]!;
      const ids = ['web', 'api', 'db'].map((sa) => `spiffe://${TD}/ns/default/sa/${sa}`);
      for (const id of ids) {
        const before = fake.requests.length;
        const { cert, rootca } = await subscribe(m, id);
        const chainPem = certPem(cert);
        const trusted = rootsPem(rootca);
        samePem(trusted, fake.rootPem('pki'));
        const { leaf, path } = verifyChain(chainPem, trusted, Date.now());
        assert.equal(leaf.subjectAltName, `URI:${id}`);
        assert.equal(path.length, 3, 'leaf → Vault intermediate (pki_int) → Vault root');
        assert.equal(path[1]!.fingerprint256, vaultInt.fingerprint256, 'issued by the Vault pki_int CA, whose key only Vault holds');
        assert.ok(leaf.verify(vaultInt.publicKey));
        assert.match(await opensslVerify(tmp.dir, chainPem, trusted, Date.now()), /OK/);
        // The SDS leaf itself went through Vault: a sign request for this ID after the client's own certificate.
        const forId = fake.requests.slice(before).filter((r) => r.path === 'pki_int/sign/meshca' && (r.body as { uri_sans?: string }).uri_sans === id);
        assert.equal(forId.length, 2, 'one sign for the client certificate, one for the SDS leaf');
        assert.ok(forId.every((r) => r.status === 200));
        assert.ok(forId.every((r) => (r.body as { ttl: string }).ttl === '3600s'));
      }
      const all = signs(fake, 'pki_int/sign/meshca');
      const allowedIds = new Set([...ids, `spiffe://${TD}/meshca`]);
      for (const r of all) assert.ok(allowedIds.has((r.body as { uri_sans: string }).uri_sans), `signed only known IDs: ${(r.body as { uri_sans: string }).uri_sans}`);
      assert.equal(fake.issuedCount('pki_int'), all.filter((r) => r.status === 200).length, 'every certificate meshca handed out was issued by Vault');
      assert.equal(signs(fake, 'pki/root/sign-intermediate').length, 0, 'no intermediate in leaf mode');
      assert.ok(fake.requests.some((r) => r.path === 'auth/kubernetes/login' && r.status === 200));
      assert.ok(!m.logs.some((l) => JSON.stringify(l).includes('sa-jwt-meshca-e2e')), 'the service-account JWT is never logged');
    });

    it('a role that forbids the SPIFFE ID ends the SDS stream with INVALID_ARGUMENT naming the ID and the role; not retried', async () => {
      const id = `spiffe://${TD}/ns/legacy/sa/app`;
      const client = await m.clientFor(id); // allowed when the certificate was issued
      // The operator narrows the role: legacy namespaces are no longer allowed.
      fake.setRole('pki_int', 'meshca', spiffeRole(`spiffe://${TD}/meshca,spiffe://${TD}/ns/default/sa/*`));
      const before = fake.requests.length;
      const s = client.streamSecrets();
      s.request(['default']);
      const st = await s.status(10_000);
      assert.equal(st.code, GRPC_INVALID_ARGUMENT, `status ${st.code}: ${st.details}`);
      assert.match(st.details, /vault: role meshca does not allow URI SAN spiffe:\/\/example\.org\/ns\/legacy\/sa\/app/);
      assert.match(st.details, /allowed_uri_sans/);
      assert.equal(s.inbox.pending, 0, 'no certificate was sent');
      const tries = fake.requests.slice(before).filter((r) => r.path === 'pki_int/sign/meshca');
      assert.deepEqual(tries.map((r) => r.status), [400], 'one refused request, not retried');
      assert.deepEqual(await m.readyz(), { status: 200, body: { ready: true } }, 'a refused ID does not make meshca unready');
      // Allowed identities keep working.
      const ok = await subscribe(m, `spiffe://${TD}/ns/default/sa/web2`);
      verifyChain(certPem(ok.cert), rootsPem(ok.rootca), Date.now());
      fake.setRole('pki_int', 'meshca', spiffeRole(`spiffe://${TD}/*`));
    });

    it('Vault sealed in leaf mode: a new leaf fails UNAVAILABLE "vault: sealed", /readyz 503 with the reason; recovers after unseal', async () => {
      const id = `spiffe://${TD}/ns/default/sa/late`;
      const client = await m.clientFor(id); // its own certificate was signed while Vault was up
      fake.seal();
      try {
        const s = client.streamSecrets();
        s.request(['default']);
        const st = await s.status(20_000);
        assert.equal(st.code, GRPC_UNAVAILABLE, `status ${st.code}: ${st.details}`);
        assert.match(st.details, /vault: sealed/);
        const sealedTries = fake.requests.filter((r) => r.path === 'pki_int/sign/meshca' && r.status === 503);
        assert.ok(sealedTries.length > 1, 'retried with backoff before giving up');
        assert.deepEqual(await m.readyz(), { status: 503, body: { ready: false, reason: 'vault: sealed' } }, 'leaf mode cannot issue without Vault: not ready');
      } finally {
        fake.unseal();
      }
      const again = client.streamSecrets();
      again.request(['default']);
      const r = await again.next(10_000);
      again.ack(r);
      assert.equal(verifyChain(certPem(r), fake.rootPem('pki'), Date.now()).leaf.subjectAltName, `URI:${id}`);
      assert.deepEqual(await m.readyz(), { status: 200, body: { ready: true } });
    });
  });

  it('namespace: X-Vault-Namespace on every call (approle login with a secret-ID file included)', async () => {
    const fake = await startFakeVault({ namespaces: ['team-a'] });
    try {
      await fake.mountPki('pki', { namespace: 'team-a' });
      fake.setPolicy('meshca-intermediate', await readFile(new URL('policy-intermediate.hcl', POLICY_DIR), 'utf8'), 'team-a');
      const ar = fake.addAppRole('meshca', { namespace: 'team-a', policies: ['meshca-intermediate'], tokenTtlSeconds: 3600 });
      const secretFile = join(tmp.dir, 'secret-id');
      await writeFile(secretFile, `${ar.secretId}\n`, { mode: 0o600 });
      const m = await startE2eMeshca({
        trustDomain: TD,
        authority: { type: 'vault', vault: { address: fake.url, namespace: 'team-a', auth: { method: 'approle', roleId: ar.roleId, secretIdFile: secretFile } } },
      });
      try {
        const { cert, rootca } = await subscribe(m, `spiffe://${TD}/ns/default/sa/web`);
        const trusted = rootsPem(rootca);
        samePem(trusted, fake.rootPem('pki', 'team-a'));
        assert.notDeepEqual(fingerprints(pemCerts(trusted)), fingerprints(pemCerts(fake.rootPem('pki'))), 'not the root namespace\'s root');
        verifyChain(certPem(cert), trusted, Date.now());
        const apiCalls = fake.requests.filter((r) => !r.path.startsWith('sys/'));
        assert.ok(apiCalls.some((r) => r.path === 'auth/approle/login' && r.status === 200), 'logged in with approle');
        assert.ok(apiCalls.some((r) => r.path === 'pki/root/sign-intermediate' && r.status === 200));
        for (const r of fake.requests) assert.equal(r.headers['x-vault-namespace'], 'team-a', `${r.method} ${r.path} carries X-Vault-Namespace`);
        assert.ok(!m.logs.some((l) => JSON.stringify(l).includes(ar.secretId)), 'the secret ID is never logged');
      } finally {
        await m.stop();
      }
    } finally {
      await fake.close();
    }
  });

  it('Vault sealed for longer than a leaf TTL (intermediate mode): valid renewed leaves keep flowing, /readyz says "vault: sealed"', async () => {
    const clock = new ManualClock(Date.now());
    const fake = await startFakeVault({ now: () => clock.nowMs() });
    const token = fake.createToken({ policies: ['root'], ttlSeconds: 0 });
    // Leaves live 20 s (renewed at ~10 s); meshca's signing CA lives 120 s, so its successor is due at ~45-60 s,
    // inside the outage: the rotation attempt meets the sealed Vault.
    const m = await startE2eMeshca(
      {
        trustDomain: TD,
        workload: { ttl: '20s' },
        authority: { type: 'vault', vault: { address: fake.url, intermediateTtl: '120s', auth: { token } } },
      },
      { clock },
    );
    const start = clock.nowMs();
    try {
      const { def, roots, cert, rootca } = await subscribe(m, `spiffe://${TD}/ns/default/sa/web`);
      const trusted = rootsPem(rootca);
      samePem(trusted, fake.rootPem('pki'));
      const firstCa = verifyChain(certPem(cert), trusted, clock.nowMs()).path[1]!;
      const received: { leaf: X509Certificate; ca: X509Certificate; atMs: number; chainPem: string }[] = [];
      // The leaf the workload holds and the (manual) time it arrived. Its renewal is due at 50% +/-10% of its life;
      // when real time runs slow (a loaded machine), wait for the push rather than move the clock past 70%.
      let held = { arrivedMs: clock.nowMs(), notAfterMs: Date.parse(pemCerts(certPem(cert))[0]!.validTo) };
      const take = (r: SotwResponse): void => {
        const chainPem = certPem(r);
        const now = clock.nowMs();
        // Never an expired (or not yet valid) certificate, and always one that chains to the served root.
        const { leaf, path } = verifyChain(chainPem, trusted, now);
        received.push({ leaf, ca: path[1]!, atMs: now, chainPem });
        held = { arrivedMs: now, notAfterMs: Date.parse(leaf.validTo) };
        def.ack(r);
      };
      const drain = async (): Promise<void> => {
        while (def.inbox.pending > 0) take(await def.next(100));
        assert.equal(roots.inbox.pending, 0, 'the trust bundle does not change: same Vault root');
      };
      const step = async (): Promise<void> => {
        await clock.advanceAsync(500);
        await sleep(10);
        await drain();
        if (clock.nowMs() >= held.arrivedMs + 0.7 * (held.notAfterMs - held.arrivedMs)) {
          const r = await def.next(5000).catch((e: Error) => assert.fail(`no renewal pushed by 70% of the leaf's life (+${clock.nowMs() - start} ms): ${e.message}`));
          take(r);
          await drain();
        }
      };
      const signIntermediate = () => signs(fake, 'pki/root/sign-intermediate');
      const sealedReady: { status: number; body: { ready: boolean; reason?: string } }[] = [];
      let sealedMetric = false;

      fake.seal();
      const sealedAt = clock.nowMs();
      // 85 s of sealed Vault, in 500 ms steps with a little real time for HTTP round trips and pushes.
      while (clock.nowMs() - sealedAt < 85_000) {
        await step();
        if (clock.nowMs() - sealedAt > 60_000 && sealedReady.length < 3) {
          sealedReady.push(await m.readyz());
          const metrics = await fetchText(`http://127.0.0.1:${m.running.httpPort}/metrics`);
          sealedMetric ||= /^meshca_vault_up 0$/m.test(metrics);
        }
      }
      const sealedFor = clock.nowMs() - sealedAt;
      assert.ok(sealedFor > 4 * 20_000, `sealed for ${sealedFor} ms, more than four leaf lifetimes`);
      const failed = signIntermediate().filter((r) => r.status === 503);
      assert.ok(failed.length >= 2, `meshca tried to rotate its signing CA while sealed and was refused (${failed.length} x 503), with retries`);
      assert.equal(signIntermediate().filter((r) => r.status === 200).length, 1, 'no successful mint while sealed');
      // Renewals kept coming from the current signing CA, each valid when it arrived.
      assert.ok(received.length >= 6, `at least six renewed leaves during the outage (got ${received.length})`);
      assert.equal(new Set(received.map((r) => r.leaf.serialNumber)).size, received.length, 'each renewal is a new certificate');
      for (const r of received) assert.equal(r.ca.fingerprint256, firstCa.fingerprint256, 'signed by the signing CA meshca already held');
      // Renewal happened before expiry: no gap without a valid certificate.
      let coveredUntil = Date.parse(pemCerts(certPem(cert))[0]!.validTo);
      for (const r of received) {
        assert.ok(r.atMs < coveredUntil, `renewed at +${r.atMs - start} ms, before the previous leaf expired at +${coveredUntil - start} ms`);
        coveredUntil = Date.parse(r.leaf.validTo);
      }
      assert.match(await opensslVerify(tmp.dir, received[received.length - 1]!.chainPem, trusted, clock.nowMs()), /OK/);
      // /readyz: still ready (it can serve) but degraded, naming the reason; the metric alerts.
      assert.ok(sealedReady.length > 0);
      for (const r of sealedReady) assert.deepEqual(r, { status: 200, body: { ready: true, reason: 'vault: sealed' } });
      assert.ok(sealedMetric, 'meshca_vault_up 0 while sealed');

      // Vault comes back: the successor signing CA is minted, readiness is clean again, leaves keep flowing.
      fake.unseal();
      await eventually(
        async () => {
          await step();
          return signIntermediate().some((r, i) => i > 0 && r.status === 200);
        },
        10_000,
        'the successor signing CA minted after unseal',
      );
      assert.ok(clock.nowMs() - start < 120_000, 'recovered before the first signing CA expired');
      await eventually(async () => (await m.readyz()).body.reason === undefined, 5000, 'readyz without a degraded reason');
      assert.deepEqual(await m.readyz(), { status: 200, body: { ready: true } });
      // Past the activation point the pushed leaves come from the new signing CA, still under the same root.
      const before = received.length;
      while (clock.nowMs() - start < 118_000) {
        await step();
      }
      const late = received.slice(before);
      assert.ok(late.length > 0);
      assert.notEqual(late[late.length - 1]!.ca.fingerprint256, firstCa.fingerprint256, 'the last leaf comes from the successor signing CA');
      def.cancel();
      roots.cancel();
    } finally {
      await m.stop();
      await fake.close();
    }
  });
});

async function fetchText(url: string): Promise<string> {
  const res = await fetch(url);
  return res.text();
}
