import { describe, it, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { startFakeVault, createTestCsr, type FakeVault } from '../fakes/vault.js';
import { ManualClock } from '../fakes/clock.js';
import { VaultBackend, type VaultBackendOptions } from '../../providers/vault/backend.js';
import { vaultConfigSchema } from '../../providers/vault/config.js';
import { vaultProvider } from '../../providers/vault/index.js';
import type { BackendContext } from '../../providers/types.js';
import type { StateStore } from '../../src/store/types.js';
import { CaError } from '../../src/util/errors.js';

const TD = 'example.org';
const ID = `spiffe://${TD}/ns/default/sa/web`;

class MemoryStore implements StateStore {
  readonly location = 'memory';
  readonly data = new Map<string, Buffer>();
  async read(key: string) {
    return this.data.get(key);
  }
  async write(key: string, value: Buffer) {
    this.data.set(key, Buffer.from(value));
  }
  async list() {
    return [...this.data.keys()];
  }
  async withLock<T>(fn: () => Promise<T>) {
    return fn();
  }
}

interface Harness {
  ctx: BackendContext;
  logs: () => string;
  metrics: Registry;
}

function harness(clock: ManualClock): Harness {
  let buf = '';
  const log: Logger = pino({ level: 'debug' }, { write: (s: string) => void (buf += s) });
  const metrics = new Registry();
  return { ctx: { trustDomain: TD, clock, log, store: new MemoryStore(), metrics }, logs: () => buf, metrics };
}

/** Fast retries with real (tiny) sleeps so a ManualClock does not have to drive backoff. */
const FAST: VaultBackendOptions = { retry: { attempts: 3, baseMs: 1, maxMs: 2 }, sleep: (ms) => new Promise((r) => setTimeout(r, ms)), requestTimeoutMs: 3000 };

function cfg(fake: FakeVault, extra: Record<string, unknown>) {
  return vaultConfigSchema.parse({ address: fake.url, ...extra });
}

/** Lets promise chains started by fired timers finish (HTTP round trips to the fake need real time). */
async function settle(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

function verifyChain(leafDer: Buffer, chain: Buffer[], roots: Buffer[]): void {
  const certs = [leafDer, ...chain].map((d) => new X509Certificate(d));
  for (let i = 0; i + 1 < certs.length; i++) {
    assert.ok(certs[i]!.checkIssued(certs[i + 1]!) && certs[i]!.verify(certs[i + 1]!.publicKey), `cert ${i} issued by cert ${i + 1}`);
  }
  const top = certs[certs.length - 1]!;
  const root = roots.map((r) => new X509Certificate(r)).find((r) => top.checkIssued(r) && top.verify(r.publicKey));
  assert.ok(root, 'chain ends at a returned root');
  assert.ok(root.checkIssued(root) && root.verify(root.publicKey), 'root is self-signed');
}

async function opensslVerify(dir: string, leaf: Buffer, chain: Buffer[], roots: Buffer[]): Promise<void> {
  const pem = (d: Buffer) => new X509Certificate(d).toString();
  await writeFile(join(dir, 'root.pem'), roots.map(pem).join(''));
  await writeFile(join(dir, 'untrusted.pem'), chain.map(pem).join('') || pem(roots[0]!));
  await writeFile(join(dir, 'leaf.pem'), pem(leaf));
  const out = execFileSync('openssl', ['verify', '-CAfile', join(dir, 'root.pem'), '-untrusted', join(dir, 'untrusted.pem'), join(dir, 'leaf.pem')], { encoding: 'utf8' });
  assert.match(out, /OK/);
}

describe('vault backend against the fake Vault with the real node-vault', { timeout: 30_000 }, () => {
  let fake: FakeVault;
  let clock: ManualClock;
  let dir: string;
  let backends: VaultBackend[] = [];
  const track = (b: VaultBackend) => (backends.push(b), b);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshca-vault-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    clock = new ManualClock(Date.now());
    fake = await startFakeVault({ now: () => clock.nowMs(), namespaces: ['team-a'] });
    await fake.mountPki('pki_int', { parent: 'pki', caTtlSeconds: 5 * 365 * 86400 });
    fake.setRole('pki_int', 'meshca', {
      allowed_uri_sans: `spiffe://${TD}/ns/*/sa/*`,
      require_cn: false,
      key_type: 'any',
      basic_constraints_valid_for_non_ca: true,
      max_ttl: '24h',
      no_store: true,
    });
  });
  afterEach(async () => {
    for (const b of backends) await b.close();
    backends = [];
    await fake.close();
  });

  it('intermediate mode: signs meshca\'s CA CSR; the chain verifies to the Vault root (Node and openssl)', async () => {
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { token: fake.rootToken } }), h.ctx, FAST));
    await b.init();
    const csr = await createTestCsr({ ca: true, cn: 'meshca signing CA' });
    const out = await b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 48 * 3600 });
    assert.equal(out.chain.length, 1, 'issued directly by the root: chain is just our CA');
    assert.deepEqual(out.roots.map((r) => new X509Certificate(r).toString().trim()), [fake.rootPem('pki').trim()]);
    const ca = new X509Certificate(out.chain[0]!);
    assert.ok(ca.ca);
    assert.ok(ca.publicKey.equals(csr.publicKey));
    assert.match(ca.subjectAltName ?? '', new RegExp(`URI:spiffe://${TD}`));
    assert.ok(Math.abs(new Date(ca.validTo).getTime() - clock.nowMs() - 48 * 3600_000) < 2000);
    verifyChain(out.chain[0]!, out.chain.slice(1), out.roots);
    await opensslVerify(dir, out.chain[0]!, out.chain.slice(1), out.roots);
    const sent = fake.requests.find((r) => r.path === 'pki/root/sign-intermediate')!;
    assert.deepEqual(Object.keys(sent.body as object).sort(), ['common_name', 'csr', 'exclude_cn_from_sans', 'format', 'ttl', 'uri_sans']);
    assert.equal((sent.body as { exclude_cn_from_sans: unknown }).exclude_cn_from_sans, true);
    assert.equal((sent.body as { uri_sans: string }).uri_sans, `spiffe://${TD}`);
    assert.deepEqual(await b.trustAnchors(), out.roots);
    assert.equal(b.health().ok, true);
  });

  it('intermediate mode: a hostname-like CN in meshca\'s CSR does not become a DNS SAN of the signing CA (exclude_cn_from_sans)', async () => {
    const b = track(new VaultBackend(cfg(fake, { auth: { token: fake.rootToken } }), harness(clock).ctx, FAST));
    await b.init();
    const csr = await createTestCsr({ ca: true, cn: 'meshca-ca.example.org' });
    const out = await b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 });
    const ca = new X509Certificate(out.chain[0]!);
    assert.match(ca.subject, /CN=meshca-ca\.example\.org/);
    assert.equal(ca.subjectAltName, `URI:spiffe://${TD}`, 'the trust domain URI is the only SAN');
  });

  it('intermediate mode: a signing CA that Vault truncated to an expired root is refused (FAILED_PRECONDITION), not installed', async () => {
    await fake.mountPki('pki_old', { caTtlSeconds: 600 });
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { pkiMount: 'pki_old', auth: { token: fake.rootToken } }), h.ctx, FAST));
    await b.init();
    clock.advance(700_000);
    const csr = await createTestCsr({ ca: true });
    await assert.rejects(b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 }), (e: unknown) => {
      assert.ok(e instanceof CaError);
      assert.equal(e.code, 'FAILED_PRECONDITION');
      assert.equal(e.retryable, false);
      assert.match(e.message, /^vault: pki_old\/root\/sign-intermediate returned a signing CA that expired at \d{4}-.*; rotate the root in Vault/);
      return true;
    });
  });

  it('leaf mode: signs each leaf at <pkiMount>/sign/<role>; chain = leaf + Vault intermediate, roots = Vault root', async () => {
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { mode: 'leaf', pkiMount: 'pki_int', role: 'meshca', auth: { token: fake.rootToken } }), h.ctx, FAST));
    await b.init();
    const csr = await createTestCsr({ uris: [ID] });
    const out = await b.signLeaf({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, spiffeId: ID, dnsNames: [], ttlSeconds: 3600 });
    assert.equal(out.chain.length, 2);
    const leaf = new X509Certificate(out.chain[0]!);
    assert.equal(leaf.subjectAltName, `URI:${ID}`);
    assert.equal(leaf.ca, false);
    assert.equal(new X509Certificate(out.chain[1]!).toString().trim(), fake.caPem('pki_int').trim());
    assert.equal(new X509Certificate(out.roots[0]!).toString().trim(), fake.rootPem('pki').trim());
    verifyChain(out.chain[0]!, out.chain.slice(1), out.roots);
    await opensslVerify(dir, out.chain[0]!, out.chain.slice(1), out.roots);
    const sent = fake.requests.find((r) => r.path === 'pki_int/sign/meshca')!;
    assert.equal((sent.body as Record<string, unknown>).common_name, undefined, 'no common_name: the role has require_cn=false');
    assert.equal((sent.body as Record<string, unknown>).ttl, '3600s');
  });

  it('issuer: signs at <pkiMount>/issuer/<ref>/sign-intermediate and .../sign/<role>, anchors from issuer/<ref>/json', async () => {
    await fake.mountPki('pki_multi', { issuerName: 'root-2026' });
    fake.setRole('pki_multi', 'meshca', { allowed_uri_sans: `spiffe://${TD}/*`, require_cn: false, key_type: 'any' });
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { pkiMount: 'pki_multi', issuer: 'root-2026', auth: { token: fake.rootToken } }), h.ctx, FAST));
    await b.init();
    const csr = await createTestCsr({ ca: true });
    const out = await b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 });
    assert.equal(new X509Certificate(out.roots[0]!).toString().trim(), fake.rootPem('pki_multi').trim());
    const lb = track(new VaultBackend(cfg(fake, { mode: 'leaf', pkiMount: 'pki_multi', issuer: 'root-2026', role: 'meshca', auth: { token: fake.rootToken } }), h.ctx, FAST));
    await lb.init();
    const lcsr = await createTestCsr({ uris: [ID] });
    await lb.signLeaf({ csrDer: lcsr.der, csrPem: lcsr.pem, publicKey: lcsr.publicKey, spiffeId: ID, dnsNames: [], ttlSeconds: 600 });
    const paths = fake.requests.map((r) => `${r.method} ${r.path}`);
    for (const p of ['GET pki_multi/issuer/root-2026/json', 'POST pki_multi/issuer/root-2026/sign-intermediate', 'POST pki_multi/issuer/root-2026/sign/meshca']) assert.ok(paths.includes(p), `${p} in ${paths.join(', ')}`);
    for (const p of ['pki_multi/root/sign-intermediate', 'pki_multi/sign/meshca', 'pki_multi/cert/ca_chain']) assert.ok(!fake.requests.some((r) => r.path === p), `${p} not used`);
    // An unknown issuer is Vault's 400, reported with Vault's text and the path, not retried.
    const wrong = track(new VaultBackend(cfg(fake, { pkiMount: 'pki_multi', issuer: 'nope', auth: { token: fake.rootToken } }), h.ctx, FAST));
    await assert.rejects(wrong.init(), /vault: pki_multi\/issuer\/nope\/json: unable to find PKI issuer for reference: nope/);
  });

  /** Leaf mode against a mount whose issuer ends in 30 min; sign() asks for a 1 h leaf. */
  async function shortIssuerLeafBackend(vault: typeof fake) {
    await vault.mountPki('pki_short', { parent: 'pki', caTtlSeconds: 1800 });
    vault.setRole('pki_short', 'meshca', { allowed_uri_sans: `spiffe://${TD}/*`, require_cn: false, key_type: 'any', max_ttl: '24h' });
    const caNotAfter = new Date(new X509Certificate(vault.caPem('pki_short')).validTo).getTime();
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(vault, { mode: 'leaf', pkiMount: 'pki_short', role: 'meshca', auth: { token: vault.rootToken } }), h.ctx, FAST));
    await b.init();
    const sign = async () => {
      const csr = await createTestCsr({ uris: [ID] });
      return b.signLeaf({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, spiffeId: ID, dnsNames: [], ttlSeconds: 3600 });
    };
    const signs = () => vault.requests.filter((r) => r.path === 'pki_short/sign/meshca');
    return { caNotAfter, h, sign, signs };
  }

  it('leaf mode near the end of the Vault issuer: the TTL is clamped to the issuer\'s notAfter (leaf_not_after_behavior=err), then a clear FAILED_PRECONDITION once it expired', async () => {
    const { caNotAfter, h, sign, signs } = await shortIssuerLeafBackend(fake);
    const first = new X509Certificate((await sign()).chain[0]!);
    assert.ok(new Date(first.validTo).getTime() <= caNotAfter, 'leaf ends no later than its issuer');
    assert.ok(new Date(first.validTo).getTime() >= caNotAfter - 10_000, 'and uses what the issuer has left (less a 5 s skew margin)');
    assert.deepEqual(signs().map((r) => r.status), [400, 200], 'Vault refused the full TTL once; meshca retried with the clamp');
    assert.match(h.logs(), /issuing CA expires before the requested leaf TTL/);
    // Now meshca knows the issuer's notAfter: the next request is clamped up front.
    clock.advance(600_000);
    await sign();
    assert.deepEqual(signs().map((r) => r.status), [400, 200, 200]);
    const ttl = parseInt(String((signs()[2]!.body as { ttl: string }).ttl), 10);
    assert.ok(ttl <= 1200 && ttl >= 1190, `clamped ttl ${ttl}`);
    // After the issuer expired: not the workload's fault, so not INVALID_ARGUMENT.
    clock.advance(1_300_000);
    await assert.rejects(sign(), (e: unknown) => {
      assert.ok(e instanceof CaError);
      assert.equal(e.code, 'FAILED_PRECONDITION');
      assert.match(e.message, /^vault: pki_short\/sign\/meshca: the issuing CA expired at \d{4}-/);
      assert.match(e.message, /rotate the issuer in Vault/);
      return true;
    });
  });

  it('leaf mode near the end of the Vault issuer with Vault\'s clock 30 s ahead of meshca\'s: the retry takes Vault\'s own times from its refusal', async () => {
    // NTP drift of 5-30 s is common (spec, pain point 7); the 5 s margin alone does not cover it.
    const skewed = await startFakeVault({ now: () => clock.nowMs() + 30_000 });
    try {
      const { caNotAfter, sign, signs } = await shortIssuerLeafBackend(skewed);
      const leaf = new X509Certificate((await sign()).chain[0]!);
      assert.ok(new Date(leaf.validTo).getTime() <= caNotAfter, 'leaf ends no later than its issuer');
      assert.deepEqual(signs().map((r) => r.status), [400, 200], 'one refusal, then a TTL that fits in Vault\'s time');
      // The skew learned from the refusal is used up front: no refusal for the next leaf.
      clock.advance(60_000);
      await sign();
      assert.deepEqual(signs().map((r) => r.status), [400, 200, 200]);
    } finally {
      await skewed.close();
    }
  });

  it('leaf mode: a role set up wrong (missing, key_type rsa, require_cn true) is FAILED_PRECONDITION naming the setting to change', async () => {
    fake.setRole('pki_int', 'rsa-only', { allowed_uri_sans: `spiffe://${TD}/*`, require_cn: false });
    fake.setRole('pki_int', 'needs-cn', { allowed_uri_sans: `spiffe://${TD}/*`, key_type: 'any' });
    const h = harness(clock);
    const csr = await createTestCsr({ uris: [ID] });
    const cases: Array<[string, RegExp]> = [
      ['nope', /^vault: role nope does not exist on pki_int \(Vault: unknown role: nope\); check authority\.vault\.role/],
      ['rsa-only', /^vault: role rsa-only refuses meshca's key \(Vault: role requires keys of type rsa\); set key_type=any on the role/],
      ['needs-cn', /^vault: role needs-cn requires a common name \(Vault: the common_name field is required.*\); set require_cn=false on the role \(SVIDs carry no CN\)/],
    ];
    for (const [role, re] of cases) {
      const b = track(new VaultBackend(cfg(fake, { mode: 'leaf', pkiMount: 'pki_int', role, auth: { token: fake.rootToken } }), h.ctx, FAST));
      await b.init();
      await assert.rejects(b.signLeaf({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, spiffeId: ID, dnsNames: [], ttlSeconds: 600 }), (e: unknown) => {
        assert.ok(e instanceof CaError);
        assert.equal(e.code, 'FAILED_PRECONDITION', role);
        assert.equal(e.retryable, false);
        assert.match(e.message, re);
        return true;
      });
    }
  });

  it('leaf mode: a role that forbids the SPIFFE ID gives a clear INVALID_ARGUMENT naming it, not retried', async () => {
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { mode: 'leaf', pkiMount: 'pki_int', role: 'meshca', auth: { token: fake.rootToken } }), h.ctx, FAST));
    await b.init();
    const bad = `spiffe://${TD}/admin/root`;
    const csr = await createTestCsr({ uris: [bad] });
    const before = fake.requests.length;
    await assert.rejects(b.signLeaf({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, spiffeId: bad, dnsNames: [], ttlSeconds: 3600 }), (e: unknown) => {
      assert.ok(e instanceof CaError);
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.equal(e.retryable, false);
      assert.match(e.message, /^vault: role meshca does not allow URI SAN spiffe:\/\/example\.org\/admin\/root/);
      assert.match(e.message, /not valid for this role/);
      return true;
    });
    assert.equal(fake.requests.length - before, 1, 'one request, no retries');
    assert.equal(b.health().ok, true, 'a refused ID does not mark Vault down');
  });

  it('sealed Vault: retried with backoff, then UNAVAILABLE; health degraded "vault: sealed", ok again after unseal', async () => {
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { token: fake.rootToken } }), h.ctx, FAST));
    await b.init();
    fake.seal();
    const csr = await createTestCsr({ ca: true });
    const before = fake.requests.length;
    await assert.rejects(b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 }), (e: unknown) => {
      assert.ok(e instanceof CaError);
      assert.equal(e.code, 'UNAVAILABLE');
      assert.equal(e.retryable, true);
      assert.match(e.message, /^vault: sealed/);
      return true;
    });
    assert.equal(fake.requests.length - before, 3, 'three attempts');
    assert.deepEqual(b.health(), { ok: false, reason: 'vault: sealed' });
    // Trust anchors keep being served from the last good copy while Vault is down.
    clock.advance(120_000);
    assert.equal((await b.trustAnchors()).length, 1);
    const metrics = await h.metrics.getSingleMetricAsString('meshca_vault_requests_total');
    assert.match(metrics, /path_class="sign-intermediate",status="503"} 3/);
    assert.match(await h.metrics.getSingleMetricAsString('meshca_vault_up'), /meshca_vault_up 0/);
    fake.unseal();
    await b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 });
    assert.deepEqual(b.health(), { ok: true });
  });

  it('meshca_vault_up is 1 after a successful start that makes no PKI call (a restart with a stored signing CA), and stays 1 on healthy probes', async () => {
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { token: fake.rootToken } }), h.ctx, { ...FAST, healthCheckIntervalMs: 5000 }));
    await b.init();
    assert.match(await h.metrics.getSingleMetricAsString('meshca_vault_up'), /^meshca_vault_up 1$/m);
    const renewals = await h.metrics.getSingleMetricAsString('meshca_vault_token_renewals_total');
    for (const result of ['ok', 'failed', 'relogin']) assert.match(renewals, new RegExp(`result="${result}"\\} 0$`, 'm'), `renewals ${result} listed at 0`);
    assert.doesNotMatch(await h.metrics.getSingleMetricAsString('meshca_vault_logins_total'), /\} 0$/m, 'token auth never logs in: no login series');
    const healthChecks = () => fake.requests.filter((r) => r.path === 'sys/health').length;
    const before = healthChecks();
    clock.advance(5000);
    await settle(() => healthChecks() > before, 'a sys/health probe');
    assert.match(await h.metrics.getSingleMetricAsString('meshca_vault_up'), /^meshca_vault_up 1$/m);
  });

  it('sealed Vault with nothing to sign: sys/health on the clock degrades health (readyz) with the reason; clears after unseal', async () => {
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { token: fake.rootToken } }), h.ctx, { ...FAST, healthCheckIntervalMs: 5000 }));
    await b.init();
    assert.deepEqual(b.health(), { ok: true });
    const healthChecks = () => fake.requests.filter((r) => r.path === 'sys/health').length;
    fake.seal();
    const before = healthChecks();
    clock.advance(5000);
    await settle(() => healthChecks() > before && !b.health().ok, 'a sys/health probe while sealed');
    assert.deepEqual(b.health(), { ok: false, reason: 'vault: sealed' });
    assert.match(await h.metrics.getSingleMetricAsString('meshca_vault_up'), /meshca_vault_up 0/);
    fake.unseal();
    clock.advance(5000);
    await settle(() => b.health().ok, 'a sys/health probe after unseal');
    assert.match(await h.metrics.getSingleMetricAsString('meshca_vault_up'), /meshca_vault_up 1/);
    // Unreachable Vault: the same, with the transport reason.
    await fake.close();
    clock.advance(5000);
    await settle(() => !b.health().ok, 'a failed sys/health probe');
    assert.match(b.health().reason ?? '', /^vault: unreachable/);
    fake = await startFakeVault({ now: () => clock.nowMs() }); // for afterEach
  });

  it('sys/health probe: uninitialised, DR secondary and a non-Vault answer degrade health; a performance standby does not', async () => {
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { token: fake.rootToken } }), h.ctx, { ...FAST, healthCheckIntervalMs: 0 }));
    await b.init();
    // Vault reports an uninitialised server as sealed too (initialized:false, sealed:true, 501): name the real cause.
    fake.setInitialized(false);
    await b.probeHealth();
    assert.deepEqual(b.health(), { ok: false, reason: 'vault: not initialized' });
    fake.setInitialized(true);
    await b.probeHealth();
    assert.deepEqual(b.health(), { ok: true });
    fake.setReplication('dr-secondary');
    await b.probeHealth();
    assert.equal(b.health().ok, false);
    assert.match(b.health().reason ?? '', /^vault: DR secondary/);
    fake.setReplication('perf-standby');
    await b.probeHealth();
    assert.deepEqual(b.health(), { ok: true }, 'a performance standby serves reads and forwards writes');
    fake.setReplication('none');
    const health = fake.requests.filter((r) => r.path === 'sys/health');
    assert.equal(health.length, 4);
    for (const r of health) {
      assert.equal(r.method, 'GET');
      assert.equal(new URLSearchParams(r.query).get('standbyok'), 'true', 'standby nodes forward: asked to answer 200');
      assert.equal(new URLSearchParams(r.query).get('perfstandbyok'), 'true', 'performance standbys too');
    }
    // A proxy in front of Vault answering 502 with an HTML page is not a healthy Vault, and must not clear a
    // degradation.
    const proxy = http.createServer((_req, res) => {
      res.writeHead(502, { 'Content-Type': 'text/html' });
      res.end('<html><body>502 Bad Gateway</body></html>');
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    try {
      const url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
      const pb = track(new VaultBackend(vaultConfigSchema.parse({ address: url, auth: { token: 'x' } }), harness(clock).ctx, { ...FAST, healthCheckIntervalMs: 0 }));
      await pb.init();
      assert.equal(pb.health().ok, false);
      await pb.probeHealth();
      assert.equal(pb.health().ok, false, 'still degraded after the proxy page');
      assert.match(pb.health().reason ?? '', /^vault: sys\/health/);
    } finally {
      proxy.closeAllConnections();
      await new Promise<void>((r) => proxy.close(() => r()));
    }
  });

  it('sends X-Vault-Request: true on every request (Vault Agent / Proxy listeners with require_request_header refuse others with 412)', async () => {
    const agent = await startFakeVault({ now: () => clock.nowMs(), requireRequestHeader: true });
    try {
      agent.setPolicy('meshca', await readFile(new URL('../../../examples/vault/policy-intermediate.hcl', import.meta.url), 'utf8'));
      const ar = agent.addAppRole('meshca', { policies: ['meshca'], tokenTtlSeconds: 100 });
      const h = harness(clock);
      const b = track(new VaultBackend(cfg(agent, { auth: { method: 'approle', roleId: ar.roleId, secretId: ar.secretId } }), h.ctx, { ...FAST, healthCheckIntervalMs: 0 }));
      await b.init();
      const csr = await createTestCsr({ ca: true });
      await b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 });
      clock.advance(81_000);
      await settle(() => agent.requests.some((r) => r.path === 'auth/token/renew-self'), 'a renewal');
      await b.probeHealth();
      const paths = new Set(agent.requests.map((r) => r.path));
      for (const p of ['auth/approle/login', 'pki/cert/ca_chain', 'pki/root/sign-intermediate', 'auth/token/renew-self', 'sys/health']) assert.ok(paths.has(p), `${p} was called`);
      for (const r of agent.requests) {
        assert.equal(r.headers['x-vault-request'], 'true', `${r.method} ${r.path} carries X-Vault-Request`);
        assert.notEqual(r.status, 412, `${r.path} accepted`);
        if (r.path === 'sys/health' || r.path.endsWith('/login')) assert.equal(r.headers['x-vault-token'], undefined, `${r.path} carries no token`);
      }
      const tb = track(new VaultBackend(cfg(agent, { auth: { token: agent.rootToken } }), h.ctx, { ...FAST, healthCheckIntervalMs: 0 }));
      await tb.init();
      assert.ok(agent.requests.some((r) => r.path === 'auth/token/lookup-self' && r.status === 200));
      assert.deepEqual(b.health(), { ok: true });
    } finally {
      await agent.close();
    }
  });

  it('transient 500s and 429s are retried and then succeed', async () => {
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { token: fake.rootToken } }), h.ctx, FAST));
    await b.init();
    fake.failNext({ count: 1, status: 500, pathPrefix: 'pki/root' });
    fake.failNext({ count: 1, status: 429, pathPrefix: 'pki/root' });
    const csr = await createTestCsr({ ca: true });
    await b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 });
    assert.equal(fake.requests.filter((r) => r.path === 'pki/root/sign-intermediate').length, 3);
  });

  it('a hung Vault times out and counts as unavailable', async () => {
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { token: fake.rootToken } }), h.ctx, { ...FAST, requestTimeoutMs: 150, retry: { attempts: 2, baseMs: 1, maxMs: 2 } }));
    await b.init();
    fake.hangNext(2, 'pki/root');
    const csr = await createTestCsr({ ca: true });
    await assert.rejects(b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 }), /vault: request timed out/);
    assert.equal(b.health().reason, 'vault: request timed out');
  });

  it('approle auth: logs in, renews at 0.8 of the lease on the clock, logs in again when max TTL caps renewal', async () => {
    fake.setPolicy('meshca', await readFile(new URL('../../../examples/vault/policy-intermediate.hcl', import.meta.url), 'utf8'));
    const ar = fake.addAppRole('meshca', { policies: ['meshca'], tokenTtlSeconds: 100, tokenMaxTtlSeconds: 250 });
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { method: 'approle', roleId: ar.roleId, secretId: ar.secretId } }), h.ctx, FAST));
    await b.init();
    const logins = () => fake.requests.filter((r) => r.path === 'auth/approle/login').length;
    const renewals = () => fake.requests.filter((r) => r.path === 'auth/token/renew-self').length;
    // A renewal is done (and the next timer armed) once the backend logged it, not when the fake received it.
    const renewedLogged = () => h.logs().split('\n').filter((l) => l.includes('vault token renewed')).length;
    assert.equal(logins(), 1);
    clock.advance(79_000);
    assert.equal(renewals(), 0);
    clock.advance(2_000);
    await settle(() => renewals() === 1 && renewedLogged() === 1, 'first renewal');
    // t=80 renewed for 100s; t=160 renewed but capped by the 250s max TTL (90s); t=232 renewed to 18s, which no
    // longer extends the lease meaningfully, so at t≈246 meshca logs in again instead of renewing.
    clock.advance(80_000);
    await settle(() => renewals() === 2 && renewedLogged() === 2, 'second renewal (capped)');
    clock.advance(72_000);
    await settle(() => renewals() === 3 && renewedLogged() === 3, 'third renewal');
    assert.equal(logins(), 1);
    clock.advance(15_000);
    await settle(() => logins() === 2, 're-login once renewal stopped extending the lease');
    assert.equal(renewals(), 3);
    const csr = await createTestCsr({ ca: true });
    await b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 });
    const m = await h.metrics.getSingleMetricAsString('meshca_vault_logins_total');
    assert.match(m, /method="approle",result="ok"} 2/);
    const r = await h.metrics.getSingleMetricAsString('meshca_vault_token_renewals_total');
    assert.match(r, /result="ok"} 3/);
    assert.match(r, /result="relogin"} 1/);
  });

  it('trust anchors are read without a token (cert/ca_chain is unauthenticated): served even while login fails', async () => {
    const ar = fake.addAppRole('meshca', { policies: [] });
    fake.failNext({ count: 1000, status: 500, pathPrefix: 'auth/approle/login' });
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { method: 'approle', roleId: ar.roleId, secretId: ar.secretId } }), h.ctx, FAST));
    await b.init();
    assert.equal(b.health().ok, false, 'login keeps failing');
    const reads = fake.requests.filter((r) => r.path === 'pki/cert/ca_chain');
    assert.ok(reads.length >= 1, 'init read the anchors anyway');
    for (const r of reads) {
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-vault-token'], undefined);
    }
    clock.advance(120_000);
    const roots = await b.trustAnchors();
    assert.deepEqual(roots.map((r) => new X509Certificate(r).toString().trim()), [fake.rootPem('pki').trim()]);
    assert.ok(fake.requests.filter((r) => r.path === 'pki/cert/ca_chain').length > reads.length, 'refreshed from Vault, not the cache');
  });

  it('start with Vault failing everything: login is retried, the anchors read after it is tried once (start-up is not held up twice)', async () => {
    const ar = fake.addAppRole('meshca', { policies: [] });
    fake.failNext({ count: 1000, status: 500 });
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { method: 'approle', roleId: ar.roleId, secretId: ar.secretId } }), h.ctx, FAST));
    await b.init();
    assert.equal(fake.requests.filter((r) => r.path === 'auth/approle/login').length, 3);
    assert.equal(fake.requests.filter((r) => r.path === 'pki/cert/ca_chain').length, 1);
    assert.match(h.logs(), /pki\/cert\/ca_chain; gave up after 1 attempt\)/);
    assert.equal(b.health().ok, false);
  });

  it('re-login after a 403 for an expired token, then the call is retried once', async () => {
    fake.setPolicy('meshca', 'path "pki/root/sign-intermediate" { capabilities = ["update"] }');
    const ar = fake.addAppRole('meshca', { policies: ['meshca'], tokenTtlSeconds: 3600 });
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { method: 'approle', roleId: ar.roleId, secretId: ar.secretId } }), h.ctx, FAST));
    await b.init();
    const csr = await createTestCsr({ ca: true });
    await b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 });
    const token = fake.requests.find((r) => r.path === 'pki/root/sign-intermediate')!.headers['x-vault-token'] as string;
    assert.ok(token);
    fake.expireToken(token);
    await b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 });
    const signs = fake.requests.filter((r) => r.path === 'pki/root/sign-intermediate');
    assert.deepEqual(signs.map((r) => r.status), [200, 403, 200]);
    assert.notEqual(signs[2]!.headers['x-vault-token'], token);
    assert.equal(fake.requests.filter((r) => r.path === 'auth/approle/login').length, 2);
  });

  it('a token policy without the path gives PERMISSION_DENIED (after one re-login attempt)', async () => {
    fake.setPolicy('leafonly', await readFile(new URL('../../../examples/vault/policy-leaf.hcl', import.meta.url), 'utf8'));
    const ar = fake.addAppRole('meshca', { policies: ['leafonly'] });
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { method: 'approle', roleId: ar.roleId, secretId: ar.secretId } }), h.ctx, FAST));
    await b.init();
    const csr = await createTestCsr({ ca: true });
    await assert.rejects(b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 }), (e: unknown) => {
      assert.ok(e instanceof CaError);
      assert.equal(e.code, 'PERMISSION_DENIED');
      assert.match(e.message, /^vault: permission denied for pki\/root\/sign-intermediate \(permission denied\): a freshly logged-in token was refused too, so its policy does not allow this path/);
      return true;
    });
    assert.equal(b.health().ok, false);
  });

  /** A backend whose static token Vault has just expired (no sys/health polling), and a CA CSR to try it with. */
  async function backendWithExpiredStaticToken() {
    const t = fake.createToken({ policies: ['root'], ttlSeconds: 600 });
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { token: t } }), h.ctx, { ...FAST, healthCheckIntervalMs: 0 }));
    await b.init();
    fake.expireToken(t);
    return { h, b, csr: await createTestCsr({ ca: true }) };
  }

  it('an expired static token: PERMISSION_DENIED naming both causes, health degraded until a call succeeds (sys/health does not clear it)', async () => {
    const { h, b, csr } = await backendWithExpiredStaticToken();
    await assert.rejects(b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 }), (e: unknown) => {
      assert.ok(e instanceof CaError);
      assert.equal(e.code, 'PERMISSION_DENIED');
      assert.match(e.message, /^vault: permission denied for pki\/root\/sign-intermediate \(permission denied\): the token expired or was revoked, or its policy does not allow this path/);
      return true;
    });
    assert.equal(b.health().ok, false);
    assert.match(b.health().reason ?? '', /^vault: permission denied for pki\/root\/sign-intermediate/);
    await b.probeHealth();
    assert.equal(b.health().ok, false, 'a healthy Vault does not make a refused token work');
  });

  it('a refused token stays reported after an outage in between: sys/health clears the outage, not the refusal', async () => {
    const { h, b, csr } = await backendWithExpiredStaticToken();
    await assert.rejects(b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 }), /permission denied/);
    // A Vault outage while the token is still refused: the (unauthenticated) anchors refresh fails for a while.
    fake.failNext({ count: 3, status: 503, pathPrefix: 'pki/cert/ca_chain' });
    clock.advance(120_000);
    await b.trustAnchors(); // the last known anchors
    assert.equal(b.health().ok, false);
    // Vault is back: sys/health clears the outage, but the token is still refused.
    await b.probeHealth();
    assert.equal(b.health().ok, false, 'a healthy Vault does not make a refused token work');
    assert.match(b.health().reason ?? '', /^vault: permission denied for pki\/root\/sign-intermediate/);
    assert.match(await h.metrics.getSingleMetricAsString('meshca_vault_up'), /meshca_vault_up 0/);
  });

  it('the example leaf policy allows exactly leaf signing', async () => {
    fake.setPolicy('leafonly', await readFile(new URL('../../../examples/vault/policy-leaf.hcl', import.meta.url), 'utf8'));
    const t = fake.createToken({ policies: ['leafonly'] });
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { mode: 'leaf', pkiMount: 'pki_int', role: 'meshca', auth: { token: t } }), h.ctx, FAST));
    await b.init();
    const csr = await createTestCsr({ uris: [ID] });
    await b.signLeaf({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, spiffeId: ID, dnsNames: [], ttlSeconds: 600 });
  });

  it('kubernetes auth on a custom mount, in a namespace: X-Vault-Namespace is sent on every call', async () => {
    await fake.mountPki('pki', { namespace: 'team-a' });
    fake.setPolicy('meshca', 'path "pki/root/sign-intermediate" { capabilities = ["update"] }', 'team-a');
    fake.addKubernetesRole('meshca', {
      namespace: 'team-a',
      mount: 'k8s-prod',
      jwts: { 'sa-jwt-value-123': { serviceAccountName: 'meshca', serviceAccountNamespace: 'mesh-system' } },
      boundServiceAccountNames: ['meshca'],
      boundServiceAccountNamespaces: ['mesh-system'],
      policies: ['meshca'],
    });
    const saFile = join(dir, 'sa-token');
    await writeFile(saFile, 'sa-jwt-value-123\n');
    const h = harness(clock);
    const b = track(
      new VaultBackend(cfg(fake, { namespace: 'team-a', auth: { method: 'kubernetes', role: 'meshca', mount: 'k8s-prod', serviceAccountTokenFile: saFile } }), h.ctx, FAST),
    );
    await b.init();
    const csr = await createTestCsr({ ca: true });
    const out = await b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 });
    assert.equal(new X509Certificate(out.roots[0]!).toString().trim(), fake.rootPem('pki', 'team-a').trim());
    assert.ok(fake.requests.length > 0);
    for (const r of fake.requests) assert.equal(r.headers['x-vault-namespace'], 'team-a', `${r.path} carries the namespace`);
    assert.ok(fake.requests.some((r) => r.path === 'auth/k8s-prod/login' && r.status === 200));
    assert.ok(!h.logs().includes('sa-jwt-value-123'));
  });

  it('token auth: a token refused by lookup-self is UNAUTHENTICATED naming both causes, with Vault\'s text', async () => {
    fake.setPolicy('meshca', await readFile(new URL('../../../examples/vault/policy-intermediate.hcl', import.meta.url), 'utf8'));
    const t = fake.createToken({ policies: ['meshca'], noDefaultPolicy: true });
    const b = track(new VaultBackend(cfg(fake, { auth: { token: t } }), harness(clock).ctx, FAST));
    await assert.rejects(b.init(), (e: unknown) => {
      assert.ok(e instanceof CaError);
      assert.equal(e.code, 'UNAUTHENTICATED');
      assert.match(e.message, /^vault: the configured token was refused by auth\/token\/lookup-self \(permission denied\)/);
      assert.match(e.message, /expired, revoked or unknown, or its policies lack Vault's "default" policy/);
      assert.ok(!e.message.includes(t));
      return true;
    });
  });

  it('token file: re-read when it changes', async () => {
    const t1 = fake.createToken({ policies: ['root'], ttlSeconds: 0 });
    const t2 = fake.createToken({ policies: ['root'], ttlSeconds: 0 });
    const file = join(dir, 'vault-token');
    await writeFile(file, `${t1}\n`);
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { auth: { tokenFile: file } }), h.ctx, FAST));
    await b.init();
    await writeFile(file, `${t2}\n`, { flag: 'w' });
    // mtime granularity: make sure the stamp differs even on coarse filesystems
    await writeFile(file, `${t2}\n\n`);
    clock.advance(2000);
    const csr = await createTestCsr({ ca: true });
    await b.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 3600 });
    const sign = fake.requests.find((r) => r.path === 'pki/root/sign-intermediate')!;
    assert.equal(sign.headers['x-vault-token'], t2);
  });

  it('rootFingerprint: a matching pin passes, a wrong pin is refused at init', async () => {
    const fp = new X509Certificate(fake.rootPem('pki')).fingerprint256;
    const ok = track(new VaultBackend(cfg(fake, { rootFingerprint: fp, auth: { token: fake.rootToken } }), harness(clock).ctx, FAST));
    await ok.init();
    const bad = track(new VaultBackend(cfg(fake, { rootFingerprint: 'ab'.repeat(32), auth: { token: fake.rootToken } }), harness(clock).ctx, FAST));
    await assert.rejects(bad.init(), /does not match authority\.vault\.rootFingerprint/);
  });

  it('rootFingerprint also applies to the anchors kept in the state store: with Vault down they are not served unpinned', async () => {
    const other = await startFakeVault({ now: () => clock.nowMs() });
    const otherRoot = new X509Certificate(other.rootPem('pki')).raw;
    await other.close();
    const pinned = new X509Certificate(fake.rootPem('pki'));
    const h = harness(clock);
    // Anchors stored by an earlier run against another Vault root (before the pin was set, or a since-replaced root).
    await h.ctx.store.write('vault-trust-anchors', Buffer.from(JSON.stringify({ roots: [otherRoot.toString('base64')] })));
    fake.seal();
    const b = track(new VaultBackend(cfg(fake, { rootFingerprint: pinned.fingerprint256, auth: { token: fake.rootToken } }), h.ctx, FAST));
    await b.init();
    assert.equal(b.health().ok, false, 'Vault is down');
    let roots: Buffer[] = [];
    try {
      roots = await b.trustAnchors();
    } catch (e) {
      assert.ok(e instanceof CaError);
    }
    assert.ok(!roots.some((r) => r.equals(otherRoot)), 'a root that does not match authority.vault.rootFingerprint is never served');
    // Once Vault answers, the pinned root is served.
    fake.unseal();
    clock.advance(120_000);
    assert.deepEqual((await b.trustAnchors()).map((r) => new X509Certificate(r).fingerprint256), [pinned.fingerprint256]);
  });

  it('TLS: CA file, server name and client certificate', async () => {
    const tlsFake = await startFakeVault({ tls: { serverName: 'vault.test', requireClientCert: true } });
    try {
      await writeFile(join(dir, 'ca.pem'), tlsFake.tls!.caPem);
      await writeFile(join(dir, 'client.pem'), tlsFake.tls!.clientCertPem!);
      await writeFile(join(dir, 'client-key.pem'), tlsFake.tls!.clientKeyPem!, { mode: 0o600 });
      const tls = { caFile: join(dir, 'ca.pem'), serverName: 'vault.test', certFile: join(dir, 'client.pem'), keyFile: join(dir, 'client-key.pem') };
      const b = track(new VaultBackend(cfg(tlsFake, { tls, auth: { token: tlsFake.rootToken } }), harness(clock).ctx, FAST));
      await b.init();
      assert.equal((await b.trustAnchors()).length, 1);
      const wrong = track(new VaultBackend(cfg(tlsFake, { tls: { ...tls, serverName: 'other.test' }, auth: { token: tlsFake.rootToken } }), harness(clock).ctx, FAST));
      await assert.rejects(wrong.init(), /vault: TLS verification/);
    } finally {
      await tlsFake.close();
    }
  });

  it('never puts the token or secret ID in logs or error messages', async () => {
    const secretToken = fake.createToken({ id: 'hvs.SUPERSECRETTOKENVALUE', policies: ['default'], ttlSeconds: 600 });
    const h = harness(clock);
    const b = track(new VaultBackend(cfg(fake, { mode: 'leaf', pkiMount: 'pki_int', role: 'meshca', auth: { token: secretToken } }), h.ctx, FAST));
    await b.init();
    const errors: string[] = [];
    const csr = await createTestCsr({ uris: [ID] });
    const attempt = async () => {
      try {
        await b.signLeaf({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, spiffeId: ID, dnsNames: [], ttlSeconds: 600 });
      } catch (e) {
        errors.push(`${(e as Error).message} ${JSON.stringify(e)} ${String((e as CaError).detail)}`);
      }
    };
    await attempt(); // 403: default policy cannot sign
    fake.seal();
    await attempt(); // 503
    fake.unseal();
    fake.expireToken(secretToken);
    await attempt(); // expired static token
    const ar = fake.addAppRole('x', { secretId: 'SECRETID-DO-NOT-LOG' });
    const b2 = track(new VaultBackend(cfg(fake, { auth: { method: 'approle', roleId: ar.roleId, secretId: 'SECRETID-WRONG-VALUE' } }), h.ctx, FAST));
    await b2.init().catch((e: Error) => errors.push(e.message));
    assert.equal(errors.length, 4);
    assert.match(errors[3]!, /vault: approle login at auth\/approle\/login failed: invalid role or secret ID/);
    const all = errors.join('\n') + h.logs();
    for (const s of ['SUPERSECRETTOKENVALUE', 'SECRETID-DO-NOT-LOG', 'SECRETID-WRONG-VALUE', fake.rootToken]) assert.ok(!all.includes(s), `${s} leaked`);
    assert.ok(h.logs().length > 0, 'logs were captured');
  });

  it('vaultProvider.create builds a backend from parsed config', async () => {
    const b = await vaultProvider.create(cfg(fake, { auth: { token: fake.rootToken } }), harness(clock).ctx);
    assert.equal(b.name, 'vault');
    assert.equal(b.mode, 'intermediate');
    await b.init();
    assert.equal((await b.trustAnchors()).length, 1);
    await b.close();
  });
});
