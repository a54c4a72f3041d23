import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { SvidCache, type SvidSubscription } from '../../../src/cache/svid-cache.js';
import type { Authority, AuthorityEvent, IssuedSvid, IssueRequest, TrustBundle } from '../../../src/authority/types.js';
import { LocalAuthority, type AuthorityOptions } from '../../../src/authority/authority.js';
import { InternalBackend } from '../../../providers/internal/backend.js';
import { internalConfigSchema } from '../../../providers/internal/config.js';
import { LeafSignerPool } from '../../../src/x509/signer-pool.js';
import { CaError } from '../../../src/util/errors.js';
import { ManualClock } from '../../fakes/clock.js';
import { FakeAuthority } from '../../fakes/authority.js';
import { MemoryStore } from '../../fakes/memory-store.js';
import { prng } from '../../support/prng.js';

/**
 * Property-style run of the SDS SVID cache on a ManualClock: random subscribe/unsubscribe over several
 * (caller, node, identity) keys, time steps (every timer fires at its due time and its issuance settles before time
 * moves on), bundle / signing CA rotations (with and without dropping the old root), rotate-all, backend outages and
 * single transient failures. After every step the cache's contract is checked.
 */

const log = pino({ level: 'silent' });
const RETRY_MAX = 30_000;
const TTL_S = 600;

/** Wraps FakeAuthority (real certificates) with an outage switch, one-shot failures and bookkeeping. */
class FlakyAuthority implements Authority {
  readonly trustDomain: string;
  down = false;
  failOnce = 0;
  lastFailAt = -Infinity;
  readonly inflight = new Set<Promise<unknown>>();
  /** Issuance order (call time) of each served serial. */
  readonly issuedAt = new Map<string, number>();
  seq = 0;
  constructor(
    readonly inner: FakeAuthority,
    private readonly clock: ManualClock,
  ) {
    this.trustDomain = inner.trustDomain;
  }
  issue(req: IssueRequest): Promise<IssuedSvid> {
    const at = ++this.seq;
    let p: Promise<IssuedSvid>;
    if (this.down || this.failOnce > 0) {
      if (!this.down) this.failOnce--;
      this.lastFailAt = this.clock.nowMs();
      p = Promise.reject(new CaError('UNAVAILABLE', 'flaky: backend down'));
    } else {
      p = this.inner.issue(req).then((s) => {
        this.issuedAt.set(s.serialHex, at);
        return s;
      });
    }
    this.inflight.add(p);
    const done = () => this.inflight.delete(p);
    p.then(done, done);
    return p;
  }
  bundle(): TrustBundle {
    return this.inner.bundle();
  }
  onEvent(l: (ev: AuthorityEvent) => void): () => void {
    return this.inner.onEvent(l);
  }
  rotate(): Promise<void> {
    return this.inner.rotate();
  }
  health() {
    return { ready: true };
  }
}

interface Sub {
  readonly key: string;
  readonly id: number;
  readonly sub: SvidSubscription;
  seen: IssuedSvid | undefined;
  closed: boolean;
  failed: boolean;
}

interface CacheEntry {
  svid: IssuedSvid | undefined;
  inflight: Promise<IssuedSvid> | undefined;
  listeners: Set<unknown>;
  timer: unknown;
}

const CALLERS = ['spiffe://example.org/c1', 'spiffe://example.org/c2'];
const NODES = ['n1', 'n2'];
const IDS = ['spiffe://example.org/w/a', 'spiffe://example.org/w/b'];
const KEYS = CALLERS.flatMap((c) => NODES.flatMap((n) => IDS.map((i) => ({ caller: c, node: n, id: i, key: `${c}\u0000${n}\u0000${i}` }))));

function timersOf(clock: ManualClock): Array<{ dueMs: number }> {
  return (clock as unknown as { timers: Array<{ dueMs: number }> }).timers;
}
function entriesOf(cache: SvidCache): Map<string, CacheEntry> {
  return (cache as unknown as { entries: Map<string, CacheEntry> }).entries;
}

