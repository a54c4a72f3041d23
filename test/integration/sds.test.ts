import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { startHarness, type Harness } from '../support/sds-harness.js';
import { clientProtos, type DecodedSecret, type SdsClient } from '../support/sds-client.js';

const TD = 'example.org';
const WEB = `spiffe://${TD}/ns/default/sa/web`;
const DB = `spiffe://${TD}/ns/default/sa/db`;
const CTRL = `spiffe://${TD}/mesh/controller`;

function certOf(s: DecodedSecret): X509Certificate {
  assert.equal(s.type, 'tls_certificate');
  const pem = s.tls_certificate!.certificate_chain.inline_bytes.toString();
  return new X509Certificate(pem);
}

function assertCertFor(h: Harness, s: DecodedSecret, spiffeId: string): X509Certificate {
  const cert = certOf(s);
  assert.equal(cert.subjectAltName, `URI:${spiffeId}`);
  const key = createPrivateKey(s.tls_certificate!.private_key.inline_bytes.toString());
  assert.match(s.tls_certificate!.private_key.inline_bytes.toString(), /^-----BEGIN PRIVATE KEY-----/);
  assert.deepEqual(
    createPublicKey(key).export({ format: 'der', type: 'spki' }),
    cert.publicKey.export({ format: 'der', type: 'spki' }),
    'private key matches certificate',
  );
  const root = new X509Certificate(h.authority.bundle().rootsDer[0]!);
  assert.ok(cert.verify(root.publicKey), 'leaf chains to the bundle');
  return cert;
}

