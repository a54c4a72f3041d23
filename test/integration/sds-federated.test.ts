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
});