const tick = () => new Promise<void>((r) => setImmediate(r));

async function runScenario(seed: number, steps: number): Promise<Record<string, number>> {
  const rnd = prng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
  const clock = new ManualClock(Date.UTC(2026, 0, 1) + 123);
  const fake = await FakeAuthority.create({ clock, ttlSeconds: TTL_S, renewFraction: 0.5 });
  const auth = new FlakyAuthority(fake, clock);
  const cache = new SvidCache({ authority: auth, clock, log, retryMinMs: 1000, retryMaxMs: RETRY_MAX });
  auth.onEvent((ev) => cache.handleAuthorityEvent(ev));
  const subs: Sub[] = [];
  let nextId = 0;
  /** Keys owed a re-issue (rotate-all / CA left the bundle): early pushes are allowed for them. */
  const owed = new Set<string>();
  const ops: Record<string, number> = {};
  const violations: string[] = [];

  const settle = async (): Promise<void> => {
    for (let i = 0; i < 50; i++) {
      for (let j = 0; j < 3; j++) await tick();
      if (auth.inflight.size === 0) {
        clock.advance(0);
        await tick();
        await tick();
        if (auth.inflight.size === 0) return;
      }
      await Promise.allSettled([...auth.inflight]);
    }
    assert.fail('issuance did not settle');
  };
  /** Moves time to `target`, stopping at every timer so its issuance completes at the time it was started. */
  const stepTo = async (target: number): Promise<void> => {
    for (;;) {
      const due = timersOf(clock)
        .map((t) => t.dueMs)
        .filter((d) => d <= target);
      if (due.length === 0) break;
      clock.set(Math.max(clock.nowMs(), Math.min(...due)));
      await settle();
    }
    clock.set(target);
    await settle();
  };

  const subscribe = (k: (typeof KEYS)[number]): Sub => {
    const s: Sub = { key: k.key, id: nextId++, sub: undefined as unknown as SvidSubscription, seen: undefined, closed: false, failed: false };
    (s as { sub: SvidSubscription }).sub = cache.subscribe(
      k.caller,
      k.node,
      k.id,
      (svid, reason) => {
        if (s.closed) violations.push(`push to closed subscription ${s.id}`);
        const now = clock.nowMs();
        if (svid.notAfter.getTime() <= now) violations.push(`pushed an expired certificate to ${s.id}`);
        if (reason === 'renewal' && s.seen && now < s.seen.renewAt.getTime() && !owed.has(s.key)) {
          violations.push(`renewal of ${s.key} at ${now} before renewAt ${s.seen.renewAt.getTime()}`);
        }
        s.seen = svid;
      },
    );
    s.sub.current.then(
      (svid) => {
        if (svid.notAfter.getTime() <= clock.nowMs()) violations.push(`current of ${s.id} resolved expired`);
        if (!s.seen || auth.issuedAt.get(svid.serialHex)! > auth.issuedAt.get(s.seen.serialHex)!) s.seen = svid;
      },
      () => {
        // The SDS stream fails the call when its first certificate cannot be issued: that closes the subscription.
        s.failed = true;
        if (!s.closed) {
          s.closed = true;
          s.sub.close();
        }
      },
    );
    subs.push(s);
    return s;
  };

  const check = (label: string): void => {
    const now = clock.nowMs();
    const where = `seed ${seed} step ${label} t=${now - Date.UTC(2026, 0, 1)}`;
    assert.deepEqual(violations, [], where);
    const live = subs.filter((s) => !s.closed);
    const entries = entriesOf(cache);
    const liveKeys = new Set(live.map((s) => s.key));
    assert.deepEqual([...entries.keys()].sort(), [...liveKeys].sort(), `${where}: entries = keys with live subscribers`);
    let listeners = 0;
    for (const e of entries.values()) listeners += e.listeners.size;
    assert.equal(listeners, live.length, `${where}: one listener per live subscription`);
    assert.ok(clock.pendingTimers() <= entries.size, `${where}: at most one timer per entry (${clock.pendingTimers()} > ${entries.size})`);
    const keyPairOf = new Map<string, string>();
    for (const s of live) {
      const e = entries.get(s.key)!;
      if (!s.seen) continue;
      assert.equal(s.seen.serialHex, e.svid?.serialHex, `${where}: subscription ${s.id} sees the entry's current SVID`);
      const kp = s.seen.privateKeyPem!;
      const other = keyPairOf.get(s.key);
      if (other !== undefined) assert.equal(kp, other, `${where}: subscribers of ${s.key} share one key pair`);
      keyPairOf.set(s.key, kp);
      const renewAt = s.seen.renewAt.getTime();
      const notAfter = s.seen.notAfter.getTime();
      if (auth.lastFailAt < renewAt) {
        assert.ok(notAfter > now, `${where}: ${s.key} served an expired certificate although no issuance failed since renewAt`);
      }
      const deadline = Math.max(renewAt, auth.lastFailAt) + RETRY_MAX;
      assert.ok(now <= deadline, `${where}: ${s.key} not renewed by ${deadline - Date.UTC(2026, 0, 1)} (renewAt + bounded retry)`);
    }
    const kps = [...keyPairOf.values()];
    assert.equal(new Set(kps).size, kps.length, `${where}: different keys never share a key pair`);
  };

  const liveSubs = () => subs.filter((s) => !s.closed);
  const bump = (op: string) => (ops[op] = (ops[op] ?? 0) + 1);

  for (let step = 0; step < steps; step++) {
    const r = rnd();
    let label: string;
    if (r < 0.25 || liveSubs().length === 0) {
      label = 'subscribe';
      subscribe(pick(KEYS));
      await settle();
    } else if (r < 0.38) {
      label = 'unsubscribe';
      const s = pick(liveSubs());
      s.closed = true;
      s.sub.close();
      if (rnd() < 0.3) s.sub.close(); // idempotent
      await settle();
    } else if (r < 0.65) {
      label = 'time';
      await stepTo(clock.nowMs() + Math.floor(rnd() * 200_000));
    } else if (r < 0.72) {
      label = auth.down ? 'backend-up' : 'backend-down';
      auth.down = !auth.down;
    } else if (r < 0.77) {
      label = 'fail-once';
      auth.failOnce += 1 + Math.floor(rnd() * 3);
    } else {
      // Authority events, sometimes racing a first issuance that started just before them.
      const racing = rnd() < 0.4 ? subscribe(pick(KEYS)) : undefined;
      const ev = rnd();
      const before = auth.seq;
      const upThroughout = !auth.down && auth.failOnce === 0;
      const keysAtEvent = new Set([...liveSubs().map((s) => s.key)]);
      if (ev < 0.35) {
        label = 'bundle-keep-old';
        await fake.rotateBundle();
      } else if (ev < 0.65) {
        label = 'bundle-drop-old';
        for (const k of keysAtEvent) owed.add(k);
        await fake.rotateBundle({ dropOld: true });
      } else {
        label = 'rotate-all';
        for (const k of keysAtEvent) owed.add(k);
        fake.reissueAll();
      }
      if (racing) label += '+racing-subscribe';
      await settle();
      if (upThroughout && !auth.down && auth.failOnce === 0) {
        const anchors = fake.bundle().rootsDer.map((d) => new X509Certificate(d));
        for (const s of liveSubs()) {
          if (!s.seen) continue;
          const leaf = new X509Certificate(s.seen.chainDer[0]!);
          const trusted = anchors.some((a) => leaf.checkIssued(a) && leaf.verify(a.publicKey));
          assert.ok(trusted, `seed ${seed} ${label}: ${s.key} serves a leaf whose CA is not in the bundle after the event settled`);
          if (label.startsWith('rotate-all')) {
            assert.ok(auth.issuedAt.get(s.seen.serialHex)! > before, `seed ${seed} ${label}: ${s.key} not re-issued by rotate-all`);
          }
        }
      }
    }
    bump(label.split('+')[0]!);
    // Keys whose owed re-issue was delivered (every live subscriber saw an SVID issued after the event) are cleared.
    for (const k of [...owed]) {
      const ls = liveSubs().filter((s) => s.key === k);
      if (ls.length === 0) owed.delete(k);
    }
    if (label === 'time' && !auth.down && auth.failOnce === 0) owed.clear();
    check(`${step}:${label}`);
  }

  auth.down = false;
  auth.failOnce = 0;
  for (const s of liveSubs()) {
    s.closed = true;
    s.sub.close();
  }
  await settle();
  await stepTo(clock.nowMs() + 10 * TTL_S * 1000);
  assert.equal(cache.size, 0, `seed ${seed}: no entries after all unsubscribes`);
  assert.equal(cache.listenerCount(), 0);
  assert.equal(clock.pendingTimers(), 0, `seed ${seed}: no timers after all unsubscribes`);
  assert.equal(auth.inflight.size, 0);
  return ops;
}

