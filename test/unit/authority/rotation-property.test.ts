import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { LocalAuthority, type AuthorityOptions } from '../../../src/authority/authority.js';
import { activateAtMs, prepareAtMs } from '../../../src/authority/rotation.js';
import type { AuthorityState, Slot } from '../../../src/authority/state.js';
import type { IssuedSvid } from '../../../src/authority/types.js';
import { InternalBackend } from '../../../providers/internal/backend.js';
import { internalConfigSchema } from '../../../providers/internal/config.js';
import { LeafSignerPool } from '../../../src/x509/signer-pool.js';
import { ManualClock } from '../../fakes/clock.js';
import { MemoryStore } from '../../fakes/memory-store.js';
import { prng } from '../../support/prng.js';

/**
 * Property-style run of the signing CA and root rotation on a ManualClock: time moves in random steps across many
 * signing CA and several root lifetimes, leaves are issued along the way, operators rotate (with and without a new
 * root), meshca restarts (also after long downtime), and after every step the trust invariants are checked.
 */

const H = 3600_000;
const log = pino({ level: 'silent' });

interface Scenario {
  readonly name: string;
  readonly seed: number;
  readonly signingCaTtlH: number;
  readonly rootTtlH: number;
  readonly ttlS: number;
  readonly maxTtlS: number;
  /** Simulated time, in signing CA lifetimes. */
  readonly lifetimes: number;
}

function stateOf(a: LocalAuthority): AuthorityState {
  return (a as unknown as { state: AuthorityState }).state;
}

/** Lets timer-started rotation work finish, firing timers that fall due meanwhile (the clock does not move). */
async function settle(a: LocalAuthority, clock: ManualClock): Promise<void> {
  const inflight = (a as unknown as { inflight: Set<Promise<unknown>> }).inflight;
  for (let i = 0; i < 20; i++) {
    for (let j = 0; j < 5; j++) await new Promise<void>((r) => setImmediate(r));
    if (inflight.size === 0) {
      clock.advance(0);
      for (let j = 0; j < 5; j++) await new Promise<void>((r) => setImmediate(r));
      if (inflight.size === 0) return;
    }
    await Promise.allSettled([...inflight]);
  }
  assert.fail('rotation work did not settle');
}

function validAt(x: X509Certificate, now: number): boolean {
  return new Date(x.validFrom).getTime() <= now && now <= new Date(x.validTo).getTime();
}

/** The chain (leaf first) verifies link by link and ends at a root of `roots`, every certificate valid at `now`. */
function chainsToBundle(chain: readonly Buffer[], roots: readonly Buffer[], now: number): string | undefined {
  const certs = chain.map((d) => new X509Certificate(d));
  for (let i = 0; i < certs.length; i++) {
    if (!validAt(certs[i]!, now)) return `chain[${i}] not valid at ${new Date(now).toISOString()}`;
    if (i + 1 < certs.length && !(certs[i]!.checkIssued(certs[i + 1]!) && certs[i]!.verify(certs[i + 1]!.publicKey))) {
      return `chain[${i + 1}] did not issue chain[${i}]`;
    }
  }
  const top = certs[certs.length - 1]!;
  const root = roots.map((r) => new X509Certificate(r)).find((r) => top.checkIssued(r) && top.verify(r.publicKey));
  if (!root) return 'no root in the bundle issued the top of the chain';
  if (!validAt(root, now)) return 'the root is not valid now';
  return undefined;
}

async function metricValue(reg: Registry, name: string): Promise<number> {
  const m = reg.getSingleMetric(name);
  assert.ok(m, name);
  const v = await m.get();
  return v.values[0]?.value ?? 0;
}

