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
import { createCa, createTestCsr, parsePemBlocks, type CertificateAuthority } from '../../fakes/kube/pki.js';
import { startFakeCertManagerController } from '../../fakes/cert-manager-controller.js';
import { startFakeCsrSigner } from '../../fakes/csr-signer.js';
import { X509Certificate } from 'node:crypto';

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

  it('serves ClusterTrustBundles at v1beta1 (typed client) and v1 (custom objects) and reflects served versions in discovery', async () => {
    const beta = kc.makeApiClient(CertificatesV1beta1Api);
    const created = await beta.createClusterTrustBundle({ body: { metadata: { name: 'unlinked-a' }, spec: { trustBundle: rootCa.certPem } } });
    assert.equal(created.apiVersion, 'certificates.k8s.io/v1beta1');
    const custom = kc.makeApiClient(CustomObjectsApi);
    const v1 = (await custom.getClusterCustomObject({ group: 'certificates.k8s.io', version: 'v1', plural: 'clustertrustbundles', name: 'unlinked-a' })) as any;
    assert.equal(v1.apiVersion, 'certificates.k8s.io/v1');
    assert.equal(v1.spec.trustBundle, rootCa.certPem);
    const kcAdmin = kc;
    const disc = async (path: string): Promise<number> => {
      const opts = await kcAdmin.applyToFetchOptions({});
      const r = await fetch(fake.url + path, { headers: opts.headers as any });
      await r.body?.cancel();
      return r.status;
    };
    assert.equal(await disc('/apis/certificates.k8s.io/v1beta1'), 200);
    fake.setClusterTrustBundleVersions(['v1']);
    try {
      assert.equal(await disc('/apis/certificates.k8s.io/v1beta1'), 404);
      const gone = await rejection(beta.listClusterTrustBundle({}));
      assert.equal(gone.code, 404);
      assert.equal(await disc('/apis/certificates.k8s.io/v1'), 200);
    } finally {
      fake.setClusterTrustBundleVersions(['v1beta1', 'v1']);
    }
  });

  it('rejects invalid trust bundles and names with 422', async () => {
    const beta = kc.makeApiClient(CertificatesV1beta1Api);
    const leafCsr = await createTestCsr({ uris: ['spiffe://td/x'] });
    const leafCa = await createCa({ commonName: 'other', notBefore: new Date(Date.now() - 1000), notAfter: new Date(Date.now() + 86400000) });
    const cases: Array<[string, any, RegExp]> = [
      ['empty', { metadata: { name: 'b1' }, spec: { trustBundle: '' } }, /spec\.trustBundle: Required value/],
      ['not a certificate block', { metadata: { name: 'b2' }, spec: { trustBundle: leafCsr.pem } }, /entry 0 has bad block type: CERTIFICATE REQUEST/],
      ['duplicate', { metadata: { name: 'b3' }, spec: { trustBundle: rootCa.certPem + rootCa.certPem } }, /duplicate trust anchor/],
      ['headers', { metadata: { name: 'b4' }, spec: { trustBundle: rootCa.certPem.replace('-----\n', '-----\nProc-Type: 4,ENCRYPTED\n\n') } }, /entry 0 has PEM block headers/],
      ['colon in unlinked name', { metadata: { name: 'a:b' }, spec: { trustBundle: rootCa.certPem } }, /without signer name must not have ":"/],
      ['wrong signer prefix', { metadata: { name: 'example.com:other:live' }, spec: { signerName: 'example.com/mysigner', trustBundle: rootCa.certPem } }, /must be named with prefix example\.com:mysigner:/],
    ];
    for (const [what, body, re] of cases) {
      const e = await rejection(beta.createClusterTrustBundle({ body }));
      assert.equal(e.code, 422, what);
      assert.equal(e.reason, 'Invalid', what);
      assert.match(e.message, re, what);
    }
    // A leaf (CA:false) certificate is not a trust anchor.
    const leafPem = await (async () => {
      const s = await startFakeCsrSigner(fake, { signerName: 'example.net/leafmaker', behaviour: { autoApprove: true } });
      const csr = await createTestCsr({ uris: ['spiffe://td/leaf'] });
      await kc.makeApiClient(CertificatesV1Api).createCertificateSigningRequest({ body: { metadata: { name: 'leafmaker-1' }, spec: { request: b64(csr.pem), signerName: 'example.net/leafmaker', usages: ['digital signature'] } } });
      await waitFor(async () => Boolean((await kc.makeApiClient(CertificatesV1Api).readCertificateSigningRequest({ name: 'leafmaker-1' })).status?.certificate));
      s.close();
      const c = await kc.makeApiClient(CertificatesV1Api).readCertificateSigningRequest({ name: 'leafmaker-1' });
      return Buffer.from(c.status!.certificate!, 'base64').toString();
    })();
    const notCa = await rejection(beta.createClusterTrustBundle({ body: { metadata: { name: 'b5' }, spec: { trustBundle: leafPem } } }));
    assert.match(notCa.message, /entry 0 does not have the CA bit set/);
    // signerName is immutable.
    const ok = await beta.createClusterTrustBundle({ body: { metadata: { name: 'example.com:mysigner:live' }, spec: { signerName: 'example.com/mysigner', trustBundle: leafCa.certPem } } });
    const imm = await rejection(beta.replaceClusterTrustBundle({ name: 'example.com:mysigner:live', body: { ...ok, spec: { ...ok.spec, signerName: 'example.com/other' } } }));
    assert.equal(imm.code, 422);
    assert.match(imm.message, /spec\.signerName: Invalid value: "example\.com\/other": field is immutable/);
  });

  it('requires attest on signers for signer-linked ClusterTrustBundles', async () => {
    const body = { metadata: { name: 'example.com:attested:live' }, spec: { signerName: 'example.com/attested', trustBundle: rootCa.certPem } };
    const noAttest = await rejection(fake.kubeConfig('ctbwriter').makeApiClient(CertificatesV1beta1Api).createClusterTrustBundle({ body }));
    assert.equal(noAttest.code, 403);
    assert.equal(noAttest.message, 'clustertrustbundles.certificates.k8s.io "example.com:attested:live" is forbidden: user not permitted to attest for signerName "example.com/attested"');
    const unlinked = await fake.kubeConfig('ctbwriter').makeApiClient(CertificatesV1beta1Api).createClusterTrustBundle({ body: { metadata: { name: 'plain-by-writer' }, spec: { trustBundle: rootCa.certPem } } });
    assert.equal(unlinked.metadata?.name, 'plain-by-writer');
    const custom = fake.kubeConfig('attester').makeApiClient(CustomObjectsApi);
    const made = (await custom.createClusterCustomObject({ group: 'certificates.k8s.io', version: 'v1', plural: 'clustertrustbundles', body: { apiVersion: 'certificates.k8s.io/v1', kind: 'ClusterTrustBundle', ...body } })) as any;
    assert.equal(made.metadata.name, 'example.com:attested:live');
    const bySigner = (await custom.listClusterCustomObject({ group: 'certificates.k8s.io', version: 'v1', plural: 'clustertrustbundles', fieldSelector: 'spec.signerName=example.com/attested' })) as any;
    assert.deepEqual(bySigner.items.map((i: any) => i.metadata.name), ['example.com:attested:live']);
    const noRv = await rejection(custom.replaceClusterCustomObject({ group: 'certificates.k8s.io', version: 'v1', plural: 'clustertrustbundles', name: made.metadata.name, body: { ...made, metadata: { name: made.metadata.name } } }));
    assert.equal(noRv.code, 422);
    assert.match(noRv.message, /metadata\.resourceVersion: Invalid value: 0x0: must be specified for an update/);
  });

  it('enforces CSR creation, approval and signing rules', async () => {
    const csrPem = (await createTestCsr({ uris: ['spiffe://td/ns/a/sa/b'] })).pem;
    const requester = fake.kubeConfig('requester').makeApiClient(CertificatesV1Api);
    const short = await rejection(requester.createCertificateSigningRequest({ body: { metadata: { name: 'r0' }, spec: { request: b64(csrPem), signerName: 'example.com/meshca', usages: ['digital signature'], expirationSeconds: 599 } } }));
    assert.equal(short.code, 422);
    assert.match(short.message, /spec\.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds/);
    const badSigner = await rejection(requester.createCertificateSigningRequest({ body: { metadata: { name: 'r0' }, spec: { request: b64(csrPem), signerName: 'meshca', usages: ['digital signature'] } } }));
    assert.match(badSigner.message, /spec\.signerName: Invalid value: "meshca": must be a fully qualified domain and path/);
    const notCsr = await rejection(requester.createCertificateSigningRequest({ body: { metadata: { name: 'r0' }, spec: { request: b64(rootCa.certPem), signerName: 'example.com/meshca', usages: ['digital signature'] } } }));
    assert.match(notCsr.message, /spec\.request: Invalid value/);
    const csr = await requester.createCertificateSigningRequest({
      body: { metadata: { name: 'r1' }, spec: { request: b64(csrPem), signerName: 'example.com/meshca', usages: ['digital signature', 'client auth'], expirationSeconds: 3600, username: 'someone-else' } },
    });
    assert.equal(csr.spec.username, 'requester', 'the server sets the requester identity');

    // Approving needs update on /approval AND approve on signers.
    const approver = fake.kubeConfig('approver').makeApiClient(CertificatesV1Api);
    const approved = { ...csr, status: { conditions: [{ type: 'Approved', status: 'True', reason: 'Test', message: 'ok' }] } };
    const noVerb = await rejection(approver.replaceCertificateSigningRequestApproval({ name: 'r1', body: approved }));
    assert.equal(noVerb.code, 403);
    assert.equal(noVerb.message, 'certificatesigningrequests.certificates.k8s.io "r1" is forbidden: user not permitted to approve requests with signerName "example.com/meshca"');
    const noSub = await rejection(requester.replaceCertificateSigningRequestApproval({ name: 'r1', body: approved }));
    assert.match(noSub.message, /cannot update resource "certificatesigningrequests\/approval" in API group "certificates\.k8s\.io" at the cluster scope/);
    fake.addUser('approver2', {
      rules: [
        { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests/approval'], verbs: ['update'] },
        { apiGroups: ['certificates.k8s.io'], resources: ['signers'], verbs: ['approve'], resourceNames: ['example.com/*'] },
      ],
    });
    const approver2 = fake.kubeConfig('approver2').makeApiClient(CertificatesV1Api);
    const falseStatus = await rejection(approver2.replaceCertificateSigningRequestApproval({ name: 'r1', body: { ...csr, status: { conditions: [{ type: 'Approved', status: 'False', reason: 'x', message: 'x' }] } } }));
    assert.equal(falseStatus.code, 422);
    assert.match(falseStatus.message, /status\.conditions\[0\]\.status: Unsupported value: "False": supported values: "True"/);
    const both = await rejection(approver2.replaceCertificateSigningRequestApproval({ name: 'r1', body: { ...csr, status: { conditions: [...approved.status.conditions, { type: 'Denied', status: 'True', reason: 'x', message: 'x' }] } } }));
    assert.match(both.message, /Approved and Denied conditions are mutually exclusive/);
    const ok = await approver2.replaceCertificateSigningRequestApproval({ name: 'r1', body: approved });
    assert.equal(ok.status?.conditions?.[0]?.type, 'Approved');
    assert.ok(ok.status?.conditions?.[0]?.lastUpdateTime);
    // A stale object gets 409, removing the condition 422.
    const stale = await rejection(approver2.replaceCertificateSigningRequestApproval({ name: 'r1', body: approved }));
    assert.equal(stale.code, 409);
    const removed = await rejection(approver2.replaceCertificateSigningRequestApproval({ name: 'r1', body: { ...ok, status: { conditions: [] } } }));
    assert.match(removed.message, /updates may not remove a condition of type "Approved"/);

    // Signing needs sign on signers; the certificate is immutable once set.
    const admin = kc.makeApiClient(CertificatesV1Api);
    fake.addUser('badsigner', { rules: [{ apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests/status'], verbs: ['update'] }] });
    const withCert = { ...ok, status: { ...ok.status, certificate: b64(rootCa.certPem) } };
    const noSign = await rejection(fake.kubeConfig('badsigner').makeApiClient(CertificatesV1Api).replaceCertificateSigningRequestStatus({ name: 'r1', body: withCert }));
    assert.match(noSign.message, /user not permitted to sign requests with signerName "example\.com\/meshca"/);
    const signed = await admin.replaceCertificateSigningRequestStatus({ name: 'r1', body: withCert });
    const other = await createCa({ commonName: 'x', notBefore: new Date(Date.now() - 1000), notAfter: new Date(Date.now() + 86400000) });
    const changed = await rejection(admin.replaceCertificateSigningRequestStatus({ name: 'r1', body: { ...signed, status: { ...signed.status, certificate: b64(other.certPem) } } }));
    assert.equal(changed.code, 422);
    assert.match(changed.message, /updates may not modify existing certificate content/);
  });

  it('reviews tokens: good, wrong audience, expired, unknown', async () => {
    const authn = fake.kubeConfig('reviewer').makeApiClient(AuthenticationV1Api);
    const good = await authn.createTokenReview({ body: { spec: { token: 'good-token', audiences: ['meshca'] } } });
    assert.equal(good.status?.authenticated, true);
    assert.equal(good.status?.user?.username, 'system:serviceaccount:default:app');
    assert.deepEqual(good.status?.audiences, ['meshca']);
    const wrong = await authn.createTokenReview({ body: { spec: { token: 'good-token', audiences: ['other'] } } });
    assert.notEqual(wrong.status?.authenticated, true);
    assert.match(wrong.status?.error ?? '', /invalid for the target audiences/);
    const expired = await authn.createTokenReview({ body: { spec: { token: 'old-token', audiences: ['meshca'] } } });
    assert.notEqual(expired.status?.authenticated, true);
    assert.match(expired.status?.error ?? '', /expired/);
    const unknown = await authn.createTokenReview({ body: { spec: { token: 'nope', audiences: ['meshca'] } } });
    assert.notEqual(unknown.status?.authenticated, true);
    const denied = await rejection(fake.kubeConfig('reader').makeApiClient(AuthenticationV1Api).createTokenReview({ body: { spec: { token: 'good-token' } } }));
    assert.equal(denied.code, 403);
  });

  it('runs a fake cert-manager controller that issues, denies and fails CertificateRequests', async () => {
    const cm = await startFakeCertManagerController(fake, { issuerRef: { name: 'mesh-ca' }, intermediate: true });
    try {
      const custom = kc.makeApiClient(CustomObjectsApi);
      const csr = await createTestCsr({ uris: ['spiffe://td/meshca'], isCA: true, usages: ['digital signature', 'cert sign', 'crl sign'] });
      const body = (name: string, extra: any = {}) => ({
        apiVersion: 'cert-manager.io/v1',
        kind: 'CertificateRequest',
        metadata: { name },
        spec: { request: b64(csr.pem), issuerRef: { name: 'mesh-ca', kind: 'Issuer', group: 'cert-manager.io' }, isCA: true, usages: ['digital signature', 'cert sign', 'crl sign'], duration: '24h0m0s', ...extra },
      });
      const cr = (await custom.createNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: 'meshca', plural: 'certificaterequests', body: body('cr1') })) as any;
      assert.equal(cr.spec.username, 'admin');
      const ready = await waitForCr(custom, 'cr1', (o) => o.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True'));
      assert.equal(ready.status.conditions.find((c: any) => c.type === 'Ready').reason, 'Issued');
      assert.ok(ready.status.conditions.some((c: any) => c.type === 'Approved' && c.status === 'True'));
      const chain = parsePemBlocks(Buffer.from(ready.status.certificate, 'base64').toString());
      assert.equal(chain.length, 2, 'leaf then intermediate');
      const leaf = new X509Certificate(chain[0]!.der);
      assert.equal(leaf.ca, true);
      assert.equal(leaf.subjectAltName, 'URI:spiffe://td/meshca');
      assert.ok(leaf.checkIssued(new X509Certificate(chain[1]!.der)));
      assert.equal(Buffer.from(ready.status.ca, 'base64').toString(), cm.rootPem);
      // The spec is immutable.
      const imm = await rejection(custom.replaceNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: 'meshca', plural: 'certificaterequests', name: 'cr1', body: { ...ready, spec: { ...ready.spec, duration: '1h0m0s' } } }));
      assert.equal(imm.code, 422);
      // Usages that differ from the CSR's KU/EKU are refused by the webhook at create (backends.md §2.1).
      const leafCsr = await createTestCsr({ uris: ['spiffe://td/x'], isCA: false, usages: ['digital signature'] });
      const mismatch = await rejection(
        custom.createNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: 'meshca', plural: 'certificaterequests', body: body('cr-usage', { request: b64(leafCsr.pem), isCA: false, usages: ['digital signature', 'server auth'] }) }),
      );
      assert.equal(mismatch.code, 422);
      assert.match(JSON.stringify(mismatch.body), /csr key usages do not match specified usages/);
      // The same CSR with its own usages is accepted.
      await custom.createNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: 'meshca', plural: 'certificaterequests', body: body('cr-usage', { request: b64(leafCsr.pem), isCA: false, usages: ['digital signature'] }) });
      await waitForCr(custom, 'cr-usage', (o) => o.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True'));
      cm.setBehaviour({ mode: 'deny' });
      await custom.createNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: 'meshca', plural: 'certificaterequests', body: body('cr2') });
      const denied = await waitForCr(custom, 'cr2', (o) => o.status?.conditions?.some((c: any) => c.type === 'Denied'));
      assert.equal(denied.status.conditions.find((c: any) => c.type === 'Ready').reason, 'Denied');
      assert.ok(denied.status.failureTime);
      cm.setBehaviour({ mode: 'fail', delayMs: 50, omitCa: true });
      await custom.createNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: 'meshca', plural: 'certificaterequests', body: body('cr3') });
      const failed = await waitForCr(custom, 'cr3', (o) => o.status?.conditions?.some((c: any) => c.type === 'Ready' && c.reason === 'Failed'));
      assert.ok(failed.status.failureTime);
      const del = (await custom.deleteNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: 'meshca', plural: 'certificaterequests', name: 'cr3' })) as any;
      assert.equal(del.kind, 'CertificateRequest');
      await cm.idle();
    } finally {
      cm.close();
    }
  });

  it("the fake cert-manager's built-in approver leaves an external issuer's requests to another approver", async () => {
    const ref = { name: 'pca', kind: 'AWSPCAIssuer', group: 'awspca.cert-manager.io' };
    const cm = await startFakeCertManagerController(fake, { issuerRef: ref });
    try {
      const custom = kc.makeApiClient(CustomObjectsApi);
      const csr = await createTestCsr({ uris: ['spiffe://td/meshca'], isCA: true, usages: ['digital signature', 'cert sign', 'crl sign'] });
      await custom.createNamespacedCustomObject({
        group: 'cert-manager.io',
        version: 'v1',
        namespace: 'meshca',
        plural: 'certificaterequests',
        body: { apiVersion: 'cert-manager.io/v1', kind: 'CertificateRequest', metadata: { name: 'ext1' }, spec: { request: b64(csr.pem), issuerRef: ref, isCA: true, usages: ['digital signature', 'cert sign', 'crl sign'] } },
      });
      await new Promise((r) => setTimeout(r, 300));
      await cm.idle();
      const o = (await custom.getNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: 'meshca', plural: 'certificaterequests', name: 'ext1' })) as any;
      assert.ok(!(o.status?.conditions ?? []).some((c: any) => c.type === 'Approved'), 'not approved by the built-in approver');
      assert.equal(o.status?.certificate, undefined);
      assert.deepEqual(cm.handled, []);
    } finally {
      cm.close();
    }
  });

  it('runs a fake CSR signer that honours expirationSeconds and publishes a signer-linked bundle', async () => {
    const signer = await startFakeCsrSigner(fake, { signerName: 'example.org/meshca', behaviour: { autoApprove: true }, trustBundle: { version: 'v1' } });
    try {
      const custom = kc.makeApiClient(CustomObjectsApi);
      const ctb = (await custom.getClusterCustomObject({ group: 'certificates.k8s.io', version: 'v1', plural: 'clustertrustbundles', name: 'example.org:meshca:live' })) as any;
      assert.equal(ctb.spec.trustBundle, signer.ca.certPem);
      const certs = kc.makeApiClient(CertificatesV1Api);
      const csr = await createTestCsr({ uris: ['spiffe://td/ns/a/sa/b'] });
      const list0 = await certs.listCertificateSigningRequest({ fieldSelector: 'spec.signerName=example.org/meshca' });
      const watching = collectWatch(kc, '/apis/certificates.k8s.io/v1/certificatesigningrequests', { resourceVersion: list0.metadata!.resourceVersion!, fieldSelector: 'metadata.name=s1' }, (evs) =>
        evs.some((e) => Boolean(e.obj?.status?.certificate)),
      );
      await certs.createCertificateSigningRequest({ body: { metadata: { name: 's1' }, spec: { request: b64(csr.pem), signerName: 'example.org/meshca', usages: ['digital signature', 'client auth', 'server auth'], expirationSeconds: 3600 } } });
      const { events } = await watching;
      const done = events.find((e) => e.obj?.status?.certificate)!.obj;
      const cert = new X509Certificate(Buffer.from(done.status.certificate, 'base64'));
      const life = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 1000;
      assert.ok(life >= 3600 && life <= 3600 + 31, `lifetime ${life}`);
      assert.ok(cert.checkIssued(new X509Certificate(signer.ca.certPem)));
      const old = signer.ca.certPem;
      await signer.rotateCa();
      const after = (await custom.getClusterCustomObject({ group: 'certificates.k8s.io', version: 'v1', plural: 'clustertrustbundles', name: 'example.org:meshca:live' })) as any;
      assert.equal(after.spec.trustBundle, old + signer.ca.certPem);
      signer.setBehaviour({ mode: 'fail' });
      await certs.createCertificateSigningRequest({ body: { metadata: { name: 's2' }, spec: { request: b64(csr.pem), signerName: 'example.org/meshca', usages: ['digital signature'] } } });
      await waitFor(async () => Boolean((await certs.readCertificateSigningRequest({ name: 's2' })).status?.conditions?.some((c) => c.type === 'Failed')));
      await signer.idle();
    } finally {
      signer.close();
    }
  });

  it('decodes bodies strictly: unknown fields 400 (Strict, the default) or dropped with a Warning (Warn); wrong types 400/422', async () => {
    const raw = (method: string, path: string, body: unknown) =>
      fetch(`${fake.url}${path}`, { method, headers: { authorization: 'Bearer admin-token', 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const csr = await createTestCsr({ commonName: 'strict' });
    const csrBody = (spec: Record<string, unknown>) => ({
      apiVersion: 'certificates.k8s.io/v1',
      kind: 'CertificateSigningRequest',
      metadata: { generateName: 'strict-' },
      spec: { request: b64(csr.pem), signerName: 'example.com/meshca', usages: ['digital signature'], ...spec },
    });
    const unknown = await raw('POST', '/apis/certificates.k8s.io/v1/certificatesigningrequests', csrBody({ expirationSecond: 600 }));
    assert.equal(unknown.status, 400);
    const u = (await unknown.json()) as any;
    assert.equal(u.reason, 'BadRequest');
    assert.equal(u.message, 'CertificateSigningRequest in version "certificates.k8s.io/v1" cannot be handled as a CertificateSigningRequest: strict decoding error: unknown field "spec.expirationSecond"');
    const warned = await raw('POST', '/apis/certificates.k8s.io/v1/certificatesigningrequests?fieldValidation=Warn', csrBody({ expirationSecond: 600 }));
    assert.equal(warned.status, 201);
    assert.equal(warned.headers.get('warning'), '299 - "unknown field \\"spec.expirationSecond\\""');
    const w = (await warned.json()) as any;
    assert.equal(w.spec.expirationSecond, undefined, 'the unknown field is dropped');
    assert.deepEqual(fake.requests[fake.requests.length - 1]!.warnings, ['unknown field "spec.expirationSecond"']);
    assert.equal((fake.requests[fake.requests.length - 1]!.body as any).spec.expirationSecond, 600, 'the log keeps the body as sent');
    const wrongType = await raw('POST', '/apis/certificates.k8s.io/v1/certificatesigningrequests', csrBody({ expirationSeconds: '600' }));
    assert.equal(wrongType.status, 400);
    assert.match(((await wrongType.json()) as any).message, /json: cannot unmarshal string into Go struct field CertificateSigningRequestSpec\.spec\.expirationSeconds of type int32$/);
    const badFv = await raw('POST', '/api/v1/namespaces/ns1/configmaps?fieldValidation=strict', { metadata: { name: 'fv' } });
    assert.equal(badFv.status, 400);
    const crType = await raw('POST', '/apis/cert-manager.io/v1/namespaces/meshca/certificaterequests', {
      apiVersion: 'cert-manager.io/v1',
      kind: 'CertificateRequest',
      metadata: { generateName: 'strict-' },
      spec: { request: b64(csr.pem), issuerRef: { name: 'ca' }, isCA: 'false' },
    });
    assert.equal(crType.status, 422);
    const c = (await crType.json()) as any;
    assert.equal(c.reason, 'Invalid');
    assert.equal(c.details.causes[0].field, 'spec.isCA');
    assert.match(c.message, /spec\.isCA in body must be of type boolean/);
    const badTime = await raw('POST', '/api/v1/namespaces/ns1/configmaps', { metadata: { name: 'bad-time', creationTimestamp: 'yesterday' } });
    assert.equal(badTime.status, 400);
    assert.match(((await badTime.json()) as any).message, /parsing time "yesterday" as "2006-01-02T15:04:05Z07:00"/);
    const leaseMeta = await raw('POST', '/apis/coordination.k8s.io/v1/namespaces/ns1/leases', { metadata: { name: 'l-strict', labels: 'x' }, spec: {} });
    assert.equal(leaseMeta.status, 400);
    assert.match(((await leaseMeta.json()) as any).message, /cannot unmarshal string into Go struct field ObjectMeta\.metadata\.labels of type map\[string\]string/);
  });

  it('serves Namespaces (cluster-scoped) for listing by label, with status.phase set by the server', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'team-a', labels: { mesh: 'on' } } } });
    await core.createNamespace({ body: { metadata: { name: 'team-b' } } });
    const sel = await core.listNamespace({ labelSelector: 'mesh=on' });
    assert.deepEqual(sel.items.map((n) => n.metadata?.name), ['team-a']);
    assert.equal(sel.items[0]!.status?.phase, 'Active');
    await core.createNamespace({ body: { metadata: { name: 'team-gone' }, status: { phase: 'Terminating' } } });
    const term = await rejection(core.createNamespacedConfigMap({ namespace: 'team-gone', body: { metadata: { name: 'late' } } }));
    assert.equal(term.code, 403);
    assert.equal(term.message, 'configmaps "late" is forbidden: unable to create new content in namespace team-gone because it is being terminated');
    const bad = await rejection(core.createNamespace({ body: { metadata: { name: 'Team_C' } } }));
    assert.equal(bad.code, 422);
    assert.equal(fake.requests[fake.requests.length - 1]!.path, '/api/v1/namespaces');
  });

  it('authorises list and watch with a metadata.name field selector against resourceNames, like the real server', async () => {
    fake.addUser('named', { rules: [{ apiGroups: [''], resources: ['secrets'], verbs: ['get', 'list', 'watch'], resourceNames: ['only-me'], namespaces: ['ns1'] }] });
    const core = fake.kubeConfig('named').makeApiClient(CoreV1Api);
    await fake.api.create('secrets', { metadata: { name: 'only-me' } }, { namespace: 'ns1' });
    const l = await core.listNamespacedSecret({ namespace: 'ns1', fieldSelector: 'metadata.name=only-me' });
    assert.deepEqual(l.items.map((i) => i.metadata?.name), ['only-me']);
    const all = await rejection(core.listNamespacedSecret({ namespace: 'ns1' }));
    assert.equal(all.code, 403);
    const other = await rejection(core.listNamespacedSecret({ namespace: 'ns1', fieldSelector: 'metadata.name=someone-else' }));
    assert.equal(other.code, 403);
    const w = await collectWatch(fake.kubeConfig('named'), '/api/v1/namespaces/ns1/secrets', { fieldSelector: 'metadata.name=only-me' }, (evs) => evs.length >= 1);
    assert.equal(w.events[0]!.type, 'ADDED');
    const denied = await fetch(`${fake.url}/api/v1/namespaces/ns1/secrets?watch=true`, { headers: { authorization: 'Bearer named-token' } });
    assert.equal(denied.status, 403);
  });

  it('checks list and watch options like ValidateListOptions (422 ListOptions invalid)', async () => {
    const get = async (q: string) => {
      const r = await fetch(`${fake.url}/api/v1/namespaces/ns1/configmaps?${q}`, { headers: { authorization: 'Bearer admin-token' } });
      return { status: r.status, body: (await r.json()) as any };
    };
    const noRv = await get('resourceVersionMatch=NotOlderThan');
    assert.equal(noRv.status, 422);
    assert.equal(noRv.body.message, 'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided');
    assert.equal((await get('resourceVersion=0&resourceVersionMatch=Exact')).status, 422);
    assert.equal((await get('resourceVersion=1&resourceVersionMatch=Newest')).status, 422);
    assert.equal((await get('resourceVersion=1&resourceVersionMatch=NotOlderThan')).status, 200);
    const watchMatch = await get('watch=true&resourceVersionMatch=NotOlderThan&resourceVersion=1');
    assert.equal(watchMatch.status, 422);
    assert.match(watchMatch.body.message, /resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided/);
    assert.equal((await get('sendInitialEvents=true')).status, 422);
    assert.equal((await get('watch=true&timeoutSeconds=1.5')).status, 400);
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

async function waitFor(check: () => Promise<boolean>, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) assert.fail('condition not reached in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function waitForCr(custom: CustomObjectsApi, name: string, pred: (o: any) => boolean): Promise<any> {
  let last: any;
  await waitFor(async () => {
    last = await custom.getNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: 'meshca', plural: 'certificaterequests', name });
    return pred(last);
  });
  return last;
}