test('svid cache property: random subscribe/unsubscribe, time, CA events and transient failures keep the contract', async () => {
  const totals: Record<string, number> = {};
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    const ops = await runScenario(seed, 120);
    for (const [k, v] of Object.entries(ops)) totals[k] = (totals[k] ?? 0) + v;
  }
  for (const op of ['subscribe', 'unsubscribe', 'time', 'backend-down', 'fail-once', 'bundle-keep-old', 'bundle-drop-old', 'rotate-all']) {
    assert.ok((totals[op] ?? 0) > 0, `op ${op} exercised`);
  }
});

test('svid cache property: with the real authority, keys issued at the same instant get spread renewAt values and timers', async () => {
  const clock = new ManualClock(Date.UTC(2026, 0, 1) + 123);
  const store = new MemoryStore();
  const metrics = new Registry();
  const cfg = internalConfigSchema.parse({ signingCaTtl: '720h', rootTtl: '8760h' });
  const opts: AuthorityOptions = {
    trustDomain: 'td.test',
    workload: { ttlSeconds: 3600, maxTtlSeconds: 86400, keyType: 'ec-p256', renewFraction: 0.5, backdateSeconds: 30 },
    signingCaTtlSeconds: cfg.signingCaTtl,
    caKeyType: 'ec-p256',
  };
  const signer = new LeafSignerPool({ workers: 0 });
  const backend = new InternalBackend(cfg, { trustDomain: 'td.test', clock, log, store, metrics });
  const a = await LocalAuthority.create(opts, { backend, store, clock, log, metrics, signer });
  const cache = new SvidCache({ authority: a, clock, log });
  const N = 40;
  const subs = Array.from({ length: N }, (_, i) => cache.subscribe('spiffe://td.test/caller', `node-${i}`, `spiffe://td.test/w/${i % 4}`, () => undefined));
  const svids = await Promise.all(subs.map((s) => s.current));
  const t0 = clock.nowMs();
  const offsets = svids.map((s) => s.renewAt.getTime() - t0);
  const distinct = new Set(offsets).size;
  const spread = Math.max(...offsets) - Math.min(...offsets);
  assert.ok(distinct > N / 2, `renewAt values spread (${distinct} distinct of ${N})`);
  assert.ok(spread > 0.05 * 1800_000, `renewAt spread ${spread} ms covers a good part of the +/-10% window`);
  for (const o of offsets) assert.ok(o >= 0.9 * 1800_000 - 1 && o <= 1.1 * 1800_000 + 1, `offset ${o} within +/-10% of renewFraction x ttl`);
  assert.equal(new Set(svids.map((s) => s.privateKeyPem)).size, N, 'one key pair per node');
  // The cache's renewal timers follow the jittered renewAt: they do not all fire in the same second.
  const dueSeconds = new Set(timersOf(clock).map((t) => Math.floor(t.dueMs / 1000)));
  assert.ok(dueSeconds.size > N / 2, `renewal timers spread over ${dueSeconds.size} distinct seconds`);
  for (const s of subs) s.close();
  assert.equal(cache.size, 0);
  assert.equal(clock.pendingTimers(), 0);
  await a.close();
  await signer.close();
});
