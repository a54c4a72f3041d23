import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import type { IssuedSvid, IssueRequest } from '../../src/authority/types.js';
import { startHarness, type Harness } from '../support/sds-harness.js';
import type { DeltaStream, SotwResponse, SotwStream } from '../support/sds-client.js';

/**
 * Every way a SotW stream ends releases its subscriptions, cache entries and timers (protocols.md §2: streams that
 * disconnect release their state), including after a wildcard-delivered name was re-sent by name (a fresh
 * subscription replaces the old one); and that re-send pushes once, from the same key, validation context first.
 */
async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const WEB = 'spiffe://example.org/ns/default/sa/web';

function certOf(r: SotwResponse): string {
  return r.secrets[0]!.tls_certificate!.certificate_chain.inline_bytes.toString();
}

/** Reads n responses and returns them by Secret name (each response holds exactly one Secret). */
async function byName(s: SotwStream, n: number): Promise<Map<string, SotwResponse>> {
  const out = new Map<string, SotwResponse>();
  for (let i = 0; i < n; i++) {
    const r = await s.next(5000);
    assert.equal(r.secrets.length, 1);
    assert.ok(!out.has(r.secrets[0]!.name), `${r.secrets[0]!.name} pushed twice`);
    out.set(r.secrets[0]!.name, r);
  }
  return out;
}

type Scenario = (s: SotwStream) => Promise<void>;

const scenarios: Record<string, Scenario> = {
  'legacy wildcard, then both names re-sent by name': async (s) => {
    s.request([]);
    const wild = await byName(s, 2);
    const last = [...wild.values()].at(-1)!;
    s.request(['default', 'ROOTCA'], last.version_info, last.nonce);
    const named = await byName(s, 2);
    assert.equal(certOf(named.get('default')!), certOf(wild.get('default')!), 'the same certificate (and key)');
    await s.expectSilence(100);
  },
  '`*`, then `*` + default re-sends default once': async (s) => {
    s.request(['*']);
    const wild = await byName(s, 2);
    const last = [...wild.values()].at(-1)!;
    s.request(['*', 'default'], last.version_info, last.nonce);
    const r = await s.next();
    assert.equal(r.secrets[0]!.name, 'default');
    assert.equal(certOf(r), certOf(wild.get('default')!));
    s.ack(r);
    await s.expectSilence(100);
  },
  'NACK': async (s) => {
    s.request(['default']);
    const r = await s.next();
    s.nack(r, '');
    await s.expectSilence(100);
  },
  're-request with a name added': async (s) => {
    s.request(['default']);
    const r = await s.next();
    s.request(['default', 'ROOTCA'], r.version_info, r.nonce);
    const r2 = await s.next();
    assert.equal(r2.secrets[0]!.name, 'ROOTCA');
  },
};

type Ending = (s: SotwStream) => Promise<void>;

const endings: Record<string, Ending> = {
  'client cancel': async (s) => s.cancel(),
  'client half-close': async (s) => {
    s.end();
    assert.equal((await s.status()).code, grpc.status.OK);
  },
  'error (unknown name)': async (s) => {
    s.request(['no-such-name']);
    assert.equal((await s.status()).code, grpc.status.INVALID_ARGUMENT);
  },
};

