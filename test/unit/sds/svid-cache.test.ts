import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import { SvidCache } from '../../../src/cache/svid-cache.js';
import type { Authority, AuthorityEvent, IssuedSvid, IssueRequest, TrustBundle } from '../../../src/authority/types.js';
import { CaError } from '../../../src/util/errors.js';
import { ManualClock } from '../../fakes/clock.js';
import { FakeAuthority } from '../../fakes/authority.js';

const log = pino({ level: 'silent' });
const ID = 'spiffe://example.org/a';
const CALLER = 'spiffe://example.org/proxy';

/** A fast authority double that hands out synthetic SVIDs (no crypto) for counting and leak tests. */
class CountingAuthority implements Authority {
  readonly trustDomain = 'example.org';
  calls: IssueRequest[] = [];
  private n = 0;
  private listeners = new Set<(ev: AuthorityEvent) => void>();
  pending: Array<() => void> = [];
  manual = false;
  constructor(private readonly clock: ManualClock, private readonly ttlMs = 60_000) {}
  issue(req: IssueRequest): Promise<IssuedSvid> {
    this.calls.push(req);
    const now = this.clock.nowMs();
    const svid: IssuedSvid = {
      spiffeId: req.spiffeId,
      chainDer: [Buffer.from([++this.n])],
      chainPem: `PEM${this.n}`,
      privateKeyPem: `KEY${this.n}`,
      keyType: 'ec-p256',
      serialHex: String(this.n),
      notBefore: new Date(now),
      notAfter: new Date(now + this.ttlMs),
      renewAt: new Date(now + this.ttlMs / 2),
      caGeneration: 1,
    };
    if (!this.manual) return Promise.resolve(svid);
    return new Promise((resolve) => this.pending.push(() => resolve(svid)));
  }
  bundle(): TrustBundle {
    return { trustDomain: this.trustDomain, rootsDer: [], pem: '', sequence: 1 };
  }
  onEvent(l: (ev: AuthorityEvent) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  async rotate(): Promise<void> {}
  health() {
    return { ready: true };
  }
}

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const tick = () => new Promise<void>((r) => setImmediate(r));

describe('SvidCache', () => {
  it('coalesces concurrent subscribers of one (node, id) into one issuance; other nodes get their own', async () => {
    const clock = new ManualClock(Date.now());
    const auth = new CountingAuthority(clock);
    auth.manual = true;
    const cache = new SvidCache({ authority: auth, clock, log });
    const a = cache.subscribe(CALLER, 'n1', ID, () => undefined);
    const b = cache.subscribe(CALLER, 'n1', ID, () => undefined);
    const c = cache.subscribe(CALLER, 'n2', ID, () => undefined);
    assert.equal(auth.calls.length, 2);
    auth.pending.forEach((f) => f());
    const [sa, sb, sc] = await Promise.all([a.current, b.current, c.current]);
    assert.equal(sa, sb);
    assert.notEqual(sa.serialHex, sc.serialHex);
    a.close();
    b.close();
    c.close();
    assert.equal(cache.size, 0);
  });

  it('renews at renewAt only while subscribed, and pushes to every listener', async () => {
    const clock = new ManualClock(Date.now());
    const auth = new CountingAuthority(clock);
    const cache = new SvidCache({ authority: auth, clock, log });
    const got: string[] = [];
    const s1 = cache.subscribe(CALLER, 'n', ID, (s, r) => got.push(`1:${s.serialHex}:${r}`));
    const s2 = cache.subscribe(CALLER, 'n', ID, (s, r) => got.push(`2:${s.serialHex}:${r}`));
    await s1.current;
    await clock.advanceAsync(30_000);
    assert.deepEqual(got, ['1:2:renewal', '2:2:renewal']);
    s1.close();
    s2.close();
    assert.equal(clock.pendingTimers(), 0, 'no timer once nobody listens');
    await clock.advanceAsync(600_000);
    assert.equal(auth.calls.length, 2);
  });

  it('never serves an expired certificate', async () => {
    const clock = new ManualClock(Date.now());
    const auth = new CountingAuthority(clock);
    const cache = new SvidCache({ authority: auth, clock, log });
    const s1 = cache.subscribe(CALLER, 'n', ID, () => undefined);
    const first = await s1.current;
    auth.manual = true; // renewal hangs
    clock.advance(30_000);
    clock.set(first.notAfter.getTime() + 1);
    const s2 = cache.subscribe(CALLER, 'n', ID, () => undefined);
    auth.pending.forEach((f) => f());
    const second = await s2.current;
    assert.ok(second.notAfter.getTime() > clock.nowMs());
    s1.close();
    s2.close();
  });

  it('a failed first issuance rejects with the CaError and leaves no entry', async () => {
    const clock = new ManualClock(Date.now());
    const fake = await FakeAuthority.create({ clock });
    const cache = new SvidCache({ authority: fake, clock, log });
    fake.failNext(1);
    const s = cache.subscribe(CALLER, 'n', 'spiffe://example.org/x', () => undefined);
    await assert.rejects(s.current, (e: CaError) => e.code === 'UNAVAILABLE');
    s.close();
    assert.equal(cache.size, 0);
  });

  it('10,000 subscribe/close cycles over many nodes leak nothing', async () => {
    const clock = new ManualClock(Date.now());
    const auth = new CountingAuthority(clock);
    const cache = new SvidCache({ authority: auth, clock, log });
    const cycle = async (from: number, count: number): Promise<void> => {
      for (let i = from; i < from + count; i++) {
        const s = cache.subscribe(CALLER, `node-${i}`, `spiffe://example.org/w/${i % 50}`, () => undefined);
        await s.current;
        s.close();
      }
    };
    await cycle(0, 1000);
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    await cycle(1000, 10_000);
    await tick();
    gc();
    const heapAfter = process.memoryUsage().heapUsed;
    assert.equal(cache.size, 0);
    assert.equal(clock.pendingTimers(), 0);
    assert.ok(heapAfter - heapBefore < 5 * 1024 * 1024, `heap grew by ${heapAfter - heapBefore} bytes`);
  });

  it('signing-ca re-issues leaves whose CA left the bundle; reissue-all re-issues everything', async () => {
    const clock = new ManualClock(Date.now());
    const fake = await FakeAuthority.create({ clock });
    const cache = new SvidCache({ authority: fake, clock, log });
    fake.onEvent((ev) => cache.handleAuthorityEvent(ev));
    const pushed: string[] = [];
    const s = cache.subscribe(CALLER, 'n', 'spiffe://example.org/x', (svid, reason) => pushed.push(`${svid.caGeneration}:${reason}`));
    await s.current;
    await fake.rotateBundle(); // old root still trusted: nothing now
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(pushed, []);
    await fake.rotateBundle({ dropOld: true }); // old roots gone: replace now
    for (let i = 0; i < 100 && pushed.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(pushed, ['3:reissue']);
    fake.reissueAll();
    for (let i = 0; i < 100 && pushed.length === 1; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(pushed, ['3:reissue', '3:reissue']);
    s.close();
  });
});