async function runScenario(sc: Scenario): Promise<{ rootsSeen: number; generations: number; restarts: number; clamps: number; ops: Record<string, number> }> {
  const rnd = prng(sc.seed);
  const store = new MemoryStore();
  const clock = new ManualClock(Date.UTC(2026, 0, 1, 0, 0, 0) + 123); // not on a whole second
  const cfg = internalConfigSchema.parse({ signingCaTtl: `${sc.signingCaTtlH}h`, rootTtl: `${sc.rootTtlH}h` });
  const opts: AuthorityOptions = {
    trustDomain: 'td.test',
    workload: { ttlSeconds: sc.ttlS, maxTtlSeconds: sc.maxTtlS, keyType: 'ec-p256', renewFraction: 0.5, backdateSeconds: 30 },
    signingCaTtlSeconds: cfg.signingCaTtl,
    caKeyType: 'ec-p256',
  };
  const signer = new LeafSignerPool({ workers: 0 });
  let metrics = new Registry();
  const open = async (): Promise<LocalAuthority> => {
    metrics = new Registry();
    const backend = new InternalBackend(cfg, { trustDomain: 'td.test', clock, log, store, metrics });
    const a = await LocalAuthority.create(opts, { backend, store, clock, log, metrics, signer });
    a.start();
    return a;
  };
  let a = await open();
  const firstRoot = a.bundle().rootsDer[0]!;
  const leaves: IssuedSvid[] = [];
  const rootsSeen = new Set<string>();
  const preparedGens = new Set<number>();
  let restarts = 0;
  const ops = { rotate: 0, 'rotate-root': 0, restart: 0, downtime: 0 };
  let clamps = 0;
  let prev = stateOf(a);
  let prevNow = clock.nowMs();
  const caTtlMs = sc.signingCaTtlH * H;
  const end = clock.nowMs() + sc.lifetimes * caTtlMs;
  const realRandom = Math.random;
  try {
    while (clock.nowMs() < end) {
      // Move time: mostly small steps, sometimes none (operator action at the same instant).
      const step = Math.floor(rnd() * (caTtlMs / 10)) + 1;
      let forced: 'rotate' | 'rotate-root' | 'restart' | 'downtime' | undefined;
      const r = rnd();
      if (r < 0.02) forced = 'rotate';
      else if (r < 0.03) forced = 'rotate-root';
      else if (r < 0.05) forced = 'restart';
      else if (r < 0.055) forced = 'downtime';

      if (forced) ops[forced]++;
      if (forced === 'downtime') {
        // meshca is down for longer than a whole signing CA lifetime, then restarts.
        await a.close();
        clock.advance(Math.floor(caTtlMs * (1.2 + rnd())));
        a = await open();
        restarts++;
        prev = stateOf(a);
        prevNow = clock.nowMs();
      } else {
        await clock.advanceAsync(step);
        await settle(a, clock);
      }
      const now = clock.nowMs();
      let s = stateOf(a);

      // Scheduled rotation happened at the right moments (the step window [prevNow, now] contains the due time).
      if (prev.active && s.active && forced !== 'downtime') {
        if (s.next && (!prev.next || prev.next.generation !== s.next.generation)) {
          if (prev.active.generation === s.active.generation) {
            const at = prepareAtMs(s.active);
            assert.ok(at > prevNow && at <= now, `next prepared in (${new Date(prevNow).toISOString()}, ${new Date(now).toISOString()}], due ${new Date(at).toISOString()}`);
          }
          preparedGens.add(s.next.generation);
        }
        if (prev.active.generation !== s.active.generation) {
          const old = prev.active;
          const switchedAt = Math.max(prevNow, Math.min(now, activateAtMs(old)));
          assert.ok(activateAtMs(old) <= now, 'activated before 5/6 of the old life');
          assert.ok(prev.next && prev.next.generation === s.active.generation, `activated gen ${s.active.generation}, which was not the prepared next`);
          assert.ok(old.notAfterMs > switchedAt, 'overlap: the old signing CA is still valid when the new one takes over');
          assert.ok(s.retired.some((x) => x.generation === old.generation) || old.notAfterMs <= now, 'old signing CA retired, not dropped, while it lives');
        }
      }
      if (s.next) {
        assert.ok(s.next.notAfterMs > now, `the prepared next signing CA (gen ${s.next.generation}) is expired at ${new Date(now).toISOString()}`);
        assert.ok(a.bundle().rootsDer.some((r) => s.next!.rootsDer.some((n) => n.equals(r))), 'the next CA\'s root is in the bundle before it signs');
      }

      // Operator actions.
      if (forced === 'rotate' || forced === 'rotate-root') {
        const rootsBefore = a.bundle().rootsDer;
        await a.rotate({ root: forced === 'rotate-root' });
        await settle(a, clock);
        s = stateOf(a);
        if (forced === 'rotate-root') {
          const newRoot = a.bundle().rootsDer.find((x) => !rootsBefore.some((y) => y.equals(x)));
          assert.ok(newRoot, 'rotate --root adds a new root to the bundle');
          assert.ok(s.active!.rootsDer.some((x) => x.equals(newRoot)), 'the new signing CA is under the new root');
        }
      } else if (forced === 'restart') {
        const before = store.data.get('authority')!;
        const bundleBefore = a.bundle();
        const genBefore = s.active!.generation;
        await a.close();
        a = await open();
        restarts++;
        assert.ok(store.data.get('authority')!.equals(before), 'restart at the same instant changes nothing');
        assert.equal(a.bundle().sequence, bundleBefore.sequence);
        assert.deepEqual(a.bundle().rootsDer.map((x) => x.toString('hex')), bundleBefore.rootsDer.map((x) => x.toString('hex')));
        assert.equal(a.activeSigningCa()!.generation, genBefore);
        s = stateOf(a);
      }

      // The active signing CA is valid and the service ready.
      const act = s.active;
      assert.ok(act, 'there is an active signing CA');
      assert.ok(act.notBeforeMs <= now && now < act.notAfterMs, `active signing CA gen ${act.generation} not valid at ${new Date(now).toISOString()}`);
      assert.equal(a.health().ready, true);
      const bundle = a.bundle();
      for (const x of bundle.rootsDer) rootsSeen.add(x.toString('hex'));
      assert.equal(chainsToBundle([act.ca.certDer, ...act.ca.chainDer], bundle.rootsDer, now), undefined, 'active CA chains to the bundle');
      // The alert gauge tells whether the active CA can cover a full workload ttl right now.
      const cannotCover = act.notAfterMs - now < sc.ttlS * 1000 ? 1 : 0;
      assert.equal(await metricValue(metrics, 'meshca_signing_ca_cannot_cover_ttl'), cannotCover, `cannot-cover gauge at ${new Date(now).toISOString()} (CA left ${(act.notAfterMs - now) / H}h)`);

      // Issue a leaf; notAfter and renewAt are counted from the issuance time.
      const ttlS = rnd() < 0.7 ? sc.ttlS : Math.floor(60 + rnd() * (sc.maxTtlS - 60));
      const jitter = rnd();
      const clampedBefore = await metricValue(metrics, 'meshca_leaf_ttl_clamped_total');
      Math.random = () => jitter;
      let svid: IssuedSvid;
      try {
        svid = await a.issue({ spiffeId: `spiffe://td.test/w${leaves.length % 7}`, ttlSeconds: ttlS });
      } finally {
        Math.random = realRandom;
      }
      const want = Math.min(now + ttlS * 1000, act.notAfterMs);
      const clamped = now + ttlS * 1000 > act.notAfterMs;
      if (clamped) clamps++;
      assert.equal(svid.notAfter.getTime(), want, 'notAfter = issuance + ttl, clamped to the signing CA');
      const leafX = new X509Certificate(svid.chainDer[0]!);
      assert.equal(new Date(leafX.validTo).getTime(), Math.floor(want / 1000) * 1000, 'certificate notAfter');
      assert.equal(await metricValue(metrics, 'meshca_leaf_ttl_clamped_total'), clampedBefore + (clamped ? 1 : 0), 'clamp counter');
      assert.equal(svid.notBefore.getTime(), Math.max(now - 30_000, act.notBeforeMs));
      const life = want - now;
      const renew = Math.min(now + life * 0.5 * (0.9 + 0.2 * jitter), want - 1000);
      assert.ok(Math.abs(svid.renewAt.getTime() - renew) <= 1, `renewAt from issuance time: ${svid.renewAt.toISOString()} vs ${new Date(renew).toISOString()}`);
      assert.equal(svid.caGeneration, act.generation);
      leaves.push(svid);

      // Every unexpired leaf ever issued still chains to a root in the current bundle.
      for (let i = leaves.length - 1; i >= 0; i--) {
        const l = leaves[i]!;
        if (new Date(new X509Certificate(l.chainDer[0]!).validTo).getTime() < now) {
          leaves.splice(i, 1);
          continue;
        }
        const why = chainsToBundle(l.chainDer, bundle.rootsDer, now);
        assert.equal(why, undefined, `leaf gen ${l.caGeneration} issued ${l.notBefore.toISOString()} (expires ${l.notAfter.toISOString()}) at ${new Date(now).toISOString()}: ${why}`);
      }
      prev = s;
      prevNow = now;
    }
    // Restart at the end keeps the first root as long as it lives (and the same state).
    const before = store.data.get('authority')!;
    await a.close();
    a = await open();
    assert.ok(store.data.get('authority')!.equals(before));
    if (new Date(new X509Certificate(firstRoot).validTo).getTime() > clock.nowMs()) {
      assert.ok(a.bundle().rootsDer.some((x) => x.equals(firstRoot)), 'first root kept');
    }
    return { rootsSeen: rootsSeen.size, generations: stateOf(a).generation, restarts, clamps, ops };
  } finally {
    Math.random = realRandom;
    await a.close();
    await signer.close();
  }
}

