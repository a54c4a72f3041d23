// The cluster-trust-bundle backend with the real @kubernetes/client-node against the strict fake API server and a
// fake CSR signer: signing through CertificateSigningRequests (self-approved or approved by the signer), denial,
// failure, timeouts, RBAC errors, v1 vs v1beta1 ClusterTrustBundle detection, anchors watched, API outages.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { startFakeKubeApiServer, type FakeKube, type Obj } from '../fakes/kube-apiserver.js';
import { startFakeCsrSigner, type FakeCsrSigner } from '../fakes/csr-signer.js';
import { clusterTrustBundleConfigSchema, type ClusterTrustBundleConfig } from '../../providers/cluster-trust-bundle/config.js';
import { createClusterTrustBundleBackend, type ClusterTrustBundleBackend } from '../../providers/cluster-trust-bundle/backend.js';
import { CaError } from '../../src/util/errors.js';
import { pemToDers } from '../../src/x509/pem.js';
import { eventually, intermediateCsr, leafCsr, testContext } from '../unit/kube/csr-helpers.js';
import { ManualClock } from '../fakes/clock.js';

const TD = 'example.org';
const SIGNER = 'example.com/meshca';
const CSR_RULES = [
  { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests'], verbs: ['create', 'get', 'list', 'watch', 'delete'] },
  { apiGroups: ['certificates.k8s.io'], resources: ['clustertrustbundles'], verbs: ['get', 'list', 'watch'] },
];
const APPROVE_RULES = [
  { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests/approval'], verbs: ['update'] },
  { apiGroups: ['certificates.k8s.io'], resources: ['signers'], verbs: ['approve'], resourceNames: [SIGNER] },
];

function config(over: Record<string, unknown> = {}): ClusterTrustBundleConfig {
  return clusterTrustBundleConfigSchema.parse({ signerName: SIGNER, requestTimeout: '5s', ...over });
}

async function rejection(p: Promise<unknown>): Promise<CaError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof CaError, `expected CaError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected a rejection');
}

describe('cluster-trust-bundle backend', { timeout: 30000 }, () => {
  let fake: FakeKube;
  let signer: FakeCsrSigner;
  const backends: ClusterTrustBundleBackend[] = [];

  before(async () => {
    fake = await startFakeKubeApiServer({
      clusterTrustBundleVersions: ['v1beta1'],
      users: {
        meshca: { rules: [...CSR_RULES, ...APPROVE_RULES] },
        noapprove: { rules: [...CSR_RULES, { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests/approval'], verbs: ['update'] }] },
      },
    });
    signer = await startFakeCsrSigner(fake, { signerName: SIGNER, trustBundle: { version: 'v1beta1', labels: { 'meshca.io/bundle': 'live' } } });
  });
  afterEach(async () => {
    signer.setBehaviour({ mode: 'sign', autoApprove: false, delayMs: 0 });
    fake.setClusterTrustBundleVersions(['v1beta1']);
    await signer.idle();
    for (const b of backends.splice(0)) await b.close();
  });
  after(async () => {
    signer.close();
    await fake.close();
  });

  async function backend(over: Record<string, unknown> = {}, user = 'meshca', ctx = testContext(TD)): Promise<ClusterTrustBundleBackend> {
    const b = createClusterTrustBundleBackend(config(over), ctx, { kubeConfig: fake.kubeConfig(user) });
    backends.push(b);
    await b.init();
    return b;
  }

  async function leftovers(): Promise<Obj[]> {
    return (await fake.api.list('certificatesigningrequests')).items;
  }

  it('ok/intermediate: self-approved CSR, v1beta1 detected, anchors from the signer-linked bundle, CSR deleted', async () => {
    const b = await backend({ approve: true });
    assert.equal(b.ctbVersion(), 'v1beta1');
    assert.deepEqual(await b.trustAnchors(), pemToDers(signer.bundlePem()));
    const created: Obj[] = [];
    const h = fake.api.watch('certificatesigningrequests', (t, o) => t === 'ADDED' && created.push(o));
    const csr = await intermediateCsr(TD);
    const out = await b.mintIntermediate({ ...csr, ttlSeconds: 48 * 3600 });
    h.stop();
    const cert = new X509Certificate(out.chain[0]!);
    assert.ok(cert.ca);
    assert.ok(cert.publicKey.equals(csr.publicKey));
    assert.deepEqual(out.roots, pemToDers(signer.bundlePem()));
    const spec = created[0]!.spec;
    assert.equal(spec.signerName, SIGNER);
    assert.equal(spec.expirationSeconds, 48 * 3600);
    assert.deepEqual(spec.usages, ['cert sign', 'crl sign']);
    assert.equal(spec.username, 'meshca');
    assert.equal(created[0]!.metadata.labels['meshca.io/trust-domain'], TD);
    assert.deepEqual(await leftovers(), []);
  });

  it('ok/leaf: approved by the signer, leaf usages, expirationSeconds at least 600', async () => {
    signer.setBehaviour({ autoApprove: true });
    const b = await backend({ mode: 'leaf' });
    const created: Obj[] = [];
    const h = fake.api.watch('certificatesigningrequests', (t, o) => t === 'ADDED' && created.push(o));
    const id = `spiffe://${TD}/ns/default/sa/web`;
    const out = await b.signLeaf({ ...(await leafCsr(id)), spiffeId: id, dnsNames: [], ttlSeconds: 300 });
    h.stop();
    assert.equal(new X509Certificate(out.chain[0]!).ca, false);
    assert.equal(created[0]!.spec.expirationSeconds, 600);
    assert.deepEqual(created[0]!.spec.usages, ['digital signature', 'key encipherment', 'server auth', 'client auth']);
    assert.deepEqual(await leftovers(), []);
  });

  it('ok/v1 preferred when served; explicit versions must be served', async () => {
    fake.setClusterTrustBundleVersions(['v1beta1', 'v1']);
    const b = await backend({ approve: true });
    assert.equal(b.ctbVersion(), 'v1');
    assert.deepEqual(await b.trustAnchors(), pemToDers(signer.bundlePem()));
    assert.ok(fake.requests.some((r) => r.path === '/apis/certificates.k8s.io/v1/clustertrustbundles' && r.query.watch === 'true'));
    fake.setClusterTrustBundleVersions(['v1beta1']);
    await assert.rejects(backend({ trustBundle: { apiVersion: 'v1' } }), /does not serve ClusterTrustBundles at certificates\.k8s\.io\/v1 .*1\.37/);
    fake.setClusterTrustBundleVersions([]);
    await assert.rejects(backend(), /neither certificates\.k8s\.io\/v1 nor v1beta1.*feature gate/);
  });

  it('ok/label selection: bundles without the labels are not anchors', async () => {
    const b = await backend({ trustBundle: { labels: { 'meshca.io/bundle': 'canary' } } });
    assert.deepEqual(await b.trustAnchors(), []);
    assert.match(b.health().reason ?? '', /no ClusterTrustBundle with spec\.signerName=example\.com\/meshca and labels meshca\.io\/bundle=canary/);
  });

  it('ok/watch: a rotated signer CA reaches watchTrustAnchors, old root kept', async () => {
    const b = await backend({ approve: true });
    const seen: Buffer[][] = [];
    b.watchTrustAnchors((r) => seen.push(r));
    const before = await b.trustAnchors();
    await signer.rotateCa();
    await eventually(() => seen.length > 0, 3000, 'anchor change');
    assert.equal(seen[0]!.length, before.length + 1);
    assert.deepEqual(seen[0], pemToDers(signer.bundlePem()));
    // A signing CA from the new CA verifies against the new anchors.
    const out = await b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 3600 });
    assert.equal(out.roots.length, before.length + 1);
  });

  it('fail/denied: terminal PERMISSION_DENIED naming reason and message; CSR deleted', async () => {
    signer.setBehaviour({ mode: 'deny' });
    const b = await backend();
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 3600 }));
    assert.equal(e.code, 'PERMISSION_DENIED');
    assert.equal(e.retryable, false);
    assert.match(e.message, /^cluster-trust-bundle: CertificateSigningRequest meshca-[a-z0-9]{5} to signer example\.com\/meshca denied \(SignerPolicy\): denied by the fake signer/);
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/failed: terminal FAILED_PRECONDITION; CSR deleted', async () => {
    signer.setBehaviour({ mode: 'fail' });
    const b = await backend({ approve: true });
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 3600 }));
    assert.equal(e.retryable, false);
    assert.match(e.message, /failed at signer example\.com\/meshca \(SignerFailure\): injected signer failure/);
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/timeout: nobody approves; retryable, says what to do; CSR deleted', async () => {
    const b = await backend({ requestTimeout: 1 });
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 3600 }));
    assert.equal(e.code, 'UNAVAILABLE');
    assert.match(e.message, /not issued within 1s; it was never approved \(set authority\.clusterTrustBundle\.approve: true/);
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/timeout: approved but the signer is not running', async () => {
    signer.setBehaviour({ mode: 'ignore' });
    const b = await backend({ approve: true, requestTimeout: 1 });
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 3600 }));
    assert.match(e.message, /approved but signer example\.com\/meshca issued nothing/);
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/RBAC: approving without the approve verb is a clear PERMISSION_DENIED; CSR deleted', async () => {
    const b = await backend({ approve: true }, 'noapprove');
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 3600 }));
    assert.equal(e.code, 'PERMISSION_DENIED');
    assert.match(e.message, /user not permitted to approve requests with signerName "example\.com\/meshca".*"approve" on signers "example\.com\/meshca"/);
    assert.deepEqual(await leftovers(), []);
  });

  it('ok/approval race: a 409 Conflict on PUT .../approval is re-read and retried, and the approval body is the CSR with Approved=True appended', async () => {
    const b = await backend({ approve: true });
    const before = fake.requests.length;
    fake.failNext(1, { code: 409, reason: 'Conflict', message: 'the object has been modified; please apply your changes to the latest version and try again', match: (r) => r.method === 'PUT' && r.path.endsWith('/approval') });
    await b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 3600 });
    const reqs = fake.requests.slice(before).filter((r) => r.resource === 'certificatesigningrequests' && r.name && r.user === 'meshca');
    const approvals = reqs.filter((r) => r.subresource === 'approval');
    assert.deepEqual(approvals.map((r) => r.status), [409, 200], 'retried once after the conflict');
    const i409 = reqs.indexOf(approvals[0]!);
    const i200 = reqs.indexOf(approvals[1]!);
    assert.ok(reqs.slice(i409 + 1, i200).some((r) => r.verb === 'get'), 'the CSR is read again before the retry');
    const body = approvals[1]!.body as any;
    assert.equal(body.apiVersion, 'certificates.k8s.io/v1');
    assert.equal(body.kind, 'CertificateSigningRequest');
    assert.match(body.metadata.resourceVersion, /^\d+$/, 'the update carries the resourceVersion it read');
    const approved = body.status.conditions.find((c: any) => c.type === 'Approved');
    assert.equal(approved.status, 'True');
    assert.ok(approved.reason && approved.message, 'reason and message say who approved');
    assert.deepEqual(await leftovers(), []);
  });

  it('ok/ClusterTrustBundles 404 although discovery lists them: re-detection backs off instead of looping; anchors kept', async () => {
    const clock = new ManualClock(Date.now());
    const b = await backend({}, 'meshca', testContext(TD, clock));
    const good = await b.trustAnchors();
    assert.ok(good.length > 0);
    await eventually(async () => fake.openWatches() > 0, 2000, 'anchor watch');
    const before = fake.requests.length;
    fake.failNext(2, { code: 404, reason: 'NotFound', message: 'the server could not find the requested resource', match: (r) => r.resource === 'clustertrustbundles' && r.watch });
    clock.advance(5000);
    fake.dropWatches('end');
    await new Promise((r) => setTimeout(r, 500));
    const discovery = fake.requests.slice(before).filter((r) => r.path === '/apis/certificates.k8s.io/v1beta1' || r.path === '/apis/certificates.k8s.io/v1').length;
    assert.ok(discovery <= 4, `discovery asked at most a few times without the clock moving, got ${discovery}`);
    assert.deepEqual(await b.trustAnchors(), good, 'anchors kept');
    assert.equal(b.health().ok, true, 'cached anchors keep the backend healthy');
    // Once the collection answers again, detection and the watch come back (the clock drives the backoff).
    await eventually(async () => {
      clock.advance(1000);
      await new Promise((r) => setTimeout(r, 20));
      return fake.openWatches() > 0;
    }, 5000, 'anchor watch re-established');
    assert.equal(b.ctbVersion(), 'v1beta1');
  });

  it('ok/API server down: last good anchors kept, watch retries with backoff and catches up', async () => {
    const clock = new ManualClock(Date.now());
    const b = await backend({ approve: true }, 'meshca', testContext(TD, clock));
    const good = await b.trustAnchors();
    assert.ok(good.length > 0);
    const seen: Buffer[][] = [];
    b.watchTrustAnchors((r) => seen.push(r));
    fake.failNext(3, { code: 503, reason: 'ServiceUnavailable', message: 'apiserver down', match: (r) => r.resource === 'clustertrustbundles' });
    fake.dropWatches('destroy');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await b.trustAnchors(), good, 'anchors kept while the API server fails');
    assert.equal(b.health().ok, true, 'cached anchors keep the backend healthy');
    await signer.rotateCa();
    await eventually(async () => {
      await clock.advanceAsync(1000);
      return seen.length > 0;
    }, 5000, 'anchors after recovery');
    assert.deepEqual(seen[seen.length - 1], pemToDers(signer.bundlePem()));
  });

  it('ok/start while the API server is unreachable: init succeeds, anchors arrive later', async () => {
    const clock = new ManualClock(Date.now());
    fake.failNext(2, { code: 503, match: (r) => r.path.startsWith('/apis/certificates.k8s.io/') && !r.resource });
    const b = await backend({}, 'meshca', testContext(TD, clock));
    assert.equal(b.ctbVersion(), undefined);
    assert.equal(b.health().ok, false);
    await eventually(async () => {
      await clock.advanceAsync(1000);
      return (await b.trustAnchors()).length > 0;
    }, 5000, 'anchors');
    assert.equal(b.ctbVersion(), 'v1beta1');
    assert.deepEqual(b.health(), { ok: true });
  });

  it('config/signerName is required, validated, and kubernetes.io/* is refused', () => {
    const bad = (v: unknown) => clusterTrustBundleConfigSchema.safeParse({ signerName: v }).error?.issues.map((i) => i.message).join('; ') ?? '';
    assert.match(bad(undefined), /is required/);
    assert.match(bad('meshca'), /not a signer name/);
    assert.match(bad('kubernetes.io/kube-apiserver-client'), /reserved Kubernetes signer/);
    assert.match(clusterTrustBundleConfigSchema.safeParse({ signerName: SIGNER, signingCaTtl: 60 }).error?.issues[0]?.message ?? '', /minimum 600s/);
    // spec.expirationSeconds is an int32: a longer TTL would be refused by the API server (400) at the first rotation.
    assert.match(clusterTrustBundleConfigSchema.safeParse({ signerName: SIGNER, signingCaTtl: '600000h' }).error?.issues[0]?.message ?? '', /maximum 2147483647s/);
    assert.equal(clusterTrustBundleConfigSchema.parse({ signerName: SIGNER, signingCaTtl: 2147483647 }).signingCaTtl, 2147483647);
    const d = clusterTrustBundleConfigSchema.parse({ signerName: SIGNER });
    assert.deepEqual(d.trustBundle, { labels: {}, apiVersion: 'auto' });
    assert.equal(d.approve, false);
  });
});
