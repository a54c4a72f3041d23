import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash } from 'node:crypto';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { startFakeKubeApiServer, type FakeKube } from '../fakes/kube-apiserver.js';
import { ManualClock } from '../fakes/clock.js';
import { connectKube } from '../../src/kube/client.js';
import { KubeSecretStore } from '../../src/store/kube-secret-store.js';
import { LeaseElector, createHaCoordinator, type HaCoordinator } from '../../src/kube/lease.js';
import { LocalAuthority, type AuthorityOptions } from '../../src/authority/authority.js';
import { InternalBackend } from '../../providers/internal/backend.js';
import { internalConfigSchema } from '../../providers/internal/config.js';
import { LeafSignerPool } from '../../src/x509/signer-pool.js';

const log = pino({ level: 'silent' });
const NS = 'meshca';
const LEASE_S = 15;
let kube: FakeKube;

before(async () => {
  kube = await startFakeKubeApiServer({
    users: {
      // Exactly the RBAC the README asks for (list/watch by name: the watch selects metadata.name=<secret>).
      meshca: {
        rules: [
          { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'update', 'list', 'watch'], resourceNames: ['ha-state', 'ha-state-2'], namespaces: [NS] },
          { apiGroups: [''], resources: ['secrets'], verbs: ['create'], namespaces: [NS] },
          { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'update'], resourceNames: ['ha-rotation', 'ha-rotation-2', 'release-test'], namespaces: [NS] },
          { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'], namespaces: [NS] },
        ],
      },
    },
  });
});

after(async () => {
  await kube.close();
});

