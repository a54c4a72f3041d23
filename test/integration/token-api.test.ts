// Kubernetes ServiceAccount-token callers on the Istio CA and the controller API (not SDS), over real gRPC against
// the strict fake API server's TokenReview (issue #6, protocols.md §5): the token's service account is the caller's
// identity, any other identity is PERMISSION_DENIED, and every token failure is UNAUTHENTICATED.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startFakeKubeApiServer } from '../fakes/kube-apiserver.js';
import { apiClients, unary } from '../support/api-client.js';
import { makeCsr } from '../support/csr.js';
import { startE2eMeshca, tempDir } from '../support/e2e-meshca.js';

const TD = 'example.org';
const WEB = `spiffe://${TD}/ns/shop/sa/web`;

async function expectCode(p: Promise<unknown>, code: grpc.status, what: string): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    const err = e as grpc.ServiceError;
    assert.equal(err.code, code, `${what}: expected ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
    return err;
  }
  assert.fail(`${what}: expected ${grpc.status[code]}, the call succeeded`);
}

function bearer(token: string, extra: Record<string, string> = {}): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  for (const [k, v] of Object.entries(extra)) md.set(k, v);
  return md;
}

describe('ServiceAccount-token callers on CreateCertificate, IdentityService and BundleService', { timeout: 60_000 }, () => {
  it('a token caller gets only its own identity; every bad token is UNAUTHENTICATED on every API', async () => {
    const tmp = await tempDir('meshca-token-api-');
    const fake = await startFakeKubeApiServer({
      users: { meshca: { rules: [{ apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] }] } },
      tokens: {
        'good-token': { username: 'system:serviceaccount:shop:web', audiences: ['istio-ca'] },
        'expired-token': { username: 'system:serviceaccount:shop:web', audiences: ['istio-ca'], expiresAt: new Date(Date.now() - 60_000) },
        'meshca-aud-token': { username: 'system:serviceaccount:shop:web', audiences: ['meshca'] },
        'user-token': { username: 'alice', audiences: ['istio-ca'] },
      },
    });
    const kubeconfig = join(tmp.dir, 'kubeconfig');
    await writeFile(kubeconfig, fake.kubeconfigYaml('meshca'), { mode: 0o600 });
    const m = await startE2eMeshca({ trustDomain: TD, auth: { kubernetesTokens: { enabled: true, kubeconfig, audience: 'istio-ca' } } }, { dir: tmp.dir });
    // No client certificate: the token is the only credential, as for an Istio agent without a bootstrap cert.
    const c = apiClients(m.running.grpcPort, { rootsPem: m.running.core.authority.bundle().pem });
    try {
      // Istio agent: CSR with its own URI SAN, ClusterID header as the agent sends it.
      const own = await makeCsr({ uris: [WEB] });
      const res = await unary(c.istio, 'CreateCertificate', { csr: own.pem, validity_duration: 3600 }, bearer('good-token', { clusterid: 'Kubernetes' }));
      assert.equal(new X509Certificate(res.cert_chain[0]).subjectAltName, `URI:${WEB}`);
      // A CSR without URI SAN gets the token's identity.
      const bare = await unary(c.istio, 'CreateCertificate', { csr: (await makeCsr({ dnsNames: ['web.shop'] })).pem }, bearer('good-token'));
      assert.equal(new X509Certificate(bare.cert_chain[0]).subjectAltName, `URI:${WEB}`);
      // Another identity, by CSR or ImpersonatedIdentity, is refused and nothing is minted.
      const other = `spiffe://${TD}/ns/shop/sa/db`;
      await expectCode(unary(c.istio, 'CreateCertificate', { csr: (await makeCsr({ uris: [other] })).pem }, bearer('good-token')), grpc.status.PERMISSION_DENIED, 'istio other CSR');
      await expectCode(
        unary(c.istio, 'CreateCertificate', { csr: (await makeCsr({})).pem, metadata: { fields: { ImpersonatedIdentity: { stringValue: other } } } }, bearer('good-token')),
        grpc.status.PERMISSION_DENIED,
        'istio impersonation',
      );

      // IdentityService: own identity with a CSR; another identity or a generated key is refused.
      const issued = await unary(c.identity, 'Issue', { spiffe_id: WEB, csr_pem: own.pem }, bearer('good-token'));
      assert.equal(issued.spiffe_id, WEB);
      await expectCode(unary(c.identity, 'Issue', { spiffe_id: other, csr_pem: (await makeCsr({ uris: [other] })).pem }, bearer('good-token')), grpc.status.PERMISSION_DENIED, 'Issue other');
      await expectCode(unary(c.identity, 'Issue', { spiffe_id: WEB }, bearer('good-token')), grpc.status.PERMISSION_DENIED, 'Issue generated key');

      // BundleService: public without credentials, and with a good token.
      assert.equal((await unary(c.bundle, 'GetBundle', {})).own_trust_domain, TD);
      assert.equal((await unary(c.bundle, 'GetBundle', {}, bearer('good-token'))).own_trust_domain, TD);

      for (const bad of ['expired-token', 'meshca-aud-token', 'user-token', 'unknown-token']) {
        const calls: [string, () => Promise<unknown>][] = [
          ['CreateCertificate', () => unary(c.istio, 'CreateCertificate', { csr: own.pem }, bearer(bad))],
          ['Issue', () => unary(c.identity, 'Issue', { spiffe_id: WEB, csr_pem: own.pem }, bearer(bad))],
          ['IssueBatch', () => unary(c.identity, 'IssueBatch', { requests: [{ spiffe_id: WEB, csr_pem: own.pem }] }, bearer(bad))],
          ['GetBundle', () => unary(c.bundle, 'GetBundle', {}, bearer(bad))],
        ];
        for (const [name, call] of calls) {
          const err = await expectCode(call(), grpc.status.UNAUTHENTICATED, `${name} with ${bad}`);
          assert.ok(!err.details.includes(bad), 'the token never appears in the error');
        }
      }
      // WatchBundle with a bad token ends UNAUTHENTICATED before sending anything.
      await new Promise<void>((resolve, reject) => {
        const st = c.bundle.WatchBundle({}, bearer('unknown-token'));
        st.on('data', () => reject(new Error('WatchBundle sent bundles to a caller with a bad token')));
        st.on('error', (e: grpc.ServiceError) => (e.code === grpc.status.UNAUTHENTICATED ? resolve() : reject(e)));
      });
      // An unknown trust domain ends the watch with NOT_FOUND (with or without a token).
      await new Promise<void>((resolve, reject) => {
        const st = c.bundle.WatchBundle({ trust_domains: ['nope.test'] }, bearer('good-token'));
        st.on('data', () => reject(new Error('WatchBundle sent bundles for an unknown trust domain')));
        st.on('error', (e: grpc.ServiceError) => (e.code === grpc.status.NOT_FOUND ? resolve() : reject(e)));
      });
      const logText = m.logs.map((l) => JSON.stringify(l)).join('\n');
      for (const t of ['good-token', 'expired-token', 'meshca-aud-token', 'user-token', 'unknown-token']) assert.ok(!logText.includes(t), `token ${t} not logged`);
    } finally {
      c.close();
      await m.stop();
      await fake.close();
      await tmp.cleanup();
    }
  });
});