const scenarios: Scenario[] = [
  // Defaults' shape: long signing CA, 1h leaves up to 24h; a root every ~7 signing CA lifetimes.
  { name: 'default ratios', seed: 1, signingCaTtlH: 48, rootTtlH: 480, ttlS: 3600, maxTtlS: 86400, lifetimes: 14 },
  // Short signing CA: leaves often clamped, the alert gauge flips.
  { name: 'short signing CA', seed: 2, signingCaTtlH: 2, rootTtlH: 12, ttlS: 3600, maxTtlS: 7200, lifetimes: 30 },
  // Root shorter than three signing CA lifetimes: a new root for every signing CA.
  { name: 'short root', seed: 3, signingCaTtlH: 4, rootTtlH: 10, ttlS: 1800, maxTtlS: 14400, lifetimes: 8 },
];

for (const sc of scenarios) {
  test(`rotation property: every live leaf chains to the bundle across signing CA and root lifetimes (${sc.name})`, async () => {
    const r = await runScenario(sc);
    assert.ok(r.rootsSeen >= 2, `several roots over the run (${r.rootsSeen})`);
    assert.ok(r.generations >= sc.lifetimes, `signing CA rotated many times (${r.generations})`);
    assert.ok(r.restarts >= 1, 'restarted at least once');
    for (const op of ['rotate', 'rotate-root', 'downtime'] as const) assert.ok((r.ops[op] ?? 0) >= 1, `${op} exercised`);
  });
}
