import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { LocalAuthority, type AuthorityOptions } from '../../../src/authority/authority.js';
import type { AuthorityEvent } from '../../../src/authority/types.js';
import { InternalBackend } from '../../../providers/internal/backend.js';
import { internalConfigSchema } from '../../../providers/internal/config.js';
import { LeafSignerPool } from '../../../src/x509/signer-pool.js';
import { ManualClock } from '../../fakes/clock.js';
import { MemoryStore } from '../../fakes/memory-store.js';
import { createSelfSignedRoot } from '../../../src/x509/ca-certs.js';
import { LeafSigner } from '../../../src/x509/leaf-signer.js';
import type { AuthorityBackend, BackendHealth, LeafRequest, UpstreamChain } from '../../../providers/types.js';
import { parseCsr } from '../../../src/x509/csr.js';
import { makeCsr } from '../../support/csr.js';

const H = 3600_000;
const log = pino({ level: 'silent' });

/** Waits (real time, bounded) until cond holds: timer-driven rotation runs asynchronously. */
async function eventually(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function setup(opts: { store?: MemoryStore; clock?: ManualClock; signingCaTtl?: string; rootTtl?: string; log?: typeof log } = {}) {
  const store = opts.store ?? new MemoryStore();
  const clock = opts.clock ?? new ManualClock();
  const metrics = new Registry();
  const cfg = internalConfigSchema.parse({ signingCaTtl: opts.signingCaTtl ?? '48h', rootTtl: opts.rootTtl ?? '8760h' });
  const backend = new InternalBackend(cfg, { trustDomain: 'td.test', clock, log: opts.log ?? log, store, metrics });
  const signer = new LeafSignerPool({ workers: 0 });
  const o: AuthorityOptions = {
    trustDomain: 'td.test',
    workload: { ttlSeconds: 3600, maxTtlSeconds: 86400, keyType: 'ec-p256', renewFraction: 0.5, backdateSeconds: 30 },
    signingCaTtlSeconds: cfg.signingCaTtl,
    caKeyType: 'ec-p256',
  };
  const authority = await LocalAuthority.create(o, { backend, store, clock, log: opts.log ?? log, metrics, signer });
  const events: AuthorityEvent[] = [];
  authority.onEvent((e) => events.push(e));
  return { authority, store, clock, metrics, events, close: async () => { await authority.close(); await signer.close(); } };
}

function verifies(chain: readonly Buffer[], roots: readonly Buffer[]): boolean {
  const certs = chain.map((d) => new X509Certificate(d));
  for (let i = 0; i + 1 < certs.length; i++) if (!certs[i]!.verify(certs[i + 1]!.publicKey)) return false;
  const top = certs[certs.length - 1]!;
  return roots.some((r) => {
    const x = new X509Certificate(r);
    return top.checkIssued(x) && top.verify(x.publicKey);
  });
}

test('first start creates one root and a signing CA; leaves chain to the bundle', async () => {
  const a = await setup();
  try {
    const b = a.authority.bundle();
    assert.equal(b.rootsDer.length, 1);
    assert.equal(b.sequence, 1);
    const svid = await a.authority.issue({ spiffeId: 'spiffe://td.test/w' });
    assert.equal(svid.chainDer.length, 2);
    assert.ok(verifies(svid.chainDer, b.rootsDer));
    assert.ok(svid.privateKeyPem?.startsWith('-----BEGIN PRIVATE KEY-----'));
    const now = a.clock.nowMs();
    assert.equal(svid.notAfter.getTime(), Math.floor((now + H) / 1000) * 1000);
    assert.equal(svid.notBefore.getTime(), now - 30_000);
    const renewIn = svid.renewAt.getTime() - now;
    assert.ok(renewIn >= 0.45 * H && renewIn <= 0.55 * H, `renewAt ${renewIn}`);
  } finally {
    await a.close();
  }
});

test('the signing CA rotates on the clock without changing the bundle, and old leaves stay valid', async () => {
  const a = await setup();
  try {
    a.authority.start();
    const gen1 = a.authority.activeSigningCa()!.generation;
    const old = await a.authority.issue({ spiffeId: 'spiffe://td.test/w' });
    const writes = a.store.writes;
    await a.clock.advanceAsync(24 * H + 1000); // prepare at 1/2
    await eventually(() => a.store.writes > writes, 'the next signing CA to be prepared');
    assert.equal(a.authority.activeSigningCa()!.generation, gen1, 'prepared, not yet active');
    await a.clock.advanceAsync(16 * H); // activate at 5/6
    await eventually(() => a.authority.activeSigningCa()!.generation > gen1, 'activation');
    const gen2 = a.authority.activeSigningCa()!.generation;
    assert.ok(gen2 > gen1);
    assert.deepEqual(a.events.map((e) => e.type), ['signing-ca']);
    assert.equal(a.authority.bundle().sequence, 1, 'same root: bundle unchanged');
    const fresh = await a.authority.issue({ spiffeId: 'spiffe://td.test/w' });
    assert.notEqual(fresh.chainDer[1]!.toString('hex'), old.chainDer[1]!.toString('hex'));
    assert.ok(verifies(fresh.chainDer, a.authority.bundle().rootsDer));
  } finally {
    await a.close();
  }
});

test('leaves never outlive their signing CA, and the alert gauge says so', async () => {
  const a = await setup({ signingCaTtl: '2h' });
  try {
    a.clock.advance(1.5 * H); // active CA has 30 min left (no start(): no rotation)
    const svid = await a.authority.issue({ spiffeId: 'spiffe://td.test/w', ttlSeconds: 3600 });
    assert.equal(svid.notAfter.getTime(), a.authority.activeSigningCa()!.notAfterMs);
    const text = await a.metrics.metrics();
    assert.match(text, /meshca_leaf_ttl_clamped_total 1/);
  } finally {
    await a.close();
  }
});

test('rotate with a new root publishes the bundle before leaves move, then asks for re-issuance', async () => {
  const a = await setup();
  try {
    const root1 = a.authority.bundle().rootsDer[0]!;
    await a.authority.rotate({ root: true });
    assert.deepEqual(a.events.map((e) => e.type), ['bundle', 'signing-ca', 'reissue-all']);
    const b = a.authority.bundle();
    assert.equal(b.rootsDer.length, 2, 'old root kept while its leaves live');
    assert.ok(b.rootsDer.some((r) => r.equals(root1)));
    const svid = await a.authority.issue({ spiffeId: 'spiffe://td.test/w' });
    assert.ok(verifies(svid.chainDer, [b.rootsDer.find((r) => !r.equals(root1))!]), 'signed under the new root');
  } finally {
    await a.close();
  }
});

test('two authorities on one store share the root and see each other\'s rotations', async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const a = await setup({ store, clock });
  const b = await setup({ store, clock });
  try {
    assert.ok(a.authority.bundle().rootsDer[0]!.equals(b.authority.bundle().rootsDer[0]!));
    assert.equal(a.authority.activeSigningCa()!.generation, b.authority.activeSigningCa()!.generation);
    await b.authority.rotate();
    await a.authority.reconcile();
    assert.equal(a.authority.activeSigningCa()!.generation, b.authority.activeSigningCa()!.generation);
    assert.deepEqual(a.events.map((e) => e.type), ['signing-ca', 'reissue-all']);
  } finally {
    await a.close();
    await b.close();
  }
});

