// End to end with the Kubernetes backends: the real server composition (src/main.ts startServer, configured with a
// kubeconfig file like an operator would) against the strict fake API server with the fake cert-manager controller
// and the fake CSR signer running inside the test, checked through an Envoy-like SDS client over mTLS. Issue #6
// "Tests": each backend end to end through SDS, bundle publication following rotations.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startFakeKubeApiServer, type FakeKube, type Obj } from '../fakes/kube-apiserver.js';
import { startFakeCertManagerController } from '../fakes/cert-manager-controller.js';
import { startFakeCsrSigner } from '../fakes/csr-signer.js';
import type { SotwResponse, SotwStream } from '../support/sds-client.js';
import { eventually, fingerprints, opensslVerify, pemCerts, tempDir, verifyChain, type E2eMeshca, startE2eMeshca } from '../support/e2e-meshca.js';

const TD = 'example.org';

const certPem = (r: SotwResponse): string => {
  const s = r.secrets.find((x) => x.name === 'default');
  assert.ok(s?.tls_certificate, `response carries default: ${JSON.stringify(r.secrets.map((x) => x.name))}`);
  return s.tls_certificate.certificate_chain.inline_bytes.toString();
};
const rootsPem = (r: SotwResponse): string => {
  const s = r.secrets.find((x) => x.name === 'ROOTCA');
  assert.ok(s?.validation_context?.trusted_ca, `response carries ROOTCA: ${JSON.stringify(r.secrets.map((x) => x.name))}`);
  return s.validation_context.trusted_ca.inline_bytes.toString();
};

const fps = (pem: string): string[] => fingerprints(pemCerts(pem));

async function subscribe(m: E2eMeshca, id: string): Promise<{ def: SotwStream; roots: SotwStream; cert: SotwResponse; rootca: SotwResponse }> {
  const client = await m.clientFor(id);
  const def = client.streamSecrets();
  def.request(['default']);
  const cert = await def.next(10_000);
  def.ack(cert);
  const roots = client.streamSecrets();
  roots.request(['ROOTCA']);
  const rootca = await roots.next(10_000);
  roots.ack(rootca);
  return { def, roots, cert, rootca };
}

/** Writes the fake API server's kubeconfig for `user` to a file, as meshca's config points at a file. */
async function kubeconfigFile(fake: FakeKube, dir: string, user: string): Promise<string> {
  const file = join(dir, `kubeconfig-${user}`);
  await writeFile(file, fake.kubeconfigYaml(user), { mode: 0o600 });
  return file;
}

