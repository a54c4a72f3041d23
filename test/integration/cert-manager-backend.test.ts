// The cert-manager backend with the real @kubernetes/client-node against the strict fake API server and a fake
// cert-manager controller: success (intermediate and leaf), denial, failure, invalid requests, timeouts, API
// outages, RBAC errors, and CertificateRequests always deleted.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFakeKubeApiServer, type FakeKube, type Obj } from '../fakes/kube-apiserver.js';
import { startFakeCertManagerController, type FakeCertManager } from '../fakes/cert-manager-controller.js';
import { certManagerConfigSchema, type CertManagerConfig } from '../../providers/cert-manager/config.js';
import { createCertManagerBackend, type CertManagerBackend } from '../../providers/cert-manager/backend.js';
import { CaError } from '../../src/util/errors.js';
import { pemToDers } from '../../src/x509/pem.js';
import { intermediateCsr, leafCsr, testContext } from '../unit/kube/csr-helpers.js';
import { ManualClock } from '../fakes/clock.js';

const TD = 'example.org';
const NS = 'meshca';
const CR_RULES = [{ apiGroups: ['cert-manager.io'], resources: ['certificaterequests'], verbs: ['create', 'get', 'list', 'watch', 'delete'], namespaces: [NS] }];

function config(over: Record<string, unknown> = {}): CertManagerConfig {
  return certManagerConfigSchema.parse({ namespace: NS, issuerRef: { name: 'meshca-ca' }, requestTimeout: '5s', ...over });
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

describe('cert-manager backend', { timeout: 30000 }, () => {
  let fake: FakeKube;
  let cm: FakeCertManager;
  let tmp: string;
  const backends: CertManagerBackend[] = [];

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'meshca-cm-'));
    fake = await startFakeKubeApiServer({
      users: {
        meshca: { rules: CR_RULES },
        nocreate: { rules: [{ apiGroups: ['cert-manager.io'], resources: ['certificaterequests'], verbs: ['get', 'list', 'watch', 'delete'], namespaces: [NS] }] },
      },
    });
    cm = await startFakeCertManagerController(fake, { issuerRef: { name: 'meshca-ca' }, intermediate: true });
  });
  afterEach(async () => {
    cm.setBehaviour({ mode: 'issue', delayMs: 0, omitCa: false, autoApprove: true });
    await cm.idle();
    for (const b of backends.splice(0)) await b.close();
  });
  after(async () => {
    cm.close();
    await fake.close();
    await rm(tmp, { recursive: true, force: true });
  });

  async function backend(over: Record<string, unknown> = {}, user = 'meshca', ctx = testContext(TD)): Promise<CertManagerBackend> {
    const b = createCertManagerBackend(config(over), ctx, { kubeConfig: fake.kubeConfig(user) });
    backends.push(b);
    await b.init();
    return b;
  }

  async function leftovers(): Promise<Obj[]> {
    return (await fake.api.list('certificaterequests', { namespace: NS })).items;
  }

  /** Records every CertificateRequest as created. */
  function recordCreated(): { created: Obj[]; stop(): void } {
    const created: Obj[] = [];
    const h = fake.api.watch('certificaterequests', (type, o) => {
      if (type === 'ADDED') created.push(o);
    });
    return { created, stop: () => h.stop() };
  }

  it('ok/intermediate: mints a CA certificate that links to status.ca, then deletes the request', async () => {
    const b = await backend();
    const rec = recordCreated();
    const csr = await intermediateCsr(TD);
    const out = await b.mintIntermediate({ ...csr, ttlSeconds: 48 * 3600 });
    rec.stop();
    const cert = new X509Certificate(out.chain[0]!);
    assert.ok(cert.ca, 'signing CA must be a CA');
    assert.ok(cert.publicKey.equals(csr.publicKey));
    assert.equal(out.chain.length, 2, 'signing CA, then the issuer intermediate');
    assert.deepEqual(out.roots, pemToDers(cm.rootPem));
    assert.deepEqual(await b.trustAnchors(), pemToDers(cm.rootPem));
    const cr = rec.created[0]!;
    assert.match(cr.metadata.name, /^meshca-[a-z0-9]{5}$/);
    assert.equal(cr.metadata.labels['meshca.io/trust-domain'], TD);
    assert.equal(cr.spec.isCA, true);
    assert.equal(cr.spec.duration, '48h0m0s');
    assert.deepEqual(cr.spec.usages, ['cert sign', 'crl sign']);
    assert.deepEqual(cr.spec.issuerRef, { name: 'meshca-ca', kind: 'Issuer', group: 'cert-manager.io' });
    assert.equal(cr.spec.username, 'meshca', 'created as meshca, not an admin');
    assert.deepEqual(await leftovers(), []);
    assert.deepEqual(b.health(), { ok: true });
  });

  it('ok/leaf: signs one leaf per request with leaf usages, then deletes the request', async () => {
    const b = await backend({ mode: 'leaf' });
    const rec = recordCreated();
    const id = `spiffe://${TD}/ns/default/sa/web`;
    const csr = await leafCsr(id);
    const out = await b.signLeaf({ ...csr, spiffeId: id, dnsNames: [], ttlSeconds: 3600 });
    rec.stop();
    const leaf = new X509Certificate(out.chain[0]!);
    assert.equal(leaf.ca, false);
    assert.match(leaf.subjectAltName ?? '', new RegExp(`URI:${id}`));
    const cr = rec.created[0]!;
    assert.equal(cr.spec.isCA, false);
    assert.equal(cr.spec.duration, '1h0m0s');
    assert.deepEqual(cr.spec.usages, ['digital signature', 'key encipherment', 'server auth', 'client auth']);
    assert.equal(cr.metadata.annotations['meshca.io/spiffe-id'], id);
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/denied: a clear, non-retried error naming the approver and message; request deleted', async () => {
    cm.setBehaviour({ mode: 'deny' });
    const b = await backend();
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 }));
    assert.equal(e.code, 'PERMISSION_DENIED');
    assert.equal(e.retryable, false);
    assert.match(e.message, /^cert-manager: CertificateRequest meshca\/meshca-[a-z0-9]{5} denied by cert-manager\.io: Certificate request has been denied/);
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/failed: Ready=False reason Failed is terminal and names the issuer', async () => {
    cm.setBehaviour({ mode: 'fail' });
    const b = await backend();
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 }));
    assert.equal(e.code, 'FAILED_PRECONDITION');
    assert.equal(e.retryable, false);
    assert.match(e.message, /failed at Issuer meshca\/meshca-ca \(Failed\): Failed to sign certificate: injected failure/);
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/invalid: InvalidRequest is terminal', async () => {
    cm.setBehaviour({ mode: 'invalid' });
    const b = await backend();
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 }));
    assert.equal(e.retryable, false);
    assert.match(e.message, /rejected by Issuer meshca\/meshca-ca as invalid \(RequestParsingError\): injected invalid request/);
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/timeout: a request nobody approves times out (retryable), says so, and is deleted', async () => {
    cm.setBehaviour({ autoApprove: false });
    const b = await backend({ requestTimeout: 1 });
    const started = Date.now();
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 }));
    assert.ok(Date.now() - started < 4000);
    assert.equal(e.code, 'UNAVAILABLE');
    assert.equal(e.retryable, true);
    assert.match(e.message, /was not issued within 1s.*never approved/);
    assert.deepEqual(await leftovers(), []);
    assert.equal(b.health().ok, false);
  });

  it("fail/an external issuer's request is not approved by the built-in approver: it times out saying so, naming the issuer", async () => {
    const ref = { name: 'pca', kind: 'AWSPCAIssuer', group: 'awspca.cert-manager.io' };
    const ext = await startFakeCertManagerController(fake, { issuerRef: ref });
    try {
      const b = await backend({ issuerRef: ref, requestTimeout: 1 });
      const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 }));
      assert.equal(e.code, 'UNAVAILABLE');
      assert.match(e.message, /AWSPCAIssuer meshca\/pca \(awspca\.cert-manager\.io\).*was not issued within 1s.*never approved/);
      assert.deepEqual(await leftovers(), []);
    } finally {
      ext.close();
    }
  });

  it('fail/timeout on the Clock: a ManualClock decides when the wait ends', async () => {
    cm.setBehaviour({ autoApprove: false });
    const clock = new ManualClock(Date.now());
    const b = await backend({ requestTimeout: 30 }, 'meshca', testContext(TD, clock));
    const p = rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 }));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await leftovers()).length, 1, 'still waiting: real time does not end it');
    clock.advance(30_000);
    const e = await p;
    assert.match(e.message, /not issued within 30s/);
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/status.ca empty without caFile; ok/with caFile as the static anchor', async () => {
    cm.setBehaviour({ omitCa: true });
    const b = await backend();
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 }));
    assert.match(e.message, /left status\.ca empty.*set authority\.certManager\.caFile/);
    const caFile = join(tmp, 'root.pem');
    await writeFile(caFile, cm.rootPem);
    const b2 = await backend({ caFile });
    assert.deepEqual(await b2.trustAnchors(), pemToDers(cm.rootPem), 'anchors known before any request');
    const out = await b2.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 });
    assert.deepEqual(out.roots, pemToDers(cm.rootPem));
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/chain does not link to caFile: a hijacked or wrong issuer is refused', async () => {
    const other = (await import('../fakes/kube/pki.js')).createCa;
    const wrong = await other({ commonName: 'someone else', notBefore: new Date(Date.now() - 60000), notAfter: new Date(Date.now() + 86400000) });
    const caFile = join(tmp, 'wrong.pem');
    await writeFile(caFile, wrong.certPem);
    const b = await backend({ caFile });
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 }));
    assert.match(e.message, /does not lead to a trust anchor/);
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/API unavailable: retryable, health degraded, then recovers', async () => {
    const b = await backend();
    fake.failNext(1, { code: 503, reason: 'ServiceUnavailable', message: 'etcd is down', match: (r) => r.verb === 'create' });
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 }));
    assert.equal(e.code, 'UNAVAILABLE');
    assert.equal(e.retryable, true);
    assert.match(e.message, /^cert-manager: create CertificateRequest in namespace meshca: 503 ServiceUnavailable: etcd is down/);
    assert.equal(b.health().ok, false);
    await b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 });
    assert.deepEqual(b.health(), { ok: true });
  });

  it('ok/watch dropped and history compacted while waiting: resumes and re-lists', async () => {
    cm.setBehaviour({ delayMs: 400 });
    const b = await backend();
    const p = b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 });
    await new Promise((r) => setTimeout(r, 150));
    fake.compactHistory();
    assert.ok(fake.dropWatches('destroy') >= 1);
    const out = await p;
    assert.ok(new X509Certificate(out.chain[0]!).ca);
    assert.deepEqual(await leftovers(), []);
  });

  it('fail/RBAC: a missing create permission is a clear PERMISSION_DENIED', async () => {
    const b = await backend({}, 'nocreate');
    const e = await rejection(b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 86400 }));
    assert.equal(e.code, 'PERMISSION_DENIED');
    assert.equal(e.retryable, false);
    assert.match(e.message, /User "nocreate" cannot create resource "certificaterequests" in API group "cert-manager.io" in the namespace "meshca"/);
  });

  it('ok/sweep: finished leftovers with our label are deleted at start; others are kept', async () => {
    const csr = await intermediateCsr(TD);
    const mk = (labels: Record<string, string>) =>
      fake.api.create(
        'certificaterequests',
        { metadata: { generateName: 'old-', labels }, spec: { request: Buffer.from(csr.csrPem).toString('base64'), isCA: true, usages: ['cert sign', 'crl sign'], issuerRef: { name: 'meshca-ca' } } },
        { namespace: NS },
      );
    const ours = await mk({ 'meshca.io/trust-domain': TD });
    const theirs = await mk({ app: 'other' });
    await cm.idle();
    await new Promise((r) => setTimeout(r, 50));
    await cm.idle();
    await backend();
    const names = (await leftovers()).map((o) => o.metadata.name);
    assert.ok(!names.includes(ours.metadata.name), 'our finished leftover is swept');
    assert.ok(names.includes(theirs.metadata.name), 'other CertificateRequests are not touched');
    await fake.api.delete('certificaterequests', theirs.metadata.name, { namespace: NS });
  });

  it('config/labels and annotations: what the API server accepts is accepted, what it refuses is refused at start', async () => {
    // Prefixed keys, empty values, and annotation keys in any case (the API server lowercases them before checking).
    const good = { labels: { 'example.com/team': 'mesh', empty: '' }, annotations: { 'Example.COM/Owner': 'Platform Team', note: '' } };
    const b = await backend(good);
    const rec = recordCreated();
    await b.mintIntermediate({ ...(await intermediateCsr(TD)), ttlSeconds: 48 * 3600 });
    rec.stop();
    const cr = rec.created[0]!;
    assert.equal(cr.metadata.labels['example.com/team'], 'mesh');
    assert.equal(cr.metadata.labels.empty, '');
    assert.equal(cr.metadata.annotations['Example.COM/Owner'], 'Platform Team');
    // A prefix over 253 characters, an upper-case label prefix, and annotations over 256 KiB: the API server refuses
    // them (422), so the config does too.
    const longPrefix = `${'a'.repeat(251)}.io/x`; // a 254-character prefix
    const bad = [
      { labels: { [longPrefix]: 'v' } },
      { labels: { 'Example.com/team': 'v' } },
      { annotations: { [longPrefix]: 'v' } },
      { annotations: { big: 'x'.repeat(256 * 1024) } },
    ];
    for (const over of bad) {
      assert.equal(certManagerConfigSchema.safeParse({ namespace: 'ns', issuerRef: { name: 'ca' }, ...over }).success, false, JSON.stringify(over).slice(0, 80));
      const meta = { generateName: 'bad-', ...over };
      await assert.rejects(
        fake.api.create('certificaterequests', { metadata: meta, spec: { request: 'eA==', issuerRef: { name: 'meshca-ca' } } }, { namespace: NS }),
        (e: unknown) => /422|Invalid|invalid|may not be more/.test(String((e as Error).message ?? e)),
        `the fake API server refuses ${JSON.stringify(over).slice(0, 80)}`,
      );
    }
  });

  it('config/rejects unknown keys and bad values with their path', () => {
    const r = certManagerConfigSchema.safeParse({ namespace: 'Bad_NS', issuerRef: { name: 'x', kind: 'Cluster' }, extra: 1 });
    assert.equal(r.success, false);
    const paths = r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n');
    assert.match(paths, /namespace: must be a Kubernetes namespace name/);
    assert.match(paths, /issuerRef\.kind: must be Issuer or ClusterIssuer for group cert-manager\.io/);
    // An external issuer brings its own kind with its own group; a kind must still look like one.
    const ext = certManagerConfigSchema.parse({ namespace: 'ns', issuerRef: { name: 'pca', kind: 'AWSPCAClusterIssuer', group: 'awspca.cert-manager.io' } });
    assert.deepEqual(ext.issuerRef, { name: 'pca', kind: 'AWSPCAClusterIssuer', group: 'awspca.cert-manager.io' });
    const badKind = certManagerConfigSchema.safeParse({ namespace: 'ns', issuerRef: { name: 'pca', kind: 'awspca-issuer', group: 'awspca.cert-manager.io' } });
    assert.match(badKind.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n') ?? '', /issuerRef\.kind: must be a Kubernetes kind/);
    assert.match(paths, /Unrecognized key.*extra/);
    // Labels and annotations are checked like the API server does, so a bad one fails at start, not at the first request.
    const lab = certManagerConfigSchema.safeParse({ namespace: 'ns', issuerRef: { name: 'ca' }, labels: { 'team/': 'a', ok: 'not ok!' }, annotations: { 'bad key': 'x' } });
    const labMsgs = lab.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n') ?? '';
    assert.match(labMsgs, /labels\.team\/: "team\/" is not a valid label key/);
    assert.match(labMsgs, /labels\.ok: "not ok!" is not a valid label value/);
    assert.match(labMsgs, /annotations\.bad key: "bad key" is not a valid annotation key/);
    const d = certManagerConfigSchema.parse({ namespace: 'ns', issuerRef: { name: 'ca' } });
    assert.equal(d.mode, 'intermediate');
    assert.equal(d.signingCaTtl, 48 * 3600);
    assert.deepEqual(d.issuerRef, { name: 'ca', kind: 'Issuer', group: 'cert-manager.io' });
  });
});