describe('SDS SotW: every stream ending releases everything', { timeout: 120_000 }, () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  async function assertClean(h: Harness, what: string): Promise<void> {
    await until(() => h.running.sds.openStreams() === 0, 5000, `streams to close (${what})`);
    assert.equal(h.running.cache.size, 0, `no SVID entries left (${what})`);
    assert.equal(h.running.cache.listenerCount(), 0, `no cache subscriptions left (${what})`);
    assert.equal(h.manual!.pendingTimers(), 1, `only the serving certificate timer is left (${what})`);
    assert.equal(await h.metric('meshca_sds_streams_open'), 0, `streams_open back to 0 (${what})`);
  }

  it('scenario x ending: cancel, half-close and error after wildcard re-send, NACK and re-request', async () => {
    h = await startHarness();
    let n = 0;
    for (const [sName, scenario] of Object.entries(scenarios)) {
      for (const [eName, ending] of Object.entries(endings)) {
        const c = await h.client(WEB, { id: `node-${++n}`, cluster: 'c' });
        const before: number = h.fake!.issued.length;
        const s = c.streamSecrets();
        await scenario(s);
        assert.equal(h.fake!.issued.length - before, 1, `${sName}: one issuance for the node`);
        assert.equal(h.running.cache.size, 1);
        assert.equal(h.running.cache.listenerCount(), 1, `${sName}: one cache subscription for the stream`);
        await ending(s);
        await assertClean(h, `${sName} / ${eName}`);
      }
    }
  });

  it('DeltaSecrets: cancel, half-close and error after a wildcard re-subscribe and a NACK release everything', async () => {
    h = await startHarness();
    let n = 0;
    for (const [eName, ending] of Object.entries({
      cancel: async (s: DeltaStream) => s.cancel(),
      'half-close': async (s: DeltaStream) => {
        s.end();
        assert.equal((await s.status()).code, grpc.status.OK);
      },
      error: async (s: DeltaStream) => {
        s.send({ resource_names_subscribe: ['no-such-name'] });
        assert.equal((await s.status()).code, grpc.status.INVALID_ARGUMENT);
      },
    })) {
      const c = await h.client(WEB, { id: `delta-${++n}`, cluster: 'c' });
      const before: number = h.fake!.issued.length;
      const s = c.deltaSecrets();
      s.send({ resource_names_subscribe: ['*'] });
      const got = new Set<string>();
      for (let i = 0; i < 2; i++) for (const r of (await s.next()).resources) got.add(r.name);
      assert.deepEqual([...got].sort(), ['ROOTCA', 'default']);
      // `*` subscribed again: every name it covers is answered again (from Sub.last), then NACKed.
      s.send({ resource_names_subscribe: ['*'] });
      const again = new Set<string>();
      let last;
      for (let i = 0; i < 2; i++) {
        last = await s.next();
        for (const r of last.resources) again.add(r.name);
      }
      assert.deepEqual([...again].sort(), ['ROOTCA', 'default']);
      s.send({ response_nonce: last!.nonce, error_detail: { code: 13, message: 'nack' } });
      await s.expectSilence(100);
      assert.equal(h.fake!.issued.length - before, 1, 'one issuance for the node');
      assert.equal(h.running.cache.listenerCount(), 1);
      await ending(s);
      await assertClean(h, `delta / ${eName}`);
    }
  });

  it('server drain after a wildcard re-send releases every subscription and timer', async () => {
    h = await startHarness();
    const streams: SotwStream[] = [];
    for (let i = 0; i < 5; i++) {
      const c = await h.client(WEB, { id: `drain-${i}`, cluster: 'c' });
      const s = c.streamSecrets();
      await scenarios['`*`, then `*` + default re-sends default once']!(s);
      streams.push(s);
    }
    assert.equal(h.running.cache.listenerCount(), 5);
    await h.running.close(200);
    assert.equal(h.running.sds.openStreams(), 0);
    assert.equal(h.running.cache.size, 0);
    assert.equal(h.running.cache.listenerCount(), 0);
    for (const s of streams) assert.notEqual((await s.status()).code, grpc.status.OK, 'the client sees its stream end');
    h = undefined;
  });

  it('a renewal after a wildcard re-send is pushed once, from one subscription', async () => {
    h = await startHarness({ ttlSeconds: 3600 });
    const c = await h.client(WEB, { id: 'renew-1', cluster: 'c' });
    const s = c.streamSecrets();
    await scenarios['legacy wildcard, then both names re-sent by name']!(s);
    await h.manual!.advanceAsync(1800_000 + 1000);
    const r = await s.next();
    assert.equal(r.secrets[0]!.name, 'default');
    await s.expectSilence(200);
    assert.equal(h.running.cache.listenerCount(), 1);
    s.cancel();
    await until(() => h!.running.sds.openStreams() === 0, 5000, 'stream to close');
    assert.equal(h.running.cache.size, 0);
  });

  it('the nearest-expiry gauge is absent while nothing is served and comes back when a certificate is served again', async () => {
    h = await startHarness();
    const samples = async (): Promise<number[]> =>
      ((await h!.metrics.getSingleMetric('meshca_sds_served_cert_nearest_expiry_seconds')?.get())?.values ?? []).map((v) => v.value);
    assert.deepEqual(await samples(), [], 'absent before any certificate');
    for (let round = 0; round < 2; round++) {
      const c = await h.client(WEB, { id: `gauge-${round}`, cluster: 'c' });
      const s = c.streamSecrets();
      await scenarios['legacy wildcard, then both names re-sent by name']!(s);
      const v = await samples();
      assert.equal(v.length, 1, `round ${round}: one sample while a certificate is served`);
      assert.ok(v[0]! > 3500 && v[0]! <= 3600, `round ${round}: seconds to notAfter (${v[0]})`);
      s.cancel();
      await assertClean(h, `gauge round ${round}`);
      assert.deepEqual(await samples(), [], `round ${round}: absent again once nothing is served`);
    }
  });

  /** Holds the FakeAuthority's issuances until released. */
  function gateIssuance(h: Harness): () => void {
    const fake = h.fake!;
    const orig = fake.issue.bind(fake);
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    fake.issue = async (req: IssueRequest): Promise<IssuedSvid> => {
      await gate;
      return orig(req);
    };
    return open;
  }

  it('naming a wildcard name before its first certificate was sent pushes it once, and cancel then releases all', async () => {
    h = await startHarness();
    const open = gateIssuance(h);
    const c = await h.client(WEB, { id: 'early-1', cluster: 'c' });
    const before: number = h.fake!.issued.length;
    const s = c.streamSecrets();
    s.request(['*']);
    const root = await s.next();
    assert.equal(root.secrets[0]!.name, 'ROOTCA');
    s.request(['*', 'default'], root.version_info, root.nonce);
    await s.expectSilence(100);
    open();
    const d = await s.next();
    assert.equal(d.secrets[0]!.name, 'default');
    await s.expectSilence(200);
    assert.equal(h.fake!.issued.length - before, 1, 'one issuance (one key) for the node');
    s.cancel();
    await assertClean(h, 'early re-name');
  });

  it('cancel while the first certificate is being issued leaves nothing once the issuance ends', async () => {
    h = await startHarness();
    const open = gateIssuance(h);
    const c = await h.client(WEB, { id: 'early-2', cluster: 'c' });
    const s = c.streamSecrets();
    s.request([]);
    const root = await s.next();
    assert.equal(root.secrets[0]!.name, 'ROOTCA');
    s.request(['default', 'ROOTCA'], root.version_info, root.nonce);
    await s.next(); // ROOTCA re-sent by name
    s.cancel();
    await until(() => h!.running.sds.openStreams() === 0, 5000, 'stream to close');
    open();
    await new Promise((r) => setTimeout(r, 100));
    await assertClean(h, 'cancel during issuance');
  });
});

