import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { startHarness, type Harness } from '../support/sds-harness.js';
import { SECRET_TYPE_URL, type SdsClient } from '../support/sds-client.js';

const WEB = 'spiffe://example.org/ns/default/sa/web';

// protocols.md §1.1: SDS is also reachable over envoy.service.discovery.v3.AggregatedDiscoveryService (ADS), where
// type_url is required; on SecretDiscoveryService an empty type_url is implicit (discovery.proto).
describe('SDS over ADS, and the implicit type_url of SecretDiscoveryService', { timeout: 60_000 }, () => {
  let h: Harness;
  let web: SdsClient;
  before(async () => {
    h = await startHarness();
    web = await h.client(WEB, { id: 'ads-node', cluster: 'web' });
  });
  after(async () => h.close());

  it('StreamAggregatedResources: default and ROOTCA on one stream, one Secret per response, ACKs get no reply', async () => {
    const s = web.aggregatedResources();
    s.request(['default', 'ROOTCA']);
    const got = [await s.next(), await s.next()];
    assert.deepEqual(got.map((r) => r.secrets[0]!.name).sort(), ['ROOTCA', 'default']);
    for (const r of got) {
      assert.equal(r.type_url, SECRET_TYPE_URL);
      assert.equal(r.resources.length, 1);
      assert.equal(r.resources[0]!.type_url, SECRET_TYPE_URL);
      assert.ok(r.version_info.length > 0 && r.nonce.length > 0);
    }
    const cert = got.find((r) => r.secrets[0]!.name === 'default')!.secrets[0]!;
    assert.equal(new X509Certificate(cert.tls_certificate!.certificate_chain.inline_bytes).subjectAltName, `URI:${WEB}`);
    const root = got.find((r) => r.secrets[0]!.name === 'ROOTCA')!.secrets[0]!;
    assert.match(root.validation_context!.trusted_ca!.inline_bytes.toString(), /BEGIN CERTIFICATE/);
    // Envoy ACKs the latest response (the earlier one's nonce is stale then); neither gets an answer.
    s.ack(got[0]!);
    s.ack(got[1]!);
    await s.expectSilence(300);
    s.cancel();
  });

  it('DeltaAggregatedResources: subscribed names come back as Resources with name and version', async () => {
    const s = web.deltaAggregatedResources();
    s.send({ resource_names_subscribe: ['ROOTCA'] });
    const r = await s.next();
    assert.equal(r.type_url, SECRET_TYPE_URL);
    assert.equal(r.resources[0]!.name, 'ROOTCA');
    assert.ok(r.resources[0]!.version.length > 0 && r.nonce.length > 0);
    s.ack(r);
    s.send({ resource_names_unsubscribe: ['ROOTCA'] });
    await s.expectSilence(300);
    s.cancel();
  });

  it('ADS requires the Secret type_url: empty or another type is INVALID_ARGUMENT naming it', async () => {
    const empty = web.aggregatedResources();
    empty.send({ resource_names: ['ROOTCA'], type_url: '' });
    const st1 = await empty.status();
    assert.equal(st1.code, grpc.status.INVALID_ARGUMENT);
    assert.match(st1.details, /type_url is required on AggregatedDiscoveryService/);

    const cluster = web.aggregatedResources();
    cluster.send({ resource_names: [], type_url: 'type.googleapis.com/envoy.config.cluster.v3.Cluster' });
    const st2 = await cluster.status();
    assert.equal(st2.code, grpc.status.INVALID_ARGUMENT);
    assert.match(st2.details, /envoy\.config\.cluster\.v3\.Cluster/);

    const delta = web.deltaAggregatedResources();
    delta.send({ resource_names_subscribe: ['ROOTCA'], type_url: '' });
    assert.equal((await delta.status()).code, grpc.status.INVALID_ARGUMENT);
  });

  it('StreamSecrets, DeltaSecrets and FetchSecrets accept an empty type_url as Secrets and answer with it set', async () => {
    const s = web.streamSecrets();
    s.send({ resource_names: ['ROOTCA'], type_url: '' });
    const r = await s.next();
    assert.equal(r.type_url, SECRET_TYPE_URL);
    assert.equal(r.secrets[0]!.name, 'ROOTCA');
    s.send({ resource_names: ['ROOTCA'], type_url: '', version_info: r.version_info, response_nonce: r.nonce });
    await s.expectSilence(300);
    s.cancel();

    const d = web.deltaSecrets();
    d.send({ resource_names_subscribe: ['ROOTCA'], type_url: '' });
    const dr = await d.next();
    assert.equal(dr.type_url, SECRET_TYPE_URL);
    assert.equal(dr.resources[0]!.name, 'ROOTCA');
    d.cancel();

    const f = await web.fetchSecrets(['ROOTCA'], undefined, '');
    assert.equal(f.type_url, SECRET_TYPE_URL);
    assert.equal(f.secrets[0]!.name, 'ROOTCA');
  });

  it('ADS streams count as open SDS streams and are released on cancel', async () => {
    const open = async (): Promise<number> => h.metric('meshca_sds_streams_open', { method: 'StreamAggregatedResources' });
    const before = await open();
    const s = web.aggregatedResources();
    s.request(['ROOTCA']);
    await s.next();
    assert.equal(await open(), before + 1);
    s.cancel();
    const deadline = Date.now() + 5000;
    while ((await open()) !== before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await open(), before);
  });
});
