import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startInstance, type Instance } from '../support/meshca-instance.js';
import { SdsClient, clientProtos, type DecodedSecret } from '../support/sds-client.js';

const TD = 'mesh.test';
const WEB = `spiffe://${TD}/ns/default/sa/web`;
const PEER = 'alpha.test';

function validatorDomains(s: DecodedSecret): string[] {
  const any = s.validation_context!.custom_validator_config!.typed_config;
  const cfg = clientProtos().spiffeValidator.deserialize(any.value) as { trust_domains: { name: string }[] };
  return cfg.trust_domains.map((t) => t.name);
}

/** SDS against a meshca whose bundle registry gains and loses a federated trust domain (protocols.md §2, §3.1). */
describe('SDS with federated trust domains', { timeout: 60_000 }, () => {
  let m: Instance;
  let web: SdsClient;
  let peerRoots: Buffer[];

  before(async () => {
    m = await startInstance({ trustDomain: TD });
    const peer = await startInstance({ trustDomain: PEER });
    peerRoots = [...peer.core.authority.bundle().rootsDer];
    await peer.close();
    const creds = await m.credentialsFor(WEB);
    web = new SdsClient({
      target: `127.0.0.1:${m.grpcPort}`,
      tls: { caPem: m.rootsPem(), certPem: creds.certPem, keyPem: creds.keyPem },
      node: { id: 'fed-node', cluster: 'web' },
    });
  });
  after(async () => {
    web?.close();
    await m?.close();
  });

  it('ALL lists the own and federated trust domains sorted by name', async () => {
    m.registry.setFederated(PEER, { rootsDer: peerRoots, refreshHintSeconds: 300, source: 'federated-file' });
    try {
      const s = web.streamSecrets();
      s.request(['ALL']);
      const r = await s.next();
      assert.deepEqual(validatorDomains(r.secrets[0]!), [PEER, TD]);
      s.cancel();
    } finally {
      m.registry.removeFederated(PEER);
    }
  });

  it('Delta: a trust domain whose bundle goes away is listed in removed_resources and sent again when it returns', async () => {
    m.registry.setFederated(PEER, { rootsDer: peerRoots, refreshHintSeconds: 300, source: 'federated-file' });
    const s = web.deltaSecrets();
    try {
      s.send({ resource_names_subscribe: [`spiffe://${PEER}`] });
      const r1 = await s.next();
      assert.equal(r1.resources[0]!.name, `spiffe://${PEER}`);
      s.ack(r1);
      m.registry.removeFederated(PEER);
      const r2 = await s.next();
      assert.deepEqual(r2.removed_resources, [`spiffe://${PEER}`]);
      assert.equal(r2.resources.length, 0);
      assert.ok(r2.nonce.length > 0);
      s.ack(r2);
      await s.expectSilence(200);
      assert.equal(s.endStatus, undefined, 'the stream stays open');
      m.registry.setFederated(PEER, { rootsDer: peerRoots, refreshHintSeconds: 300, source: 'federated-file' });
      const r3 = await s.next();
      assert.equal(r3.resources[0]!.name, `spiffe://${PEER}`);
      assert.equal(r3.secrets[0]!.validation_context!.trusted_ca!.inline_bytes.toString(), m.registry.get(PEER)!.pem);
    } finally {
      s.cancel();
      m.registry.removeFederated(PEER);
    }
  });

  it('Delta: subscribing to a trust domain without a bundle gets removed_resources, then the bundle when it appears', async () => {
    const s = web.deltaSecrets();
    try {
      s.send({ resource_names_subscribe: [`spiffe://${PEER}`, 'ROOTCA'] });
      const got = [await s.next(), await s.next()];
      const removed = got.find((r) => r.removed_resources.length > 0)!;
      assert.deepEqual(removed.removed_resources, [`spiffe://${PEER}`]);
      assert.deepEqual(got.flatMap((r) => r.resources.map((x) => x.name)), ['ROOTCA']);
      for (const r of got) s.ack(r);
      // Subscribing again is answered again.
      s.send({ resource_names_subscribe: [`spiffe://${PEER}`] });
      assert.deepEqual((await s.next()).removed_resources, [`spiffe://${PEER}`]);
      m.registry.setFederated(PEER, { rootsDer: peerRoots, refreshHintSeconds: 300, source: 'federated-file' });
      const r = await s.next();
      assert.equal(r.resources[0]!.name, `spiffe://${PEER}`);
      assert.equal(s.endStatus, undefined);
    } finally {
      s.cancel();
      m.registry.removeFederated(PEER);
    }
  });

  it('SotW: a configured federated trust domain without a bundle yet is held and pushed when its bundle arrives; an unconfigured one is INVALID_ARGUMENT', async () => {
    const PENDING = 'beta.test';
    // Configured, but its endpoint refuses connections: no bundle until the registry gets one.
    await m.federate({ trustDomains: [{ trustDomain: PENDING, bundleEndpointUrl: 'https://127.0.0.1:9/bundle', profile: 'https_web' }] });
    assert.equal(m.registry.get(PENDING), undefined);
    const s = web.streamSecrets();
    try {
      s.request([`spiffe://${PENDING}`]);
      await s.expectSilence(300);
      assert.equal(s.endStatus, undefined, 'the stream stays open (protocols.md §2: no "not found" in SotW)');
      m.registry.setFederated(PENDING, { rootsDer: peerRoots, refreshHintSeconds: 300, source: 'federated-file' });
      const r = await s.next();
      assert.equal(r.secrets[0]!.name, `spiffe://${PENDING}`);
      assert.equal(r.secrets[0]!.validation_context!.trusted_ca!.inline_bytes.toString(), m.registry.get(PENDING)!.pem);
      s.ack(r);
      await s.expectSilence(200);
    } finally {
      s.cancel();
      m.registry.removeFederated(PENDING);
    }
    const u = web.streamSecrets();
    u.request(['spiffe://never-configured.test']);
    const st = await u.status();
    assert.equal(st.code, 3);
    assert.match(st.details, /never-configured\.test/);
  });
});
