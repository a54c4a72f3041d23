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

  async function start(clock: ManualClock, errors: unknown[]): Promise<{ lw: ListWatch<KubeObject>; seen: () => string[] }> {
    const kube = await connectKube({ component: 'test', kubeConfig: fake.kubeConfig() });
    let names: string[] = [];
    const lw = new ListWatch<KubeObject>({
      kube,
      path: `/api/v1/namespaces/${NS}/configmaps`,
      clock,
      log: pino({ level: 'silent' }),
      list: async () => {
        const l = await kube.core().listNamespacedConfigMap({ namespace: NS });
        return { items: l.items as unknown as KubeObject[], resourceVersion: l.metadata?.resourceVersion ?? '' };
      },
      onChange: (items) => (names = [...items.values()].map((o) => String(o.metadata?.name)).sort()),
      onError: (e) => errors.push(e),
    });
    lw.start();
    return { lw, seen: () => names };
  }

  const lists = (from: number): number => fake.requests.slice(from).filter((r) => r.resource === 'configmaps' && r.namespace === NS && r.verb === 'list').length;

  it('a 410 Gone on the watch re-lists at once and catches up', async () => {
    const clock = new ManualClock(Date.now());
    const { lw, seen } = await start(clock, []);
    await waitFor(() => fake.openWatches() > 0, 'watch');
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
});

async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