describe('e2e: meshca serve with the Kubernetes backends, through SDS', { timeout: 30_000 }, () => {
  it('cert-manager (intermediate): one CertificateRequest for the signing CA, SDS chains verify to status.ca, CR deleted', async () => {
    const tmp = await tempDir('meshca-e2e-cm-');
    const NS = 'mesh-system';
    const fake = await startFakeKubeApiServer({
      users: { meshca: { rules: [{ apiGroups: ['cert-manager.io'], resources: ['certificaterequests'], verbs: ['create', 'get', 'list', 'watch', 'delete'], namespaces: [NS] }] } },
    });
    const cm = await startFakeCertManagerController(fake, { issuerRef: { name: 'meshca-ca' }, intermediate: true });
    const created: Obj[] = [];
    const deleted: Obj[] = [];
    const rec = fake.api.watch(
      'certificaterequests',
      (type, o) => {
        if (type === 'ADDED') created.push(o);
        if (type === 'DELETED') deleted.push(o);
      },
      { namespace: NS },
    );
    let m: E2eMeshca | undefined;
    try {
      m = await startE2eMeshca(
        {
          trustDomain: TD,
          authority: {
            type: 'cert-manager',
            certManager: { kubeconfig: await kubeconfigFile(fake, tmp.dir, 'meshca'), namespace: NS, issuerRef: { name: 'meshca-ca' }, signingCaTtl: '48h' },
          },
        },
        { dir: tmp.dir },
      );
      const ids = ['web', 'api', 'db'].map((sa) => `spiffe://${TD}/ns/default/sa/${sa}`);
      for (const id of ids) {
        const { cert, rootca } = await subscribe(m, id);
        const trusted = rootsPem(rootca);
        assert.deepEqual(fps(trusted), fps(cm.rootPem), 'ROOTCA is the issuer\'s status.ca root');
        const chainPem = certPem(cert);
        const { leaf, path } = verifyChain(chainPem, trusted, Date.now());
        assert.equal(leaf.subjectAltName, `URI:${id}`);
        assert.equal(path.length, 4, 'leaf → meshca signing CA → cert-manager CA (intermediate) → root');
        assert.ok(path[1]!.ca);
        assert.equal(path[2]!.fingerprint256, pemCerts(cm.ca.certPem)[0]!.fingerprint256, 'meshca\'s CA was signed by the Issuer\'s CA');
        assert.match(await opensslVerify(tmp.dir, chainPem, trusted, Date.now()), /OK/);
      }
      await cm.idle();
      assert.equal(created.length, 1, 'one CertificateRequest, for meshca\'s signing CA, not one per leaf');
      const cr = created[0]!;
      assert.equal(cr.spec.isCA, true);
      assert.deepEqual(cr.spec.issuerRef, { name: 'meshca-ca', kind: 'Issuer', group: 'cert-manager.io' });
      assert.equal(cr.spec.username, 'meshca', 'created with meshca\'s own credentials');
      assert.deepEqual(cm.handled.map((h) => h.outcome), ['Issued']);
      await eventually(async () => (await fake.api.list('certificaterequests', { namespace: NS })).items.length === 0, 3000, 'the CertificateRequest deleted');
      assert.deepEqual(deleted.map((o) => o.metadata.name), [cr.metadata.name], 'the finished CertificateRequest was deleted');
      assert.deepEqual(await m.readyz(), { status: 200, body: { ready: true } });
    } finally {
      rec.stop();
      await m?.stop();
      cm.close();
      await fake.close();
      await tmp.cleanup().catch(() => undefined);
    }
  });

  it('cert-manager (leaf): every SDS leaf is one CertificateRequest signed by the Issuer, each deleted', async () => {
    const tmp = await tempDir('meshca-e2e-cm-leaf-');
    const NS = 'mesh-system';
    const fake = await startFakeKubeApiServer({
      users: { meshca: { rules: [{ apiGroups: ['cert-manager.io'], resources: ['certificaterequests'], verbs: ['create', 'get', 'list', 'watch', 'delete'], namespaces: [NS] }] } },
    });
    const cm = await startFakeCertManagerController(fake, { issuerRef: { name: 'meshca-ca', kind: 'ClusterIssuer' }, intermediate: true });
    const created: Obj[] = [];
    const rec = fake.api.watch('certificaterequests', (type, o) => void (type === 'ADDED' && created.push(o)), { namespace: NS });
    let m: E2eMeshca | undefined;
    try {
      m = await startE2eMeshca(
        {
          trustDomain: TD,
          authority: {
            type: 'cert-manager',
            certManager: { kubeconfig: await kubeconfigFile(fake, tmp.dir, 'meshca'), namespace: NS, mode: 'leaf', issuerRef: { name: 'meshca-ca', kind: 'ClusterIssuer' } },
          },
        },
        { dir: tmp.dir },
      );
      const issuerCa = pemCerts(cm.ca.certPem)[0]!;
      for (const sa of ['web', 'api']) {
        const id = `spiffe://${TD}/ns/default/sa/${sa}`;
        const { cert, rootca } = await subscribe(m, id);
        const trusted = rootsPem(rootca);
        assert.deepEqual(fps(trusted), fps(cm.rootPem));
        const { leaf, path } = verifyChain(certPem(cert), trusted, Date.now());
        assert.equal(leaf.subjectAltName, `URI:${id}`);
        assert.equal(path.length, 3, 'leaf → cert-manager CA → root: no meshca CA in leaf mode');
        assert.equal(path[1]!.fingerprint256, issuerCa.fingerprint256, 'signed by the Issuer\'s CA');
        assert.match(await opensslVerify(tmp.dir, certPem(cert), trusted, Date.now()), /OK/);
        const forId = created.filter((o) => o.metadata.annotations?.['meshca.io/spiffe-id'] === id);
        assert.equal(forId.length, 2, 'one CertificateRequest for the client certificate, one for the SDS leaf');
        assert.ok(forId.every((o) => o.spec.isCA === false));
      }
      await cm.idle();
      assert.ok(cm.handled.length >= 5 && cm.handled.every((h) => h.outcome === 'Issued'), 'serving + 2 x (client + SDS) leaves');
      await eventually(async () => (await fake.api.list('certificaterequests', { namespace: NS })).items.length === 0, 3000, 'every CertificateRequest deleted');
    } finally {
      rec.stop();
      await m?.stop();
      cm.close();
      await fake.close();
      await tmp.cleanup().catch(() => undefined);
    }
  });

  it('cluster-trust-bundle: SDS leaf verifies to ROOTCA = the CTB; a rotated signer CA is pushed as a new ROOTCA on the open stream', async () => {
    const tmp = await tempDir('meshca-e2e-ctb-');
    const SIGNER = 'example.com/meshca';
    const fake = await startFakeKubeApiServer({
      clusterTrustBundleVersions: ['v1beta1'],
      users: {
        meshca: {
          rules: [
            { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests'], verbs: ['create', 'get', 'list', 'watch', 'delete'] },
            { apiGroups: ['certificates.k8s.io'], resources: ['clustertrustbundles'], verbs: ['get', 'list', 'watch'] },
            { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests/approval'], verbs: ['update'] },
            { apiGroups: ['certificates.k8s.io'], resources: ['signers'], verbs: ['approve'], resourceNames: [SIGNER] },
          ],
        },
      },
    });
    const signer = await startFakeCsrSigner(fake, { signerName: SIGNER, trustBundle: { version: 'v1beta1' } });
    const ctbRoots = async (): Promise<string[]> => {
      const o = await fake.api.get('clustertrustbundles', signer.trustBundleName!);
      return fps(o.spec.trustBundle as string);
    };
    let m: E2eMeshca | undefined;
    try {
      m = await startE2eMeshca(
        {
          trustDomain: TD,
          authority: {
            type: 'cluster-trust-bundle',
            clusterTrustBundle: { kubeconfig: await kubeconfigFile(fake, tmp.dir, 'meshca'), signerName: SIGNER, approve: true, signingCaTtl: '48h' },
          },
        },
        { dir: tmp.dir },
      );
      const id = `spiffe://${TD}/ns/default/sa/web`;
      const { def, roots, cert, rootca } = await subscribe(m, id);
      const trusted = rootsPem(rootca);
      assert.deepEqual(fps(trusted), await ctbRoots(), 'ROOTCA is exactly the signer-linked ClusterTrustBundle');
      const first = verifyChain(certPem(cert), trusted, Date.now());
      assert.equal(first.leaf.subjectAltName, `URI:${id}`);
      assert.equal(first.path.length, 3, 'leaf → meshca signing CA → signer CA');
      assert.match(await opensslVerify(tmp.dir, certPem(cert), trusted, Date.now()), /OK/);
      assert.deepEqual(signer.handled.map((h) => h.outcome), ['Issued'], 'one CSR: meshca\'s signing CA');
      await eventually(async () => (await fake.api.list('certificatesigningrequests')).items.length === 0, 3000, 'CSRs cleaned up');

      // The cluster's signer rotates its CA: the bundle gains the new root, and the open stream gets it pushed.
      const oldRoots = await ctbRoots();
      const newCa = await signer.rotateCa();
      const newRoot = pemCerts(newCa.rootPem)[0]!;
      const pushed = await roots.next(10_000);
      roots.ack(pushed);
      const pushedRoots = fps(rootsPem(pushed));
      assert.deepEqual(pushedRoots, await ctbRoots(), 'the pushed ROOTCA equals the updated ClusterTrustBundle');
      assert.ok(pushedRoots.includes(newRoot.fingerprint256), 'the new root is trusted');
      for (const f of oldRoots) assert.ok(pushedRoots.includes(f), 'the old root is kept: live leaves still chain to it');
      assert.notEqual(pushed.version_info, rootca.version_info);
      verifyChain(certPem(cert), rootsPem(pushed), Date.now());

      // meshca's next signing CA comes from the rotated signer and verifies against the pushed bundle.
      await m.running.core.authority.rotate();
      const renewed = await def.next(10_000);
      def.ack(renewed);
      const after = verifyChain(certPem(renewed), rootsPem(pushed), Date.now());
      assert.notEqual(after.leaf.serialNumber, first.leaf.serialNumber);
      assert.equal(after.root.fingerprint256, newRoot.fingerprint256, 'the new signing CA chains to the signer\'s new root');
      assert.deepEqual(await m.readyz(), { status: 200, body: { ready: true } });
    } finally {
      await m?.stop();
      signer.close();
      await fake.close();
      await tmp.cleanup().catch(() => undefined);
    }
  });

  it('cluster-trust-bundle (leaf): each SDS leaf is a CSR approved and signed by the cluster signer, verifying to the CTB', async () => {
    const tmp = await tempDir('meshca-e2e-ctb-leaf-');
    const SIGNER = 'example.com/meshca-leaf';
    const fake = await startFakeKubeApiServer({
      clusterTrustBundleVersions: ['v1beta1', 'v1'],
      users: {
        meshca: {
          rules: [
            { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests'], verbs: ['create', 'get', 'list', 'watch', 'delete'] },
            { apiGroups: ['certificates.k8s.io'], resources: ['clustertrustbundles'], verbs: ['get', 'list', 'watch'] },
          ],
        },
      },
    });
    // The signer approves its own CSRs (a policy approver); meshca has no approval rights here.
    const signer = await startFakeCsrSigner(fake, { signerName: SIGNER, behaviour: { autoApprove: true }, trustBundle: { version: 'v1' } });
    const created: Obj[] = [];
    const rec = fake.api.watch('certificatesigningrequests', (type, o) => void (type === 'ADDED' && created.push(o)));
    let m: E2eMeshca | undefined;
    try {
      m = await startE2eMeshca(
        {
          trustDomain: TD,
          authority: { type: 'cluster-trust-bundle', clusterTrustBundle: { kubeconfig: await kubeconfigFile(fake, tmp.dir, 'meshca'), signerName: SIGNER, mode: 'leaf' } },
        },
        { dir: tmp.dir },
      );
      const ctb = await fake.api.get('clustertrustbundles', signer.trustBundleName!);
      const id = `spiffe://${TD}/ns/default/sa/web`;
      const { cert, rootca } = await subscribe(m, id);
      const trusted = rootsPem(rootca);
      assert.deepEqual(fps(trusted), fps(ctb.spec.trustBundle as string), 'ROOTCA is the v1 ClusterTrustBundle');
      const { leaf, path } = verifyChain(certPem(cert), trusted, Date.now());
      assert.equal(leaf.subjectAltName, `URI:${id}`);
      assert.equal(path.length, 2, 'leaf signed directly by the signer CA');
      assert.match(await opensslVerify(tmp.dir, certPem(cert), trusted, Date.now()), /OK/);
      assert.ok(created.length >= 3 && created.every((o) => o.spec.signerName === SIGNER && o.spec.expirationSeconds === 3600), 'one CSR per leaf, asking for workload.ttl');
      await signer.idle();
      assert.ok(signer.handled.length === created.length && signer.handled.every((h) => h.outcome === 'Issued'));
      await eventually(async () => (await fake.api.list('certificatesigningrequests')).items.length === 0, 3000, 'CSRs cleaned up');
    } finally {
      rec.stop();
      await m?.stop();
      signer.close();
      await fake.close();
      await tmp.cleanup().catch(() => undefined);
    }
  });

  it('bundle publishers: the ClusterTrustBundle and ConfigMaps hold meshca\'s bundle and follow a root rotation', async () => {
    const tmp = await tempDir('meshca-e2e-pub-');
    const SIGNER = 'example.com/meshca-trust';
    const CTB = 'example.com:meshca-trust:meshca';
    const NSS = ['app-a', 'app-b'];
    const fake = await startFakeKubeApiServer({
      clusterTrustBundleVersions: ['v1beta1'],
      users: {
        publisher: {
          rules: [
            { apiGroups: ['certificates.k8s.io'], resources: ['clustertrustbundles'], verbs: ['create', 'get', 'list', 'watch', 'update'] },
            { apiGroups: ['certificates.k8s.io'], resources: ['signers'], verbs: ['attest'], resourceNames: [SIGNER] },
            { apiGroups: [''], resources: ['configmaps'], verbs: ['create', 'get', 'update'], namespaces: NSS },
          ],
        },
      },
    });
    const published = async (): Promise<{ ctb: string[]; cms: string[][] }> => {
      const ctb = await fake.api.get('clustertrustbundles', CTB).then((o) => fps(o.spec.trustBundle as string), () => []);
      const cms = await Promise.all(
        NSS.map((ns) => fake.api.get('configmaps', 'meshca-ca-bundle', { namespace: ns }).then((o) => fps(o.data['ca.crt'] as string), () => [])),
      );
      return { ctb, cms };
    };
    let m: E2eMeshca | undefined;
    try {
      m = await startE2eMeshca(
        {
          trustDomain: TD,
          authority: { type: 'internal' },
          bundlePublishers: {
            kubernetes: {
              kubeconfig: await kubeconfigFile(fake, tmp.dir, 'publisher'),
              clusterTrustBundle: { signerName: SIGNER },
              configMaps: { namespaces: NSS },
            },
          },
        },
        { dir: tmp.dir },
      );
      const authority = m.running.core.authority;
      const bundleFps = (): string[] => fps(authority.bundle().pem);
      const matches = async (): Promise<boolean> => {
        const p = await published();
        const want = JSON.stringify(bundleFps());
        return JSON.stringify(p.ctb) === want && p.cms.every((c) => JSON.stringify(c) === want);
      };
      await eventually(matches, 5000, 'the ClusterTrustBundle and ConfigMaps to hold meshca\'s bundle');
      const before = bundleFps();
      assert.equal(before.length, 1);
      const ctb = await fake.api.get('clustertrustbundles', CTB);
      assert.equal(ctb.spec.signerName, SIGNER, 'signer-linked bundle');

      const { def, roots, cert, rootca } = await subscribe(m, `spiffe://${TD}/ns/app-a/sa/web`);
      assert.deepEqual(fps(rootsPem(rootca)), (await published()).ctb, 'what SDS serves is what the cluster sees');
      verifyChain(certPem(cert), rootsPem(rootca), Date.now());

      await authority.rotate({ root: true });
      const after = bundleFps();
      assert.equal(after.length, 2, 'new root added, old root kept while it validates live certificates');
      for (const f of before) assert.ok(after.includes(f));
      await eventually(matches, 5000, 'the published copies to follow the root rotation');
      const p = await published();
      for (const f of before) assert.ok(p.ctb.includes(f) && p.cms.every((c) => c.includes(f)), 'old root never dropped from the published copies');

      // The open SDS stream gets the same two roots, and the reissued leaf chains to the new root.
      const pushed = await roots.next(10_000);
      roots.ack(pushed);
      assert.deepEqual(fps(rootsPem(pushed)), p.ctb);
      const renewed = await def.next(10_000);
      def.ack(renewed);
      const v = verifyChain(certPem(renewed), rootsPem(pushed), Date.now());
      assert.ok(!before.includes(v.root.fingerprint256), 'the reissued leaf chains to the new root');
    } finally {
      await m?.stop();
      await fake.close();
      await tmp.cleanup().catch(() => undefined);
    }
  });
});
