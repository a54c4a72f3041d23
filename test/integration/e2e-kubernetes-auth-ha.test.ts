// End to end on Kubernetes without bootstrap certificates: Envoy-like SDS clients that authenticate with a projected
// ServiceAccount token (TokenReview against the strict fake API server), and two meshca replicas that share their
// CA state through one Secret (state.kubernetes) with a rotation Lease. Issue #6.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startFakeKubeApiServer } from '../fakes/kube-apiserver.js';
import { SdsClient } from '../support/sds-client.js';
import { eventually, startE2eMeshca, tempDir } from '../support/e2e-meshca.js';

const TD = 'example.org';

describe('e2e: Kubernetes ServiceAccount tokens and HA replicas', { timeout: 60_000 }, () => {
  it('a projected SA token gets its own identity over SDS; expired, wrong-audience and unknown tokens are UNAUTHENTICATED', async () => {
    const tmp = await tempDir('meshca-e2e-token-');
    const fake = await startFakeKubeApiServer({
      users: { meshca: { rules: [{ apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] }] } },
      tokens: {
        'good-token': { username: 'system:serviceaccount:shop:web', audiences: ['meshca'] },
        'expired-token': { username: 'system:serviceaccount:shop:web', audiences: ['meshca'], expiresAt: new Date(Date.now() - 60_000) },
        'istio-token': { username: 'system:serviceaccount:shop:web', audiences: ['istio-ca'] },
        'user-token': { username: 'alice', audiences: ['meshca'] },
      },
    });
    const kubeconfig = join(tmp.dir, 'kubeconfig');
    await writeFile(kubeconfig, fake.kubeconfigYaml('meshca'), { mode: 0o600 });
    const m = await startE2eMeshca({ trustDomain: TD, auth: { kubernetesTokens: { enabled: true, kubeconfig } } }, { dir: tmp.dir });
    const clients: SdsClient[] = [];
    const clientWith = (token: string) => {
      const c = new SdsClient({
        target: `127.0.0.1:${m.running.grpcPort}`,
        tls: { caPem: m.running.core.authority.bundle().pem },
        bearerToken: token,
        node: { id: 'web-1', cluster: 'shop' },
      });
      clients.push(c);
      return c;
    };
    try {
      const ok = await clientWith('good-token').fetchSecrets(['default']);
      const leaf = new X509Certificate(ok.secrets[0]!.tls_certificate!.certificate_chain.inline_bytes.toString());
      assert.equal(leaf.subjectAltName, `URI:spiffe://${TD}/ns/shop/sa/web`);
      // The same client may not ask for someone else's identity.
      await assert.rejects(clientWith('good-token').fetchSecrets([`spiffe://${TD}/ns/shop/sa/db`]), (e: grpc.ServiceError) => e.code === grpc.status.PERMISSION_DENIED);
      for (const bad of ['expired-token', 'istio-token', 'user-token', 'not-a-token']) {
        await assert.rejects(clientWith(bad).fetchSecrets(['default']), (e: grpc.ServiceError) => {
          assert.equal(e.code, grpc.status.UNAUTHENTICATED, `${bad}: ${e.message}`);
          assert.ok(!e.message.includes(bad), 'the token never appears in the error');
          return true;
        });
      }
      const logText = m.logs.map((l) => JSON.stringify(l)).join('\n');
      for (const t of ['good-token', 'expired-token', 'istio-token', 'user-token']) assert.ok(!logText.includes(t), `token ${t} not logged`);
      assert.ok(fake.requests.some((r) => r.resource === 'tokenreviews'), 'TokenReview was used');
    } finally {
      for (const c of clients) c.close();
      await m.stop();
      await fake.close();
      await tmp.cleanup();
    }
  });

  it('two replicas share one root through a Secret; the Lease holder rotates and the other follows', async () => {
    const tmp = await tempDir('meshca-e2e-ha-');
    const NS = 'mesh-system';
    const fake = await startFakeKubeApiServer({
      users: {
        meshca: {
          rules: [
            { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'list', 'watch', 'create', 'update'], namespaces: [NS] },
            { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'list', 'watch', 'create', 'update'], namespaces: [NS] },
          ],
        },
      },
    });
    const kubeconfig = join(tmp.dir, 'kubeconfig');
    await writeFile(kubeconfig, fake.kubeconfigYaml('meshca'), { mode: 0o600 });
    const raw = (id: string) => ({ trustDomain: TD, state: { kubernetes: { secret: { namespace: NS, name: 'meshca-state' }, kubeconfig, lease: { duration: '3s', identity: id } } } });
    const a = await startE2eMeshca(raw('replica-a'), { dir: join(tmp.dir) });
    const b = await startE2eMeshca(raw('replica-b'), { dir: join(tmp.dir, 'b') }).catch(async (e) => {
      await a.stop();
      throw e;
    });
    try {
      assert.equal(a.running.core.authority.bundle().pem, b.running.core.authority.bundle().pem, 'one root for both replicas');
      // Both replicas sign (no leader in the issuance path).
      const ca = await (await a.clientFor(`spiffe://${TD}/a`)).fetchSecrets(['default']);
      const cb = await (await b.clientFor(`spiffe://${TD}/b`)).fetchSecrets(['default']);
      assert.ok(ca.secrets[0]!.tls_certificate && cb.secrets[0]!.tls_certificate);
      const lease = () => fake.api.get('leases', 'meshca-state-rotation', { namespace: NS }) as Promise<{ spec?: { holderIdentity?: string } }>;
      await eventually(async () => ['replica-a', 'replica-b'].includes((await lease()).spec?.holderIdentity ?? ''), 10_000, 'a Lease holder');
      const holder = (await lease()).spec!.holderIdentity!;
      const [leader, follower] = holder === 'replica-a' ? [a, b] : [b, a];
      // A rotation written by one replica reaches the other through the Secret watch.
      const genBefore = follower.running.core.authority.activeSigningCa()!.generation;
      await leader.running.core.authority.rotate({ root: true });
      await eventually(() => follower.running.core.authority.activeSigningCa()!.generation > genBefore, 10_000, 'the follower to adopt the rotation');
      assert.equal(follower.running.core.authority.bundle().pem, leader.running.core.authority.bundle().pem);
      assert.equal(follower.running.core.authority.bundle().rootsDer.length, 2, 'old and new root both trusted');
      // The leader stops (releasing the Lease): the follower takes it over.
      await leader.stop();
      const followerId = holder === 'replica-a' ? 'replica-b' : 'replica-a';
      await eventually(async () => (await lease()).spec?.holderIdentity === followerId, 15_000, 'the follower to take over the Lease');
      await follower.stop();
    } finally {
      await a.stop().catch(() => undefined);
      await b.stop().catch(() => undefined);
      await fake.close();
      await tmp.cleanup();
    }
  });
});
