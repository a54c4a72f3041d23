// Transport-level behaviour of the fake kube-apiserver: HTTPS with its generated CA, kubeconfig file text, the real
// client's informer (list + watch + re-list after 410), and close() ending open watches.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CoreV1Api, KubeConfig, makeInformer, Watch, type V1ConfigMap } from '@kubernetes/client-node';
import { startFakeKubeApiServer } from '../../fakes/kube-apiserver.js';

describe('fake kube-apiserver transport', { timeout: 15000 }, () => {
  it('serves HTTPS to a kubeconfig loaded from its YAML text', async () => {
    const fake = await startFakeKubeApiServer({ https: true, users: { bob: { superuser: true, token: 'bob-secret' } } });
    try {
      assert.ok(fake.url.startsWith('https://127.0.0.1:'));
      const kc = new KubeConfig();
      kc.loadFromString(fake.kubeconfigYaml('bob'));
      const core = kc.makeApiClient(CoreV1Api);
      await core.createNamespacedConfigMap({ namespace: 'x', body: { metadata: { name: 'tls' } } });
      assert.equal((await core.readNamespacedConfigMap({ name: 'tls', namespace: 'x' })).metadata?.name, 'tls');
      assert.equal(fake.requests.at(-1)?.user, 'bob');
    } finally {
      await fake.close();
    }
  });

  it('feeds the real informer, which re-lists after 410 Expired', async () => {
    const fake = await startFakeKubeApiServer();
    const kc = fake.kubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const informer = makeInformer<V1ConfigMap>(kc, '/api/v1/namespaces/inf/configmaps', () => core.listNamespacedConfigMap({ namespace: 'inf' }));
    const seen: string[] = [];
    informer.on('add', (o) => seen.push(`add:${o.metadata?.name}`));
    informer.on('error', () => undefined);
    try {
      await core.createNamespacedConfigMap({ namespace: 'inf', body: { metadata: { name: 'before' } } });
      await informer.start();
      await core.createNamespacedConfigMap({ namespace: 'inf', body: { metadata: { name: 'during' } } });
      await waitFor(() => seen.includes('add:during'));
      // Hold the informer's re-watch at the server while history moves past its resourceVersion and is compacted.
      fake.setLatency(300);
      fake.dropWatches();
      await fake.api.create('configmaps', { metadata: { name: 'after' } }, { namespace: 'inf' });
      fake.compactHistory();
      await new Promise((r) => setTimeout(r, 50));
      fake.setLatency(0);
      await waitFor(() => seen.includes('add:after'));
      assert.deepEqual(seen.slice(0, 2), ['add:before', 'add:during']);
      assert.ok(fake.requests.filter((r) => r.verb === 'list').length >= 2, 'the informer re-listed after 410');
    } finally {
      await informer.stop();
      await fake.close();
    }
  });

  it('close() ends open watch streams', async () => {
    const fake = await startFakeKubeApiServer();
    const ended = new Promise<void>((resolve) => {
      void new Watch(fake.kubeConfig()).watch('/api/v1/namespaces/a/secrets', {}, () => undefined, () => resolve());
    });
    await waitFor(() => fake.openWatches() === 1);
    await fake.close();
    await ended;
  });
});

async function waitFor(check: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) assert.fail('condition not reached in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