/** meshca_ca_rotations_total of one authority's registry, by kind. */
async function rotationCounts(metrics: Registry): Promise<Record<string, number>> {
  const values = (await metrics.getSingleMetric('meshca_ca_rotations_total')!.get()).values;
  return Object.fromEntries(values.map((v) => [String(v.labels.kind), v.value]));
}

test('a rotation forced by another process is counted once by the authority that adopts it, not on restart, and not for its own scheduled steps', async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const server = await setup({ store, clock });
  const cli = await setup({ store, clock });
  let restarted: Awaited<ReturnType<typeof setup>> | undefined;
  try {
    server.authority.start();
    assert.deepEqual(await rotationCounts(server.metrics), { mint: 1, prepare: 0, activate: 0, forced: 0 }, 'every kind listed from the start');
    await cli.authority.rotate();
    await server.authority.reload();
    assert.equal((await rotationCounts(server.metrics)).forced, 1);
    await server.authority.reload();
    assert.equal((await rotationCounts(server.metrics)).forced, 1, 'adopting the same state again counts nothing');
    // Two rotations between two reads of the store are two.
    await cli.authority.rotate();
    await cli.authority.rotate({ root: true });
    await server.authority.reload();
    assert.equal((await rotationCounts(server.metrics)).forced, 3);

    const gen = server.authority.activeSigningCa()!.generation;
    await clock.advanceAsync(24 * H + 1000); // prepare at 1/2
    await clock.advanceAsync(16 * H); // activate at 5/6
    await eventually(() => server.authority.activeSigningCa()!.generation > gen, 'the scheduled activation');
    assert.deepEqual(await rotationCounts(server.metrics), { mint: 1, prepare: 1, activate: 1, forced: 3 }, 'scheduled steps are not forced');

    restarted = await setup({ store, clock });
    assert.equal((await rotationCounts(restarted.metrics)).forced, 0, 'a restart does not count the stored rotations again');
  } finally {
    await server.close();
    await cli.close();
    await restarted?.close();
  }
});