describe('SDS StreamSecrets / FetchSecrets over mTLS', { timeout: 60_000 }, () => {
  let h: Harness;
  let web: SdsClient;

  before(async () => {
    h = await startHarness({
      controllers: [{ id: CTRL, allow: [`spiffe://${TD}/ns/default/*`], maxTtlSeconds: 3600, generateKeys: true }],
    });
    web = await h.client(WEB, { id: 'web-node-1', cluster: 'web' });
  });
  after(async () => h.close());

  it('serves default as the caller certificate + PKCS#8 key, named as requested, and never answers an ACK', async () => {
    const s = web.streamSecrets();
    s.request(['default']);
    const r = await s.next();
    assert.equal(r.type_url, 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret');
    assert.ok(r.version_info.length > 0 && r.nonce.length > 0);
    assert.equal(r.resources.length, 1);
    assert.equal(r.resources[0]!.type_url, r.type_url);
    assert.equal(r.secrets[0]!.name, 'default');
    assertCertFor(h, r.secrets[0]!, WEB);
    s.ack(r);
    await s.expectSilence(300);
    s.cancel();
  });

  it('serves ROOTCA and spiffe://<td> as validation_context.trusted_ca with the bundle PEM', async () => {
    for (const name of ['ROOTCA', `spiffe://${TD}`]) {
      const s = web.streamSecrets();
      s.request([name]);
      const r = await s.next();
      assert.equal(r.secrets.length, 1);
      const sec = r.secrets[0]!;
      assert.equal(sec.name, name);
      assert.equal(sec.type, 'validation_context');
      assert.equal(sec.validation_context!.trusted_ca!.inline_bytes.toString(), h.authority.bundle().pem);
      s.cancel();
    }
  });

  it('serves ALL as a SPIFFE validator listing the bare trust domain and its bundle', async () => {
    const s = web.streamSecrets();
    s.request(['ALL']);
    const r = await s.next();
    const vc = r.secrets[0]!.validation_context!;
    assert.equal(r.secrets[0]!.name, 'ALL');
    assert.equal(vc.trusted_ca, null);
    assert.equal(vc.custom_validator_config!.name, 'envoy.tls.cert_validator.spiffe');
    const any = vc.custom_validator_config!.typed_config;
    assert.equal(any.type_url, 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig');
    const cfg = clientProtos().spiffeValidator.deserialize(any.value) as { trust_domains: Array<{ name: string; trust_bundle: { inline_bytes: Buffer } }> };
    assert.deepEqual(cfg.trust_domains.map((t) => t.name), [TD]);
    assert.equal(cfg.trust_domains[0]!.trust_bundle.inline_bytes.toString(), h.authority.bundle().pem);
    s.cancel();
  });

  it('the caller own SPIFFE ID is served under that name', async () => {
    const s = web.streamSecrets();
    s.request([WEB]);
    const r = await s.next();
    assert.equal(r.secrets[0]!.name, WEB);
    assertCertFor(h, r.secrets[0]!, WEB);
    s.cancel();
  });

  it('a NACK is counted, gets no reply, keeps the stream, and its name change is applied', async () => {
    const s = web.streamSecrets();
    s.request(['ROOTCA']);
    const r1 = await s.next();
    s.nack(r1, '');
    await s.expectSilence(300);
    assert.equal(await h.metric('meshca_sds_nacks_total'), 1);
    assert.equal(s.endStatus, undefined, 'stream still open');
    // A NACK that also changes names: the new name is sent.
    s.send({ resource_names: ['ROOTCA', 'default'], version_info: '', response_nonce: r1.nonce, error_detail: { code: 13, message: 'bad' } });
    const r2 = await s.next();
    assert.equal(r2.secrets[0]!.name, 'default');
    assert.notEqual(r2.nonce, r1.nonce);
    assert.notEqual(r2.version_info, r1.version_info);
    s.cancel();
  });

  it('ignores a request with a stale nonce', async () => {
    const s = web.streamSecrets();
    s.request(['ROOTCA']);
    const r1 = await s.next();
    s.ack(r1);
    s.send({ resource_names: ['ROOTCA', 'default'], version_info: r1.version_info, response_nonce: 'not-the-latest' });
    await s.expectSilence(300);
    // With the right nonce the same change is honoured.
    s.send({ resource_names: ['ROOTCA', 'default'], version_info: r1.version_info, response_nonce: r1.nonce });
    const r2 = await s.next();
    assert.equal(r2.secrets[0]!.name, 'default');
    s.cancel();
  });

  it('honours subscription changes: added names are sent, one Secret per response; removing all stops pushes', async () => {
    const s = web.streamSecrets();
    s.request(['ROOTCA']);
    const r1 = await s.next();
    s.ack(r1);
    s.send({ resource_names: ['ROOTCA', 'ALL', 'default'], version_info: r1.version_info, response_nonce: r1.nonce });
    const got = [await s.next(), await s.next()];
    assert.deepEqual(got.map((r) => r.resources.length), [1, 1]);
    assert.deepEqual(got.map((r) => r.secrets[0]!.name).sort(), ['ALL', 'default']);
    const last = got[1]!;
    s.send({ resource_names: [], version_info: last.version_info, response_nonce: last.nonce });
    await s.expectSilence(200);
    // Re-adding a name sends it again even though it was sent before.
    s.send({ resource_names: ['ROOTCA'], version_info: last.version_info, response_nonce: last.nonce });
    const r3 = await s.next();
    assert.equal(r3.secrets[0]!.name, 'ROOTCA');
    s.cancel();
  });

  it('a stream that never named a resource is a wildcard: default + ROOTCA', async () => {
    const s = web.streamSecrets();
    s.request([]);
    const got = [await s.next(), await s.next()];
    assert.deepEqual(got.map((r) => r.secrets[0]!.name).sort(), ['ROOTCA', 'default']);
    s.cancel();
  });

  it('unknown and malformed names end the stream with INVALID_ARGUMENT naming them', async () => {
    const s = web.streamSecrets();
    s.request(['ROOTCA', 'file-root:system', 'spiffe://Bad/x']);
    const st = await s.status();
    assert.equal(st.code, grpc.status.INVALID_ARGUMENT);
    assert.match(st.details, /file-root:system/);
    assert.match(st.details, /spiffe:\/\/Bad\/x/);
  });

  it('a wrong type_url ends the stream with INVALID_ARGUMENT naming it', async () => {
    const s = web.streamSecrets();
    s.send({ resource_names: ['default'], type_url: 'type.googleapis.com/envoy.config.cluster.v3.Cluster' });
    const st = await s.status();
    assert.equal(st.code, grpc.status.INVALID_ARGUMENT);
    assert.match(st.details, /envoy\.config\.cluster\.v3\.Cluster/);
  });

  it('a missing node.id on the first request is INVALID_ARGUMENT', async () => {
    const s = web.streamSecrets();
    s.send({ resource_names: ['ROOTCA'], node: null });
    const st = await s.status();
    assert.equal(st.code, grpc.status.INVALID_ARGUMENT);
    assert.match(st.details, /node\.id/);
  });

  it('a malformed node on the first request is INVALID_ARGUMENT naming it; repeated nodes in later requests are not decoded', async () => {
    const p = clientProtos();
    const path = '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets';
    const raw = (): { call: grpc.ClientDuplexStream<Buffer, Buffer>; data: Buffer[]; end: Promise<grpc.StatusObject> } => {
      const call = web.client.makeBidiStreamRequest(path, (b: Buffer) => b, (b: Buffer) => b);
      const data: Buffer[] = [];
      call.on('data', (d: Buffer) => data.push(d));
      call.on('error', () => undefined);
      const end = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
      return { call, data, end };
    };
    const req = (fields: object): Buffer => p.discoveryRequest.serialize({ type_url: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret', ...fields }) as Buffer;
    const badNode = Buffer.from([0x12, 0x03, 0x08, 0xff, 0xff]); // node (field 2) whose id varint is cut short
    const first = raw();
    first.call.write(Buffer.concat([req({ resource_names: ['ROOTCA'] }), badNode]));
    const st = await first.end;
    assert.equal(st.code, grpc.status.INVALID_ARGUMENT);
    assert.match(st.details, /DiscoveryRequest\.node is not a valid envoy\.config\.core\.v3\.Node/);

    const later = raw();
    later.call.write(req({ resource_names: ['ROOTCA'], node: { id: 'node-raw', cluster: 'c' } }));
    const until = Date.now() + 5000;
    while (later.data.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    const res = p.discoveryResponse.deserialize(later.data[0]!) as { version_info: string; nonce: string };
    // An ACK repeating a (here: garbage) node, as Envoy does without set_node_on_first_message_only.
    later.call.write(Buffer.concat([req({ resource_names: ['ROOTCA'], version_info: res.version_info, response_nonce: res.nonce }), badNode]));
    await new Promise((r) => setTimeout(r, 300));
    later.call.cancel();
    assert.equal((await later.end).code, grpc.status.CANCELLED, 'the stream stayed open until the client left');
  });

  it('asking for another identity is PERMISSION_DENIED naming it, and nothing is minted', async () => {
    const before = h.fake!.issued.filter((r) => r.spiffeId === DB).length;
    const s = web.streamSecrets();
    s.request([DB]);
    const st = await s.status();
    assert.equal(st.code, grpc.status.PERMISSION_DENIED);
    assert.match(st.details, new RegExp(DB.replace(/[/.]/g, '\\$&')));
    await assert.rejects(web.fetchSecrets([DB]), (e: grpc.ServiceError) => e.code === grpc.status.PERMISSION_DENIED);
    assert.equal(h.fake!.issued.filter((r) => r.spiffeId === DB).length, before, 'no certificate minted for the denied identity');
  });

  it('a controller allowed by authorization.controllers gets another identity', async () => {
    const ctrl = await h.client(CTRL, { id: 'ctrl-node', cluster: 'ctrl' });
    const s = ctrl.streamSecrets();
    s.request([DB]);
    const r = await s.next();
    assert.equal(r.secrets[0]!.name, DB);
    assertCertFor(h, r.secrets[0]!, DB);
    s.cancel();
  });

  it('FetchSecrets returns every requested secret with a fresh version and nonce each call', async () => {
    const a = await web.fetchSecrets(['default', 'ROOTCA']);
    const b = await web.fetchSecrets(['default', 'ROOTCA']);
    assert.deepEqual(a.secrets.map((s) => s.name), ['default', 'ROOTCA']);
    assert.equal(a.type_url, 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret');
    assert.ok(a.nonce && b.nonce && a.nonce !== b.nonce);
    assert.ok(a.version_info && b.version_info && a.version_info !== b.version_info);
    assertCertFor(h, a.secrets[0]!, WEB);
    await assert.rejects(web.fetchSecrets(['nope']), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /nope/.test(e.details));
    await assert.rejects(
      web.fetchSecrets(['ROOTCA'], undefined, 'type.googleapis.com/wrong'),
      (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT,
    );
  });

  it('two streams of one node share the key; two nodes of the same identity never do', async () => {
    const a1 = web.streamSecrets();
    const a2 = web.streamSecrets();
    a1.request(['default']);
    a2.request([WEB]);
    const [r1, r2] = [await a1.next(), await a2.next()];
    const k1 = r1.secrets[0]!.tls_certificate!.private_key.inline_bytes.toString();
    const k2 = r2.secrets[0]!.tls_certificate!.private_key.inline_bytes.toString();
    assert.equal(k1, k2);
    const other = await h.client(WEB, { id: 'web-node-2', cluster: 'web' });
    const b = other.streamSecrets();
    b.request(['default']);
    const r3 = await b.next();
    assert.notEqual(r3.secrets[0]!.tls_certificate!.private_key.inline_bytes.toString(), k1);
    a1.cancel();
    a2.cancel();
    b.cancel();
  });

  it('another caller claiming the same node.id never gets that node\'s key (a controller allowed the identity included)', async () => {
    const a = web.streamSecrets();
    a.request(['default']);
    const ra = await a.next();
    const key = ra.secrets[0]!.tls_certificate!.private_key.inline_bytes.toString();
    const ctrl = await h.client(CTRL, { id: 'web-node-1', cluster: 'web' });
    const c = ctrl.streamSecrets();
    c.request([WEB]);
    const rc = await c.next();
    assertCertFor(h, rc.secrets[0]!, WEB);
    assert.notEqual(rc.secrets[0]!.tls_certificate!.private_key.inline_bytes.toString(), key, 'stream: not the workload key');
    const f = await ctrl.fetchSecrets([WEB], { id: 'web-node-1', cluster: 'web' });
    assert.notEqual(f.secrets[0]!.tls_certificate!.private_key.inline_bytes.toString(), key, 'fetch: not the workload key');
    a.cancel();
    c.cancel();
  });
});

describe('SDS authorisation of controllers by ID prefix and key policy', { timeout: 60_000 }, () => {
  let h: Harness;
  const APP = `spiffe://${TD}/ns/apps/sa/x`;
  before(async () => {
    h = await startHarness({
      controllers: [
        { id: `spiffe://${TD}/mesh/*`, allow: [`spiffe://${TD}/ns/apps/*`], maxTtlSeconds: 3600, generateKeys: true },
        { id: `spiffe://${TD}/nokeys`, allow: [`spiffe://${TD}/ns/apps/*`], maxTtlSeconds: 3600, generateKeys: false },
      ],
    });
  });
  after(async () => h.close());

  async function denied(caller: string, name: string, why: RegExp): Promise<void> {
    const c = await h.client(caller, { id: caller, cluster: 'c' });
    const before = h.fake!.issued.filter((r) => r.spiffeId === name).length;
    const s = c.streamSecrets();
    s.request([name]);
    const st = await s.status();
    assert.equal(st.code, grpc.status.PERMISSION_DENIED, `${caller} -> ${name}: ${st.details}`);
    assert.ok(st.details.includes(`"${name}"`), `names the resource: ${st.details}`);
    assert.match(st.details, why);
    assert.equal(h.fake!.issued.filter((r) => r.spiffeId === name).length, before, 'nothing minted');
  }

  it('a caller under a controller ID prefix gets identities its allow patterns match, and no others', async () => {
    const c = await h.client(`spiffe://${TD}/mesh/ctrl-a`, { id: 'ctrl-a', cluster: 'c' });
    const s = c.streamSecrets();
    s.request([APP]);
    const r = await s.next();
    assertCertFor(h, r.secrets[0]!, APP);
    s.cancel();
    await denied(`spiffe://${TD}/mesh/ctrl-a`, `spiffe://${TD}/ns/other/sa/x`, /no allow pattern matches/);
    // The prefix matches whole path segments only.
    await denied(`spiffe://${TD}/meshy`, APP, /not a controller/);
  });

  it('a controller rule with generateKeys: false gets no other identity over SDS (SDS keys are generated by meshca)', async () => {
    await denied(`spiffe://${TD}/nokeys`, APP, /generateKeys: false/);
  });
});
