// ListWatch against the strict fake API server with the real client: re-list on 410 Gone, and no hot loop when
// every watch answers 410 (the API server's window is shorter than our list's age, or a broken proxy).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { startFakeKubeApiServer, type FakeKube } from '../../fakes/kube-apiserver.js';
import { ManualClock } from '../../fakes/clock.js';
import { connectKube } from '../../../src/kube/client.js';
import { ListWatch, type KubeObject } from '../../../src/kube/list-watch.js';

const NS = 'lw';

describe('ListWatch', { timeout: 20000 }, () => {
  let fake: FakeKube;
  before(async () => {
    fake = await startFakeKubeApiServer();
  });
  after(async () => {
    await fake.close();
  });

  async function start(clock: ManualClock, errors: unknown[], watchTimeoutSeconds?: number, ns = NS): Promise<{ lw: ListWatch<KubeObject>; seen: () => string[] }> {
    const kube = await connectKube({ component: 'test', kubeConfig: fake.kubeConfig() });
    let names: string[] = [];
    const lw = new ListWatch<KubeObject>({
      kube,
      path: `/api/v1/namespaces/${ns}/configmaps`,
      clock,
      log: pino({ level: 'silent' }),
      list: async () => {
        const l = await kube.core().listNamespacedConfigMap({ namespace: ns });
        return { items: l.items as unknown as KubeObject[], resourceVersion: l.metadata?.resourceVersion ?? '' };
      },
      onChange: (items) => (names = [...items.values()].map((o) => String(o.metadata?.name)).sort()),
      onError: (e) => errors.push(e),
      ...(watchTimeoutSeconds !== undefined ? { watchTimeoutSeconds } : {}),
    });
    lw.start();
    return { lw, seen: () => names };
  }

  const watches = (from: number, ns: string): number => fake.requests.slice(from).filter((r) => r.resource === 'configmaps' && r.namespace === ns && r.verb === 'watch').length;
  const lists = (from: number): number => fake.requests.slice(from).filter((r) => r.resource === 'configmaps' && r.namespace === NS && r.verb === 'list').length;

  it('a 410 Gone on the watch re-lists at once and catches up', async () => {
    const clock = new ManualClock(Date.now());
    const { lw, seen } = await start(clock, []);
    await waitFor(() => fake.openWatches() > 0, 'watch');
    clock.advance(5000); // the watch was open a while (one ending at once would be retried with backoff)
    fake.dropWatches();
    await fake.api.create('configmaps', { metadata: { name: 'a' } }, { namespace: NS });
    fake.compactHistory();
    await waitFor(() => seen().includes('a'), 'the object created while the watch was gone');
    lw.stop();
  });

  it('every watch answering 410: re-lists back off on the clock instead of looping', async () => {
    const clock = new ManualClock(Date.now());
    const errors: unknown[] = [];
    const from = fake.requests.length;
    fake.failNext(50, { code: 410, reason: 'Expired', message: 'too old resource version: 1 (2)', match: (r) => r.watch && r.path === `/api/v1/namespaces/${NS}/configmaps` });
    const { lw } = await start(clock, errors);
    await new Promise((r) => setTimeout(r, 500));
    const n = lists(from);
    assert.ok(n <= 3, `at most a few lists without the clock moving, got ${n}`);
    assert.ok(errors.length >= 1, 'repeated 410s are reported through onError');
    clock.advance(60_000);
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(lists(from) > n, 'the clock moving lets it retry');
    lw.stop();
  });

  it('a watch the server ends at once, with nothing delivered, is not re-opened in a loop', async () => {
    const clock = new ManualClock(Date.now());
    const errors: unknown[] = [];
    const from = fake.requests.length;
    // timeoutSeconds=0: the server closes every watch as soon as it opens it (like a proxy cutting streams).
    const { lw } = await start(clock, errors, 0, 'lw2');
    await new Promise((r) => setTimeout(r, 500));
    const n = watches(from, 'lw2');
    assert.ok(n <= 3, `at most a few watches without the clock moving, got ${n}`);
    assert.ok(errors.length >= 1, 'short empty watches are reported through onError');
    assert.match(String((errors[0] as Error).message), /watch of \/api\/v1\/namespaces\/lw2\/configmaps ended at once/);
    clock.advance(60_000);
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(watches(from, 'lw2') > n, 'the clock moving lets it retry');
    lw.stop();
  });
});

async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
