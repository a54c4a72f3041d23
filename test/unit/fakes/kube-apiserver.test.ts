// The fake kube-apiserver, driven by the real @kubernetes/client-node: it must accept what a cluster accepts and
// reject what a cluster rejects, with the same codes and Status shapes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  ApiException,
  AuthenticationV1Api,
  CertificatesV1Api,
  CertificatesV1beta1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  V1MicroTime,
  Watch,
} from '@kubernetes/client-node';
import { startFakeKubeApiServer, type FakeKube } from '../../fakes/kube-apiserver.js';
import { createCa, createTestCsr, type CertificateAuthority } from '../../fakes/kube/pki.js';

/** Awaits a rejected client call and returns the parsed Status with the HTTP code. */
async function rejection(p: Promise<unknown>): Promise<{ code: number; reason: string; message: string; body: any }> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ApiException, `expected ApiException, got ${String(e)}`);
    const body = typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
    return { code: e.code, reason: body?.reason, message: body?.message, body };
  }
  assert.fail('expected the call to be rejected');
}

function b64(s: string): string {
  return Buffer.from(s).toString('base64');
}

/** Collects watch events until `until` says stop or the timeout hits. */
function collectWatch(kc: KubeConfig, path: string, query: Record<string, string | number | boolean | undefined>, until: (evs: Array<{ type: string; obj: any }>) => boolean, timeoutMs = 3000) {
  const events: Array<{ type: string; obj: any }> = [];
  return new Promise<{ events: typeof events; doneErr: unknown; ended: boolean }>((resolve, reject) => {
    let ctrl: AbortController | undefined;
    const t = setTimeout(() => {
      ctrl?.abort();
      reject(new Error(`watch timed out; got ${JSON.stringify(events.map((e) => e.type))}`));
    }, timeoutMs);
    void new Watch(kc)
      .watch(
        path,
        query,
        (type, obj) => {
          events.push({ type, obj });
          if (until(events)) {
            clearTimeout(t);
            ctrl?.abort();
            resolve({ events, doneErr: undefined, ended: false });
          }
        },
        (err) => {
          clearTimeout(t);
          resolve({ events, doneErr: err, ended: true });
        },
      )
      .then((c) => (ctrl = c));
  });
}