async function eventually(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const fp = (d: Buffer): string => createHash('sha256').update(d).digest('hex');

interface Replica {
  id: string;
  authority: LocalAuthority;
  store: KubeSecretStore;
  elector: LeaseElector;
  metrics: Registry;
  ha?: HaCoordinator;
  close(): Promise<void>;
}

async function replica(id: string, clock: ManualClock, secret: string, lease: string): Promise<Replica> {
  const k = await connectKube({ component: 'test', kubeConfig: kube.kubeConfig('meshca') });
  const store = await KubeSecretStore.open({ kube: k, namespace: NS, name: secret, log });
  const metrics = new Registry();
  const cfg = internalConfigSchema.parse({ signingCaTtl: '60s', rootTtl: '8760h' });
  const backend = new InternalBackend(cfg, { trustDomain: 'td.test', clock, log, store, metrics });
  const signer = new LeafSignerPool({ workers: 0 });
  const o: AuthorityOptions = {
    trustDomain: 'td.test',
    workload: { ttlSeconds: 20, maxTtlSeconds: 3600, keyType: 'ec-p256', renewFraction: 0.5, backdateSeconds: 5 },
    signingCaTtlSeconds: cfg.signingCaTtl,
    caKeyType: 'ec-p256',
  };
  const authority = await LocalAuthority.create(o, { backend, store, clock, log, metrics, signer });
  const elector = new LeaseElector({ kube: k, namespace: NS, name: lease, identity: id, leaseDurationSeconds: LEASE_S, clock, log, metrics });
  const r: Replica = {
    id,
    authority,
    store,
    elector,
    metrics,
    async close() {
      await r.ha?.stop({ release: false });
      await authority.close();
      await store.close();
      await signer.close();
    },
  };
  return r;
}

async function rotations(r: Replica): Promise<number> {
  const m = (await r.metrics.getSingleMetric('meshca_ca_rotations_total')!.get()).values;
  return m.filter((v) => v.labels.kind !== 'mint').reduce((n, v) => n + v.value, 0);
}

/** Moves the shared clock in 1 s steps, letting each election attempt finish (real HTTP) before the next step. */
async function step(clock: ManualClock, seconds: number, electors: LeaseElector[]): Promise<void> {
  for (let i = 0; i < seconds; i++) {
    clock.advance(1000);
    await Promise.all(electors.map((e) => e.whenIdle()));
    await new Promise((r) => setTimeout(r, 3));
  }
}

test('two replicas share one root; the Lease holder rotates, the other follows by watch, and takes over when the holder stops', async () => {
  const clock = new ManualClock(new Date('2026-05-01T00:00:00Z'));
  const a = await replica('replica-a', clock, 'ha-state', 'ha-rotation');
  const b = await replica('replica-b', clock, 'ha-state', 'ha-rotation');
  try {
    // One root and one signing CA, made by whoever started first.
    assert.deepEqual(b.authority.bundle().rootsDer.map(fp), a.authority.bundle().rootsDer.map(fp));
    assert.equal(a.authority.bundle().rootsDer.length, 1);
    const gen1 = a.authority.activeSigningCa()!.generation;
    assert.equal(b.authority.activeSigningCa()!.generation, gen1);

    a.ha = createHaCoordinator({ store: a.store, elector: a.elector, authority: a.authority, log });
    await eventually(() => a.elector.isLeader(), 'replica A to acquire the Lease');
    b.ha = createHaCoordinator({ store: b.store, elector: b.elector, authority: b.authority, log });
    await b.elector.whenIdle();
    await eventually(() => b.elector.holder() === 'replica-a', 'replica B to see A as the holder');
    assert.equal(b.elector.isLeader(), false);
    const lease0 = await kube.api.get('leases', 'ha-rotation', { namespace: NS });
    assert.equal(lease0.spec.holderIdentity, 'replica-a');
    assert.equal(lease0.spec.leaseDurationSeconds, LEASE_S);
    assert.match(lease0.spec.renewTime, /\.\d{6}Z$/, 'MicroTime with six digits');

    // Both replicas sign, leader or not, under the shared root.
    for (const r of [a, b]) {
      const svid = await r.authority.issue({ spiffeId: 'spiffe://td.test/ns/shop/sa/cart' });
      const top = new X509Certificate(svid.chainDer.at(-1)!);
      assert.ok(top.verify(new X509Certificate(r.authority.bundle().rootsDer[0]!).publicKey));
    }

    // Signing CA 60 s: prepared at 30 s, activated at 50 s, by A only; B sees each change through its watch.
    await step(clock, 52, [a.elector, b.elector]);
    await eventually(() => a.authority.activeSigningCa()!.generation > gen1, 'A to activate the next signing CA');
    const gen2 = a.authority.activeSigningCa()!.generation;
    await eventually(() => b.authority.activeSigningCa()!.generation === gen2, 'B to adopt the rotation through the watch', 3000);
    assert.ok(a.elector.isLeader());
    assert.ok((await rotations(a)) >= 2, 'A prepared and activated');
    assert.equal(await rotations(b), 0, 'B did no rotation work');
    assert.deepEqual(b.authority.bundle().rootsDer.map(fp), a.authority.bundle().rootsDer.map(fp));

    // A stops without releasing (crash): B takes over only after the Lease expires.
    await a.close();
    const takeoverStart = clock.nowMs();
    await step(clock, 10, [b.elector]);
    assert.equal(b.elector.isLeader(), false, 'no takeover before the Lease expired');
    await step(clock, 10, [b.elector]);
    await eventually(() => b.elector.isLeader(), 'B to take over the Lease');
    assert.ok(clock.nowMs() - takeoverStart >= LEASE_S * 1000);
    const lease1 = await kube.api.get('leases', 'ha-rotation', { namespace: NS });
    assert.equal(lease1.spec.holderIdentity, 'replica-b');
    assert.equal(lease1.spec.leaseTransitions, 1);

    // Now B rotates: gen2's successor is prepared and activated on schedule.
    await step(clock, 40, [b.elector]);
    await eventually(() => b.authority.activeSigningCa()!.generation > gen2, 'B to rotate after taking over');
    assert.ok((await rotations(b)) >= 1);
    const svid = await b.authority.issue({ spiffeId: 'spiffe://td.test/ns/shop/sa/cart' });
    assert.equal(svid.caGeneration, b.authority.activeSigningCa()!.generation);
    assert.deepEqual(b.authority.bundle().rootsDer.map(fp), [fp(a.authority.bundle().rootsDer[0]!)], 'still the one shared root');
  } finally {
    await a.close().catch(() => undefined);
    await b.close();
  }
});

test('a leader that stops gracefully releases the Lease: the other replica takes over without waiting for expiry', async () => {
  const clock = new ManualClock(new Date('2026-06-01T00:00:00Z'));
  const k = await connectKube({ component: 'test', kubeConfig: kube.kubeConfig('meshca') });
  const mk = (id: string) => new LeaseElector({ kube: k, namespace: NS, name: 'release-test', identity: id, leaseDurationSeconds: LEASE_S, clock, log });
  const x = mk('x');
  const y = mk('y');
  const changes: string[] = [];
  x.onChange((l) => changes.push(`x:${l}`));
  y.onChange((l) => changes.push(`y:${l}`));
  x.start();
  await eventually(() => x.isLeader(), 'x to lead');
  y.start();
  await y.whenIdle();
  await eventually(() => y.holder() === 'x', 'y to see x');
  await x.stop();
  assert.equal((await kube.api.get('leases', 'release-test', { namespace: NS })).spec.holderIdentity, '');
  await step(clock, Math.ceil(LEASE_S / 3 * 1.2) + 1, [y]);
  await eventually(() => y.isLeader(), 'y to take the released Lease');
  assert.deepEqual(changes, ['x:true', 'x:false', 'y:true']);
  await y.stop();
});

test('a leader that cannot renew steps down before the Lease could be taken over', async () => {
  const clock = new ManualClock(new Date('2026-07-01T00:00:00Z'));
  const k = await connectKube({ component: 'test', kubeConfig: kube.kubeConfig('meshca') });
  const e = new LeaseElector({ kube: k, namespace: NS, name: 'ha-rotation-2', identity: 'solo', leaseDurationSeconds: LEASE_S, clock, log });
  e.start();
  await eventually(() => e.isLeader(), 'solo to lead');
  kube.failNext(2, { code: 503, match: (r) => r.resource === 'leases' });
  await step(clock, 5, [e]);
  assert.ok(e.isLeader(), 'one failed renewal is tolerated');
  await step(clock, 6, [e]);
  assert.equal(e.isLeader(), false, 'stepped down after the renew deadline (2/3 of the duration)');
  await e.stop({ release: false });
});

test('two candidates start together on a new Lease: exactly one leads, the other lost by 409 (AlreadyExists or Conflict)', async () => {
  const clock = new ManualClock(new Date('2026-08-01T00:00:00Z'));
  const k = await connectKube({ component: 'test', kubeConfig: kube.kubeConfig('meshca') });
  const mk = (id: string) => new LeaseElector({ kube: k, namespace: NS, name: 'ha-rotation', identity: id, leaseDurationSeconds: LEASE_S, clock, log });
  await kube.api.delete('leases', 'ha-rotation', { namespace: NS }).catch(() => undefined);
  const before = kube.requests.length;
  const p = mk('p');
  const q = mk('q');
  p.start();
  q.start();
  await Promise.all([p.whenIdle(), q.whenIdle()]);
  await step(clock, 3, [p, q]);
  assert.equal([p, q].filter((e) => e.isLeader()).length, 1, 'exactly one leader');
  const leader = p.isLeader() ? 'p' : 'q';
  const lease = await kube.api.get('leases', 'ha-rotation', { namespace: NS });
  assert.equal(lease.spec.holderIdentity, leader);
  const writes = kube.requests.slice(before).filter((r) => r.resource === 'leases' && (r.verb === 'create' || r.verb === 'update'));
  assert.ok(writes.some((r) => r.status === 409), 'the loser was refused with 409');
  for (const w of writes.filter((r) => r.verb === 'update')) assert.match((w.body as any).metadata.resourceVersion, /^\d+$/, 'every update is conditional');
  await p.stop({ release: false });
  await q.stop({ release: false });
});

test('a Lease held by another replica is judged by our clock: an old renewTime (clock skew) does not let us take it early', async () => {
  const clock = new ManualClock(new Date('2026-09-01T00:00:00Z'));
  await kube.api.create(
    'leases',
    {
      metadata: { name: 'release-test-skew' },
      spec: { holderIdentity: 'other', leaseDurationSeconds: LEASE_S, acquireTime: '2020-01-01T00:00:00.000000Z', renewTime: '2020-01-01T00:00:00.000000Z', leaseTransitions: 4 },
    },
    { namespace: NS },
  );
  kube.addUser('skew', {
    rules: [
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'update'], resourceNames: ['release-test-skew'], namespaces: [NS] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'], namespaces: [NS] },
    ],
  });
  const k = await connectKube({ component: 'test', kubeConfig: kube.kubeConfig('skew') });
  const e = new LeaseElector({ kube: k, namespace: NS, name: 'release-test-skew', identity: 'me', leaseDurationSeconds: LEASE_S, clock, log });
  e.start();
  await e.whenIdle();
  assert.equal(e.isLeader(), false, 'not taken at first sight, however old renewTime looks');
  assert.equal(e.holder(), 'other');
  await step(clock, LEASE_S - 2, [e]);
  assert.equal(e.isLeader(), false, 'not taken before leaseDurationSeconds on our clock');
  await step(clock, 10, [e]);
  await eventually(() => e.isLeader(), 'takeover after the Lease expired on our clock');
  const lease = await kube.api.get('leases', 'release-test-skew', { namespace: NS });
  assert.equal(lease.spec.holderIdentity, 'me');
  assert.equal(lease.spec.leaseTransitions, 5, 'a takeover counts a transition');
  assert.match(lease.spec.acquireTime, /^2026-09-01T00:00:\d{2}\.\d{6}Z$/, 'acquireTime is the takeover time, as a MicroTime');
  const acquired = Date.parse(lease.spec.acquireTime);
  assert.ok(acquired - Date.parse('2026-09-01T00:00:00Z') >= LEASE_S * 1000, 'taken no earlier than leaseDurationSeconds after we first saw the record');
  assert.ok(acquired <= Date.parse(lease.spec.renewTime));
  await e.stop({ release: false });
});
