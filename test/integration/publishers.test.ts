// Bundle publishers (ClusterTrustBundle and ConfigMaps) with the real @kubernetes/client-node against the strict
// fake API server: create, update on a bundle change, conflicts retried, drift repaired on resync, RBAC errors.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { startFakeKubeApiServer, type FakeKube } from '../fakes/kube-apiserver.js';
import { createCa } from '../fakes/kube/pki.js';
import { ManualClock } from '../fakes/clock.js';
import type { AuthorityEvent, TrustBundle } from '../../src/authority/types.js';
import { bundlePublishersSchema, startPublishers, type Publishers } from '../../src/publish/index.js';
import { pemToDers, toPem } from '../../src/x509/pem.js';
import { eventually } from '../unit/kube/csr-helpers.js';

const TD = 'example.org';
const SIGNER = 'example.com/meshca';
const CTB_NAME = 'example.com:meshca:meshca';
const CTB_RW = { apiGroups: ['certificates.k8s.io'], resources: ['clustertrustbundles'], verbs: ['create', 'get', 'list', 'watch', 'update'] };
const ATTEST = { apiGroups: ['certificates.k8s.io'], resources: ['signers'], verbs: ['attest'], resourceNames: [SIGNER] };
const CM_RW = { apiGroups: [''], resources: ['configmaps'], verbs: ['create', 'get', 'update'], namespaces: ['app-a', 'app-b'] };