describe('fake kube-apiserver with the real client', { timeout: 20000 }, () => {
  let fake: FakeKube;
  let kc: KubeConfig;
  let rootCa: CertificateAuthority;

  before(async () => {
    fake = await startFakeKubeApiServer({
      clusterTrustBundleVersions: ['v1beta1', 'v1'],
      bookmarkIntervalMs: 200,
      users: {
        reader: { rules: [{ apiGroups: [''], resources: ['secrets'], verbs: ['get', 'list'] }] },
        ctbwriter: { rules: [{ apiGroups: ['certificates.k8s.io'], resources: ['clustertrustbundles'], verbs: ['create', 'get', 'list', 'watch', 'update'] }] },
        attester: {
          rules: [
            { apiGroups: ['certificates.k8s.io'], resources: ['clustertrustbundles'], verbs: ['create', 'get', 'list', 'watch', 'update'] },
            { apiGroups: ['certificates.k8s.io'], resources: ['signers'], verbs: ['attest'], resourceNames: ['example.com/*'] },
          ],
        },
        requester: { rules: [{ apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests'], verbs: ['create', 'get', 'list', 'watch'] }] },
        approver: {
          rules: [
            { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests'], verbs: ['get', 'list', 'watch'] },
            { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests/approval'], verbs: ['update'] },
          ],
        },
        reviewer: { rules: [{ apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] }] },
      },
      tokens: {
        'good-token': { username: 'system:serviceaccount:default:app', uid: 'u-1', groups: ['system:serviceaccounts'], audiences: ['meshca'] },
        'old-token': { username: 'system:serviceaccount:default:app', audiences: ['meshca'], expiresAt: new Date(Date.now() - 1000) },
      },
    });
    kc = fake.kubeConfig();
    rootCa = await createCa({ commonName: 'test root', notBefore: new Date(Date.now() - 60000), notAfter: new Date(Date.now() + 86400000) });
  });
  after(async () => {
    await fake.close();
  });

  it('creates, reads, lists with selectors, updates and deletes a Secret', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    const created = await core.createNamespacedSecret({ namespace: 'ns1', body: { metadata: { name: 's1', labels: { app: 'meshca' } }, stringData: { k: 'v' } } });
    assert.equal(created.metadata?.namespace, 'ns1');
    assert.match(created.metadata?.uid ?? '', /^[0-9a-f-]{36}$/);
    assert.match(created.metadata?.resourceVersion ?? '', /^\d+$/);
    assert.equal(created.type, 'Opaque');
    assert.equal(created.data?.k, b64('v'));
    const gen = await core.createNamespacedSecret({ namespace: 'ns1', body: { metadata: { generateName: 'gen-' }, data: { a: b64('x') } } });
    assert.match(gen.metadata?.name ?? '', /^gen-[a-z0-9]{5}$/);
    const list = await core.listNamespacedSecret({ namespace: 'ns1', labelSelector: 'app=meshca' });
    assert.deepEqual(list.items.map((s) => s.metadata?.name), ['s1']);
    assert.match(list.metadata?.resourceVersion ?? '', /^\d+$/);
    const byName = await core.listNamespacedSecret({ namespace: 'ns1', fieldSelector: `metadata.name=${gen.metadata?.name}` });
    assert.equal(byName.items.length, 1);
    const got = await core.readNamespacedSecret({ name: 's1', namespace: 'ns1' });
    got.data = { k: b64('v2') };
    const upd = await core.replaceNamespacedSecret({ name: 's1', namespace: 'ns1', body: got });
    assert.notEqual(upd.metadata?.resourceVersion, got.metadata?.resourceVersion);
    const del = await core.deleteNamespacedSecret({ name: 's1', namespace: 'ns1' });
    assert.equal(del.status, 'Success');
    const nf = await rejection(core.readNamespacedSecret({ name: 's1', namespace: 'ns1' }));
    assert.equal(nf.code, 404);
    assert.equal(nf.reason, 'NotFound');
    assert.equal(nf.message, 'secrets "s1" not found');
  });

  it('answers 409 AlreadyExists and 409 Conflict on a stale resourceVersion', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    const cm = await core.createNamespacedConfigMap({ namespace: 'ns1', body: { metadata: { name: 'c1' }, data: { a: '1' } } });
    const dup = await rejection(core.createNamespacedConfigMap({ namespace: 'ns1', body: { metadata: { name: 'c1' } } }));
    assert.equal(dup.code, 409);
    assert.equal(dup.reason, 'AlreadyExists');
    await core.replaceNamespacedConfigMap({ name: 'c1', namespace: 'ns1', body: { ...cm, data: { a: '2' } } });
    const stale = await rejection(core.replaceNamespacedConfigMap({ name: 'c1', namespace: 'ns1', body: { ...cm, data: { a: '3' } } }));
    assert.equal(stale.code, 409);
    assert.equal(stale.reason, 'Conflict');
    assert.match(stale.message, /^Operation cannot be fulfilled on configmaps "c1": the object has been modified/);
  });

  it('applies merge and JSON patches and answers 415 for server-side apply', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    await core.createNamespacedConfigMap({ namespace: 'ns1', body: { metadata: { name: 'p1' }, data: { a: '1' } } });
    const merged = await core.patchNamespacedConfigMap({ name: 'p1', namespace: 'ns1', body: { data: { b: '2' } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    assert.deepEqual(merged.data, { a: '1', b: '2' });
    const jp = await core.patchNamespacedConfigMap({ name: 'p1', namespace: 'ns1', body: [{ op: 'remove', path: '/data/a' }] });
    assert.deepEqual(jp.data, { b: '2' });
    const bad = await rejection(core.patchNamespacedConfigMap({ name: 'p1', namespace: 'ns1', body: { data: {} } }, setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply)));
    assert.equal(bad.code, 415);
  });

  it('forbids what the RBAC table does not grant, with the real message', async () => {
    const core = fake.kubeConfig('reader').makeApiClient(CoreV1Api);
    await core.listNamespacedSecret({ namespace: 'ns1' });
    const f = await rejection(core.createNamespacedSecret({ namespace: 'ns1', body: { metadata: { name: 'x' } } }));
    assert.equal(f.code, 403);
    assert.equal(f.reason, 'Forbidden');
    assert.equal(f.message, 'secrets is forbidden: User "reader" cannot create resource "secrets" in API group "" in the namespace "ns1"');
    const g = await rejection(core.readNamespacedConfigMap({ name: 'c1', namespace: 'ns1' }));
    assert.equal(g.message, 'configmaps "c1" is forbidden: User "reader" cannot get resource "configmaps" in API group "" in the namespace "ns1"');
    const unauth = new KubeConfig();
    unauth.loadFromOptions({ clusters: [{ name: 'c', server: fake.url, skipTLSVerify: true }], users: [{ name: 'u', token: 'nope' }], contexts: [{ name: 'c', cluster: 'c', user: 'u' }], currentContext: 'c' });
    const u = await rejection(unauth.makeApiClient(CoreV1Api).listNamespacedSecret({ namespace: 'ns1' }));
    assert.equal(u.code, 401);
  });

  it('rejects a Lease with a plain Date (3 fractional digits) and accepts V1MicroTime', async () => {
    const coord = kc.makeApiClient(CoordinationV1Api);
    const bad = await rejection(
      coord.createNamespacedLease({ namespace: 'ns1', body: { metadata: { name: 'l1' }, spec: { holderIdentity: 'a', leaseDurationSeconds: 15, renewTime: new Date() as V1MicroTime } } }),
    );
    assert.equal(bad.code, 400);
    assert.equal(bad.reason, 'BadRequest');
    assert.match(bad.message, /as "2006-01-02T15:04:05\.000000Z07:00"/);
    const t = new V1MicroTime();
    const ok = await coord.createNamespacedLease({ namespace: 'ns1', body: { metadata: { name: 'l1' }, spec: { holderIdentity: 'a', leaseDurationSeconds: 15, acquireTime: t, renewTime: t } } });
    assert.equal(ok.spec?.holderIdentity, 'a');
    const zero = await rejection(coord.replaceNamespacedLease({ name: 'l1', namespace: 'ns1', body: { ...ok, spec: { ...ok.spec, leaseDurationSeconds: 0 } } }));
    assert.equal(zero.code, 422);
    assert.match(zero.message, /spec\.leaseDurationSeconds: Invalid value: 0: must be greater than 0/);
  });

  it('streams watch events and bookmarks, and answers 410 Expired for a compacted resourceVersion', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    const list = await core.listNamespacedConfigMap({ namespace: 'w' });
    const rv = list.metadata!.resourceVersion!;
    const watching = collectWatch(kc, '/api/v1/namespaces/w/configmaps', { resourceVersion: rv, allowWatchBookmarks: true }, (evs) =>
      ['ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK'].every((t) => evs.some((e) => e.type === t)),
    );
    await new Promise((r) => setTimeout(r, 50));
    const cm = await core.createNamespacedConfigMap({ namespace: 'w', body: { metadata: { name: 'wc' }, data: { a: '1' } } });
    await core.replaceNamespacedConfigMap({ name: 'wc', namespace: 'w', body: { ...cm, data: { a: '2' } } });
    await core.deleteNamespacedConfigMap({ name: 'wc', namespace: 'w' });
    fake.sendBookmarks();
    const { events } = await watching;
    const kinds = events.filter((e) => e.type !== 'BOOKMARK').map((e) => e.type);
    assert.deepEqual(kinds, ['ADDED', 'MODIFIED', 'DELETED']);
    const bm = events.find((e) => e.type === 'BOOKMARK')!;
    assert.match(bm.obj.metadata.resourceVersion, /^\d+$/);
    assert.equal(bm.obj.kind, 'ConfigMap');

    // A watch from the old resourceVersion replays history; after compaction it gets ERROR 410 and ends.
    fake.compactHistory();
    const expired = await collectWatch(kc, '/api/v1/namespaces/w/configmaps', { resourceVersion: rv }, () => false);
    assert.equal(expired.ended, true);
    assert.equal(expired.events[0]?.type, 'ERROR');
    assert.equal(expired.events[0]?.obj.code, 410);
    assert.equal(expired.events[0]?.obj.reason, 'Expired');
    // Re-list and re-watch from the new resourceVersion works.
    const relist = await core.listNamespacedConfigMap({ namespace: 'w' });
    const again = collectWatch(kc, '/api/v1/namespaces/w/configmaps', { resourceVersion: relist.metadata!.resourceVersion! }, (evs) => evs.some((e) => e.type === 'ADDED'));
    await new Promise((r) => setTimeout(r, 50));
    await core.createNamespacedConfigMap({ namespace: 'w', body: { metadata: { name: 'wc2' } } });
    assert.equal((await again).events[0]?.obj.metadata.name, 'wc2');
  });

  it('ends watches on timeoutSeconds, on dropWatches and on close', async () => {
    const t0 = Date.now();
    const timed = await collectWatch(kc, '/api/v1/namespaces/w/secrets', { timeoutSeconds: 1 }, () => false);
    assert.equal(timed.ended, true);
    assert.ok(Date.now() - t0 >= 900);
    const dropped = collectWatch(kc, '/api/v1/namespaces/w/secrets', {}, () => false);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(fake.dropWatches(), 1);
    assert.equal((await dropped).ended, true);
  });

  it('injects failures and logs requests', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    fake.failNext(1, { code: 503, reason: 'ServiceUnavailable', match: (r) => r.resource === 'secrets' && r.verb === 'list' });
    const e = await rejection(core.listNamespacedSecret({ namespace: 'ns1' }));
    assert.equal(e.code, 503);
    await core.listNamespacedSecret({ namespace: 'ns1' });
    const last = fake.requests[fake.requests.length - 1]!;
    assert.equal(last.verb, 'list');
    assert.equal(last.status, 200);
    assert.equal(last.user, 'admin');
  });
});