test('an HA replica without the rotation Lease follows a forced rotation without counting it; the Lease holder counts it', async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const leader = await setup({ store, clock });
  const follower = await setup({ store, clock });
  const cli = await setup({ store, clock });
  try {
    follower.authority.setRotationEnabled(false);
    await cli.authority.rotate();
    await leader.authority.reload();
    await follower.authority.reload();
    assert.equal(follower.authority.activeSigningCa()!.generation, cli.authority.activeSigningCa()!.generation, 'the follower adopted it');
    assert.equal((await rotationCounts(leader.metrics)).forced, 1);
    assert.equal((await rotationCounts(follower.metrics)).forced, 0);
    // Taking the Lease over later does not count what was adopted before.
    follower.authority.setRotationEnabled(true);
    await follower.authority.reload();
    assert.equal((await rotationCounts(follower.metrics)).forced, 0);
  } finally {
    await leader.close();
    await follower.close();
    await cli.close();
  }
});

test('invalid requests are refused with the reason', async () => {
  const a = await setup();
  try {
    await assert.rejects(a.authority.issue({ spiffeId: 'spiffe://other/w' }), /not this CA's trust domain/);
    await assert.rejects(a.authority.issue({ spiffeId: 'spiffe://td.test/w', ttlSeconds: 90000 }), /longer than workload.maxTtl/);
    await assert.rejects(a.authority.issue({ spiffeId: 'spiffe://td.test/w', dnsNames: ['bad name'] }), /invalid DNS name "bad name"/);
  } finally {
    await a.close();
  }
});

test('CA state that disappears from the store while running is an error, never a fresh start', async () => {
  const a = await setup();
  try {
    const gen = a.authority.activeSigningCa()!.generation;
    const root = a.authority.bundle().rootsDer[0]!;
    a.store.data.delete('authority');
    for (const op of [() => a.authority.reconcile(), () => a.authority.rotate()]) {
      await assert.rejects(op(), (e: Error & { code?: string }) => e.code === 'FAILED_PRECONDITION' && /authority\.json/.test(e.message), 'refused');
    }
    assert.equal(a.store.data.has('authority'), false, 'no new state written');
    assert.equal(a.authority.activeSigningCa()!.generation, gen, 'still serving the loaded signing CA');
    assert.ok(a.authority.bundle().rootsDer[0]!.equals(root));
  } finally {
    await a.close();
  }
});

test('the internal backend starts a root only in an empty store, not next to other meshca state', async () => {
  const store = new MemoryStore();
  store.data.set('federation-other-example', Buffer.from('{}'));
  await assert.rejects(setup({ store }), (e: Error & { code?: string }) => e.code === 'FAILED_PRECONDITION' && /internal-root\.json/.test(e.message));
  assert.equal(store.data.has('internal-root'), false, 'no root created');
  assert.equal(store.data.has('authority'), false);
});

test('a trust anchor the backend withdraws leaves the bundle; the root of the live signing CA stays', async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const metrics = new Registry();
  const cfg = internalConfigSchema.parse({ signingCaTtl: '48h', rootTtl: '8760h' });
  const internal = new InternalBackend(cfg, { trustDomain: 'td.test', clock, log, store, metrics });
  // The backend publishes its own root plus whatever the test puts in `extra` (another root of the operator's PKI).
  let published: 'all' | 'extra-only' = 'all';
  const extra = (await createSelfSignedRoot({ trustDomain: 'td.test', keyType: 'ec-p256', ttlSeconds: 86400 * 30, now: new Date(clock.nowMs()) })).certDer;
  let withExtra = true;
  const backend = new Proxy(internal, {
    get(target, prop) {
      if (prop === 'trustAnchors') {
        return async () => [...(published === 'all' ? await target.trustAnchors() : []), ...(withExtra ? [extra] : [])];
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  const signer = new LeafSignerPool({ workers: 0 });
  const authority = await LocalAuthority.create(
    {
      trustDomain: 'td.test',
      workload: { ttlSeconds: 3600, maxTtlSeconds: 86400, keyType: 'ec-p256', renewFraction: 0.5, backdateSeconds: 30 },
      signingCaTtlSeconds: cfg.signingCaTtl,
      caKeyType: 'ec-p256',
    },
    { backend, store, clock, log, metrics, signer },
  );
  try {
    const own = (await internal.trustAnchors())[0]!;
    const has = (d: Buffer) => authority.bundle().rootsDer.some((r) => r.equals(d));
    assert.ok(has(own) && has(extra), 'both published anchors are in the bundle');
    const seq = authority.bundle().sequence;
    withExtra = false;
    await authority.reconcile();
    assert.ok(!has(extra), 'withdrawn by the backend: no longer trusted');
    assert.ok(authority.bundle().sequence > seq, 'a new bundle version goes out');
    published = 'extra-only';
    withExtra = true;
    await authority.reconcile();
    assert.ok(has(own), 'the signing CA in use chains to it: kept while that CA lives');
    const svid = await authority.issue({ spiffeId: 'spiffe://td.test/w' });
    assert.ok(verifies(svid.chainDer, authority.bundle().rootsDer));
  } finally {
    await authority.close();
    await signer.close();
  }
});

/** Authority options of the leaf-mode tests (a backend signs every leaf). */
const LEAF_MODE_OPTIONS: AuthorityOptions = {
  trustDomain: 'td.test',
  workload: { ttlSeconds: 3600, maxTtlSeconds: 86400, keyType: 'ec-p256', renewFraction: 0.5, backdateSeconds: 30 },
  signingCaTtlSeconds: 48 * 3600,
  caKeyType: 'ec-p256',
};

/** Leaf mode: an upstream whose issuing root the test switches (an operator rotating the Vault issuer). */
class SwitchableLeafBackend implements AuthorityBackend {
  readonly name = 'fake-leaf';
  readonly mode = 'leaf' as const;
  private signer!: LeafSigner;
  root!: Buffer;
  /** Copy the CSR's DNS and IP SANs into the leaf, as Vault with use_csr_sans or cert-manager's CA issuer do. */
  copyCsrSans = false;
  /** Copy the CSR's subject CN into the leaf, as cert-manager's CA issuer does. */
  copyCsrSubject = false;
  constructor(private readonly clock: ManualClock) {}
  private rootKey!: KeyObject;
  use(root: { certDer: Buffer; privateKey: KeyObject }): void {
    const x = new X509Certificate(root.certDer);
    this.root = root.certDer;
    this.rootKey = root.privateKey;
    this.signer = new LeafSigner({ certDer: root.certDer, chainDer: [], key: root.privateKey, notBefore: new Date(x.validFrom), notAfter: new Date(x.validTo) });
  }
  async init(): Promise<void> {}
  async signLeaf(req: LeafRequest): Promise<UpstreamChain> {
    if (this.copyCsrSubject) return { chain: [this.opensslSign(req)], roots: [this.root] };
    const now = this.clock.nowMs();
    const csr = this.copyCsrSans ? parseCsr(req.csrDer) : undefined;
    const leaf = this.signer.sign({
      spiffeId: req.spiffeId,
      dnsNames: csr?.dnsNames ?? [],
      ...(csr ? { ipAddresses: csr.ipAddresses } : {}),
      publicKey: req.publicKey,
      notBefore: new Date(now - 30_000),
      notAfter: new Date(now + req.ttlSeconds * 1000),
    });
    return { chain: [leaf], roots: [this.root] };
  }
  async trustAnchors(): Promise<Buffer[]> {
    return [this.root];
  }
  health(): BackendHealth {
    return { ok: true };
  }
  async close(): Promise<void> {}

  /** Signs the CSR as `openssl x509 -req` does: the CSR's subject becomes the leaf's (wall-clock validity). */
  private opensslSign(req: LeafRequest): Buffer {
    const dir = mkdtempSync(join(tmpdir(), 'meshca-leaf-'));
    try {
      writeFileSync(join(dir, 'ca.pem'), new X509Certificate(this.root).toString());
      writeFileSync(join(dir, 'ca.key'), this.rootKey.export({ type: 'pkcs8', format: 'pem' }));
      writeFileSync(join(dir, 'req.pem'), req.csrPem);
      writeFileSync(
        join(dir, 'ext.cnf'),
        `basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,URI:${req.spiffeId}\nauthorityKeyIdentifier=keyid\n`,
      );
      const pem = execFileSync('openssl', ['x509', '-req', '-in', 'req.pem', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', '0x5151', '-days', '1', '-extfile', 'ext.cnf'], { cwd: dir });
      return Buffer.from(new X509Certificate(pem).raw);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

test('leaf mode: an anchor withdrawn upstream stays while leaves signed under it live, across replicas and restarts', async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const backend = new SwitchableLeafBackend(clock);
  const r1 = await createSelfSignedRoot({ trustDomain: 'td.test', keyType: 'ec-p256', ttlSeconds: 30 * 86400, now: new Date(clock.nowMs()) });
  const r2 = await createSelfSignedRoot({ trustDomain: 'td.test', keyType: 'ec-p256', ttlSeconds: 30 * 86400, now: new Date(clock.nowMs()) });
  backend.use(r1);
  const o = LEAF_MODE_OPTIONS;
  const signer = new LeafSignerPool({ workers: 0 });
  const replica = () => LocalAuthority.create(o, { backend, store, clock, log, metrics: new Registry(), signer });
  const a = await replica();
  const b = await replica();
  let a2: LocalAuthority | undefined;
  try {
    // Replica a signs under r1 for 20 h (b is idle meanwhile); then the operator switches the issuer to r2.
    clock.advance(20 * H);
    const leaf = await a.issue({ spiffeId: 'spiffe://td.test/w', ttlSeconds: 86400 });
    assert.ok(verifies(leaf.chainDer, a.bundle().rootsDer));
    backend.use(r2);
    // 5 h later replica b signs its first leaf under r2 (a new anchor: b recomputes and stores the bundle).
    clock.advance(5 * H);
    await b.issue({ spiffeId: 'spiffe://td.test/x' });
    assert.ok(verifies(leaf.chainDer, b.bundle().rootsDer), 'replica b must keep r1: a leaf signed under it 5 h ago lives 19 h more');
    await a.reload();
    assert.ok(verifies(leaf.chainDer, a.bundle().rootsDer), 'replica a adopted a bundle that still holds r1');
    // Replica a restarts: the stored bundle's anchors are not dropped because this process never saw them published.
    await a.close();
    a2 = await replica();
    assert.ok(verifies(leaf.chainDer, a2.bundle().rootsDer), 'after a restart r1 is still trusted');
    // Once no leaf signed under r1 can be alive (maxTtl after r1 was found withdrawn), it leaves.
    clock.advance(24 * H + 1000);
    await a2.reconcile();
    assert.ok(!a2.bundle().rootsDer.some((d) => d.equals(r1.certDer)), 'r1 leaves once no leaf under it can be alive');
    assert.ok(a2.bundle().rootsDer.some((d) => d.equals(r2.certDer)));
  } finally {
    await a.close();
    await b.close();
    await a2?.close();
    await signer.close();
  }
});

test('a store with CA state but no authority.json starts new signing-CA state under the same root, with a warning', async () => {
  const lines: Record<string, unknown>[] = [];
  const capture = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const first = await setup({ log: capture });
  const rootBefore = first.authority.bundle().rootsDer[0]!;
  await first.close();
  assert.equal(lines.filter((l) => l.level === 40).length, 0, 'a first start warns about nothing');
  const store = first.store;
  store.data.delete('authority');
  const second = await setup({ store, log: capture });
  try {
    assert.ok(second.authority.bundle().rootsDer[0]!.equals(rootBefore), 'the same root');
    const warned = lines.filter((l) => l.level === 40);
    assert.equal(warned.length, 1);
    assert.match(String(warned[0]!.msg), /holds CA state but no authority\.json: starting new signing-CA state under the existing trust anchors/);
    assert.deepEqual(warned[0]!.found, ['internal-root']);
  } finally {
    await second.close();
  }
});

test('leaf mode: names a backend copied from the caller CSR beyond what was authorised are refused, not issued', async () => {
  const clock = new ManualClock();
  const backend = new SwitchableLeafBackend(clock);
  backend.use(await createSelfSignedRoot({ trustDomain: 'td.test', keyType: 'ec-p256', ttlSeconds: 30 * 86400, now: new Date(clock.nowMs()) }));
  backend.copyCsrSans = true;
  const o = LEAF_MODE_OPTIONS;
  const signer = new LeafSignerPool({ workers: 0 });
  const a = await LocalAuthority.create(o, { backend, store: new MemoryStore(), clock, log, metrics: new Registry(), signer });
  const issueFor = async (csr: { der: Buffer }, dnsNames: string[] = []) => {
    const parsed = parseCsr(csr.der);
    return a.issue({ spiffeId: 'spiffe://td.test/w', dnsNames, publicKey: parsed.publicKey, csrDer: parsed.der });
  };
  try {
    const sneaky = await makeCsr({ uris: ['spiffe://td.test/w'], dnsNames: ['payments.default.svc'], ipAddresses: ['10.96.0.1'] });
    await assert.rejects(issueFor(sneaky), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'FAILED_PRECONDITION');
      assert.match(e.message, /fake-leaf: the signed leaf for spiffe:\/\/td\.test\/w carries names meshca did not authorise \(DNS:payments\.default\.svc, IP:10\.96\.0\.1\)/);
      return true;
    });
    backend.copyCsrSubject = true;
    await assert.rejects(issueFor(await makeCsr({ uris: ['spiffe://td.test/w'], cn: 'payments.default.svc' })), /carries names meshca did not authorise \(subject CN=payments\.default\.svc\)/);
    backend.copyCsrSubject = false;
    const allowed = await makeCsr({ uris: ['spiffe://td.test/w'], dnsNames: ['w.td.svc'] });
    const svid = await issueFor(allowed, ['w.td.svc']);
    assert.match(new X509Certificate(svid.chainDer[0]!).subjectAltName!, /DNS:w\.td\.svc/);
    await issueFor(await makeCsr({ uris: ['spiffe://td.test/w'] }));
  } finally {
    await a.close();
    await signer.close();
  }
});