/** A stand-in for the authority: a bundle that tests change, and its bundle events. */
class FakeAuthority {
  readonly trustDomain = TD;
  private listeners = new Set<(ev: AuthorityEvent) => void>();
  private current: TrustBundle;
  constructor(roots: Buffer[]) {
    this.current = mkBundle(roots, 1);
  }
  bundle(): TrustBundle {
    return this.current;
  }
  onEvent(l: (ev: AuthorityEvent) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  set(roots: Buffer[]): void {
    this.current = mkBundle(roots, this.current.sequence + 1);
    for (const l of this.listeners) l({ type: 'bundle', bundle: this.current });
  }
}

function mkBundle(roots: Buffer[], sequence: number): TrustBundle {
  return { trustDomain: TD, rootsDer: roots, pem: roots.map((r) => toPem(r)).join(''), sequence };
}

async function root(name: string): Promise<Buffer> {
  const ca = await createCa({ commonName: name, notBefore: new Date(Date.now() - 60000), notAfter: new Date(Date.now() + 86400000) });
  return pemToDers(ca.certPem)[0]!;
}

describe('bundle publishers', { timeout: 30000 }, () => {
  let fake: FakeKube;
  let r1: Buffer;
  let r2: Buffer;
  const log = pino({ level: 'silent' });
  const open: Publishers[] = [];

  before(async () => {
    fake = await startFakeKubeApiServer({
      clusterTrustBundleVersions: ['v1beta1'],
      users: { publisher: { rules: [CTB_RW, ATTEST, CM_RW] }, noattest: { rules: [CTB_RW] } },
    });
    r1 = await root('root one');
    r2 = await root('root two');
  });
  after(async () => {
    for (const p of open) await p.close();
    await fake.close();
  });

  async function start(raw: unknown, authority: FakeAuthority, user = 'publisher', clock = new ManualClock(Date.now())): Promise<Publishers> {
    const cfg = bundlePublishersSchema.parse(raw);
    const p = await startPublishers(cfg, { authority, log, clock, kube: fake.kubeConfig(user) });
    open.push(p);
    return p;
  }

  async function ctbRoots(): Promise<Buffer[]> {
    const o = await fake.api.get('clustertrustbundles', CTB_NAME);
    return pemToDers(o.spec.trustBundle);
  }

  it('ok/ClusterTrustBundle: created signer-linked, then follows a bundle change (old root kept by the authority)', async () => {
    const a = new FakeAuthority([r1]);
    const p = await start({ kubernetes: { clusterTrustBundle: { signerName: SIGNER } } }, a);
    assert.deepEqual(p.status(), { ok: true, publishedSequence: 1 });
    const o = await fake.api.get('clustertrustbundles', CTB_NAME);
    assert.equal(o.spec.signerName, SIGNER);
    assert.equal(o.metadata.labels['meshca.io/trust-domain'], TD);
    assert.deepEqual(await ctbRoots(), [r1]);
    a.set([r1, r2]);
    await p.flush();
    assert.deepEqual(await ctbRoots(), [r1, r2]);
    assert.equal(p.status().publishedSequence, 2);
    const writes = fake.requests.filter((r) => r.resource === 'clustertrustbundles' && r.verb === 'update').length;
    await p.flush();
    assert.equal(fake.requests.filter((r) => r.resource === 'clustertrustbundles' && r.verb === 'update').length, writes, 'no write when nothing changed');
    await p.close();
    await fake.api.delete('clustertrustbundles', CTB_NAME);
  });

  it('ok/ClusterTrustBundle at v1 when served; duplicates removed', async () => {
    fake.setClusterTrustBundleVersions(['v1beta1', 'v1']);
    try {
      const a = new FakeAuthority([r1, r1, r2]);
      const p = await start({ kubernetes: { clusterTrustBundle: { signerName: SIGNER } } }, a);
      assert.equal(p.status().ok, true, p.status().reason);
      assert.ok(fake.requests.some((r) => r.method === 'POST' && r.path === '/apis/certificates.k8s.io/v1/clustertrustbundles'));
      assert.deepEqual(await ctbRoots(), [r1, r2]);
      await p.close();
      await fake.api.delete('clustertrustbundles', CTB_NAME);
    } finally {
      fake.setClusterTrustBundleVersions(['v1beta1']);
    }
  });

  it('fail/ClusterTrustBundle without attest: status names the missing permission; retried with backoff', async () => {
    const clock = new ManualClock(Date.now());
    const a = new FakeAuthority([r1]);
    const p = await start({ kubernetes: { clusterTrustBundle: { signerName: SIGNER } } }, a, 'noattest', clock);
    const s = p.status();
    assert.equal(s.ok, false);
    assert.match(s.reason ?? '', /user not permitted to attest for signerName "example\.com\/meshca".*"attest" on signers "example\.com\/meshca"/);
    const before = fake.requests.length;
    await clock.advanceAsync(1000);
    await eventually(() => fake.requests.length > before, 2000, 'retry');
    await p.close();
  });

  it('ok/ConfigMaps: written in each namespace, other keys kept, bundle change followed, deletion repaired on resync', async () => {
    const clock = new ManualClock(Date.now());
    const a = new FakeAuthority([r1]);
    const p = await start({ kubernetes: { configMaps: { namespaces: ['app-a', 'app-b'] }, resyncInterval: '1m' } }, a, 'publisher', clock);
    assert.equal(p.status().ok, true, p.status().reason);
    for (const ns of ['app-a', 'app-b']) {
      const cm = await fake.api.get('configmaps', 'meshca-ca-bundle', { namespace: ns });
      assert.equal(cm.data['ca.crt'], toPem(r1));
    }
    const cur = await fake.api.get('configmaps', 'meshca-ca-bundle', { namespace: 'app-a' });
    await fake.api.update('configmaps', { ...cur, data: { ...cur.data, 'extra.txt': 'keep me' } }, { namespace: 'app-a' });
    a.set([r1, r2]);
    await p.flush();
    const upd = await fake.api.get('configmaps', 'meshca-ca-bundle', { namespace: 'app-a' });
    assert.equal(upd.data['ca.crt'], toPem(r1) + toPem(r2));
    assert.equal(upd.data['extra.txt'], 'keep me');
    await fake.api.delete('configmaps', 'meshca-ca-bundle', { namespace: 'app-b' });
    await clock.advanceAsync(60_000);
    await eventually(async () => {
      try {
        return (await fake.api.get('configmaps', 'meshca-ca-bundle', { namespace: 'app-b' })).data['ca.crt'] === toPem(r1) + toPem(r2);
      } catch {
        return false;
      }
    }, 3000, 'repaired ConfigMap');
    await p.close();
  });

  it('ok/a 409 Conflict on update is re-read and retried', async () => {
    const a = new FakeAuthority([r1]);
    const p = await start({ kubernetes: { configMaps: { name: 'conflict-test', namespaces: ['app-a'] } } }, a);
    fake.failNext(1, { code: 409, reason: 'Conflict', message: 'the object has been modified', match: (r) => r.verb === 'update' && r.resource === 'configmaps' });
    a.set([r2]);
    await p.flush();
    assert.equal(p.status().ok, true, p.status().reason);
    assert.equal((await fake.api.get('configmaps', 'conflict-test', { namespace: 'app-a' })).data['ca.crt'], toPem(r2));
    await p.close();
  });

  it('fail/ConfigMap in a namespace without RBAC: the namespace is named, the others are written', async () => {
    const a = new FakeAuthority([r1]);
    const p = await start({ kubernetes: { configMaps: { name: 'partial', namespaces: ['app-a', 'locked'] } } }, a);
    const s = p.status();
    assert.equal(s.ok, false);
    assert.match(s.reason ?? '', /1 of 2 namespaces not updated: publish\(configmap\): write ConfigMap locked\/partial: 403 Forbidden/);
    assert.equal((await fake.api.get('configmaps', 'partial', { namespace: 'app-a' })).data['ca.crt'], toPem(r1));
    await p.close();
  });

  it('ok/ConfigMaps by namespaceSelector: labelled, non-terminating namespaces only; created with apiVersion v1 and kind ConfigMap', async () => {
    fake.addUser('nspublisher', {
      rules: [
        { apiGroups: [''], resources: ['namespaces'], verbs: ['list'] },
        { apiGroups: [''], resources: ['configmaps'], verbs: ['create', 'get', 'update'], namespaces: ['team-a', 'team-b', 'team-gone'] },
      ],
    });
    await fake.api.create('namespaces', { metadata: { name: 'team-a', labels: { 'meshca.io/trust': 'enabled' } } });
    await fake.api.create('namespaces', { metadata: { name: 'team-b', labels: { 'meshca.io/trust': 'enabled' } } });
    await fake.api.create('namespaces', { metadata: { name: 'team-gone', labels: { 'meshca.io/trust': 'enabled' } }, status: { phase: 'Terminating' } });
    await fake.api.create('namespaces', { metadata: { name: 'team-c' } });
    const a = new FakeAuthority([r1]);
    const p = await start({ kubernetes: { configMaps: { name: 'by-selector', namespaceSelector: { 'meshca.io/trust': 'enabled' } } } }, a, 'nspublisher');
    assert.equal(p.status().ok, true, p.status().reason);
    for (const ns of ['team-a', 'team-b']) assert.equal((await fake.api.get('configmaps', 'by-selector', { namespace: ns })).data['ca.crt'], toPem(r1));
    for (const ns of ['team-c', 'team-gone']) await assert.rejects(fake.api.get('configmaps', 'by-selector', { namespace: ns }), /not found/);
    const listNs = fake.requests.find((r) => r.user === 'nspublisher' && r.resource === 'namespaces');
    assert.equal(listNs?.query.labelSelector, 'meshca.io/trust=enabled');
    const creates = fake.requests.filter((r) => r.user === 'nspublisher' && r.resource === 'configmaps' && r.verb === 'create');
    assert.equal(creates.length, 2);
    for (const c of creates) {
      const body = c.body as { apiVersion?: string; kind?: string };
      assert.equal(body.apiVersion, 'v1', 'create body names its apiVersion');
      assert.equal(body.kind, 'ConfigMap', 'create body names its kind');
    }
    await p.close();
  });

  it('config/keys, defaults and errors', () => {
    assert.deepEqual(bundlePublishersSchema.parse({}), {});
    const c = bundlePublishersSchema.parse({ kubernetes: { configMaps: { namespaces: ['a'] }, clusterTrustBundle: { signerName: SIGNER } } });
    assert.equal(c.kubernetes!.configMaps!.name, 'meshca-ca-bundle');
    assert.equal(c.kubernetes!.configMaps!.key, 'ca.crt');
    assert.equal(c.kubernetes!.clusterTrustBundle!.nameSuffix, 'meshca');
    assert.equal(c.kubernetes!.resyncInterval, 300);
    const bad = bundlePublishersSchema.safeParse({ kubernetes: { configMaps: {}, clusterTrustBundle: { signerName: 'kubernetes.io/x', nameSuffix: 'a:b' } } });
    const msgs = bad.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n');
    assert.match(msgs, /configMaps\.namespaces: name at least one namespace/);
    assert.match(msgs, /clusterTrustBundle\.signerName: .*reserved/);
    assert.match(msgs, /clusterTrustBundle\.nameSuffix: must be a lowercase RFC 1123 subdomain without ":"/);
    assert.match(bundlePublishersSchema.safeParse({ kubernetes: {} }).error!.issues[0]!.message, /set clusterTrustBundle and\/or configMaps/);
  });
});
