import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { startHarness, type Harness } from '../support/sds-harness.js';
import { startInstance, type Instance } from '../support/meshca-instance.js';
import { SdsClient } from '../support/sds-client.js';
import { RawStream, all, encode, fieldNumbers, one, str, strs, type Fields } from '../support/pb-wire.js';

/**
 * SDS at the wire level, the way a real Envoy (and an independent verifier) talks to it: every request is written
 * from the field numbers of protocols.md §1.2-§1.4 (no .proto), sent over a real mTLS gRPC channel, and every
 * response is read back field by field. Covers Envoy's behaviours of §1.5 (one stream per secret, node only on the
 * first message, ACKs echoing version and nonce, NACKs with error_detail, reconnects) and the server rules of §2.
 */
const TD = 'example.org';
const WEB = `spiffe://${TD}/ns/default/sa/web`;
const SDS = '/envoy.service.secret.v3.SecretDiscoveryService/';
const SECRET = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';

/** envoy.config.core.v3.Node as Envoy 1.30 sends it: id=1, cluster=2, user_agent_name=6, user_agent_build_version=8. */
function node(id: string): Fields {
  return [
    [1, id],
    [2, 'wire-test'],
    [6, 'envoy'],
    [8, [[1, [[1, 1], [2, 30], [3, 2]]]]],
  ];
}

interface SotwReq {
  version?: string;
  node?: Fields;
  names?: string[];
  typeUrl?: string;
  nonce?: string;
  error?: { code: number; message: string };
}

/** DiscoveryRequest{version_info=1, node=2, resource_names=3, type_url=4, response_nonce=5, error_detail=6}. */
function sotwReq(r: SotwReq): Fields {
  const f: Array<readonly [number, Fields[number][1]]> = [];
  if (r.version) f.push([1, r.version]);
  if (r.node) f.push([2, r.node]);
  for (const n of r.names ?? []) f.push([3, n]);
  f.push([4, r.typeUrl ?? SECRET]);
  if (r.nonce) f.push([5, r.nonce]);
  if (r.error) f.push([6, [[1, r.error.code], [2, r.error.message]]]);
  return f;
}

interface DeltaReq {
  node?: Fields;
  subscribe?: string[];
  unsubscribe?: string[];
  initial?: Record<string, string>;
  nonce?: string;
  error?: { code: number; message: string };
}

/**
 * DeltaDiscoveryRequest{node=1, type_url=2, resource_names_subscribe=3, resource_names_unsubscribe=4,
 * initial_resource_versions=5 (map entries {key=1, value=2}), response_nonce=6, error_detail=7}.
 */
function deltaReq(r: DeltaReq): Fields {
  const f: Array<readonly [number, Fields[number][1]]> = [];
  if (r.node) f.push([1, r.node]);
  f.push([2, SECRET]);
  for (const n of r.subscribe ?? []) f.push([3, n]);
  for (const n of r.unsubscribe ?? []) f.push([4, n]);
  for (const [k, v] of Object.entries(r.initial ?? {})) f.push([5, [[1, k], [2, v]]]);
  if (r.nonce) f.push([6, r.nonce]);
  if (r.error) f.push([7, [[1, r.error.code], [2, r.error.message]]]);
  return f;
}

interface SotwRes {
  version: string;
  nonce: string;
  /** Secret bytes of each resource, in order. */
  secrets: Buffer[];
  names: string[];
}

/**
 * Checks a DiscoveryResponse byte by byte: only version_info=1, resources=2, type_url=4, nonce=5 (canary=3 unset);
 * type_url = Secret; every resource an Any{type_url=1 = Secret, value=2}; version and nonce non-empty.
 */
function readSotw(b: Buffer): SotwRes {
  for (const no of fieldNumbers(b)) assert.ok([1, 2, 4, 5].includes(no), `DiscoveryResponse has unexpected field ${no}`);
  assert.equal(str(b, 4), SECRET, 'DiscoveryResponse.type_url');
  const version = str(b, 1);
  const nonce = str(b, 5);
  assert.ok(version.length > 0, 'version_info is set');
  assert.ok(nonce.length > 0, 'nonce is set');
  const secrets = all(b, 2).map((any) => {
    assert.deepEqual(fieldNumbers(any), [1, 2], 'Any{type_url=1, value=2}');
    assert.equal(str(any, 1), SECRET, 'Any.type_url equals the response type_url');
    return one(any, 2);
  });
  return { version, nonce, secrets, names: secrets.map((s) => str(s, 1)) };
}

/** One SotW response holding exactly one Secret named `name` (sds_api.cc: exactly 1 resource, matching name). */
function readOne(b: Buffer, name: string): SotwRes & { secret: Buffer } {
  const r = readSotw(b);
  assert.equal(r.secrets.length, 1, 'exactly one Secret per SotW response');
  assert.equal(r.names[0], name, 'Secret.name equals the requested name');
  return { ...r, secret: r.secrets[0]! };
}

/** Secret{tls_certificate=2{certificate_chain=1{inline_bytes=2}, private_key=2{inline_bytes=2}}}. */
function tlsOf(secret: Buffer): { chainPem: string; keyPem: string } {
  assert.deepEqual(fieldNumbers(secret), [1, 2], 'Secret{name=1, tls_certificate=2}');
  const tls = one(secret, 2);
  const chain = one(tls, 1);
  const key = one(tls, 2);
  assert.deepEqual(fieldNumbers(chain), [2], 'certificate_chain is DataSource.inline_bytes');
  assert.deepEqual(fieldNumbers(key), [2], 'private_key is DataSource.inline_bytes');
  const chainPem = one(chain, 2).toString();
  const keyPem = one(key, 2).toString();
  assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  const cert = new X509Certificate(chainPem);
  assert.deepEqual(
    createPublicKey(createPrivateKey(keyPem)).export({ format: 'der', type: 'spki' }),
    cert.publicKey.export({ format: 'der', type: 'spki' }),
    'the key matches the leaf',
  );
  return { chainPem, keyPem };
}

/** Secret{validation_context=4{trusted_ca=1{inline_bytes=2}}}: the PEM bundle. */
function trustedCaOf(secret: Buffer): string {
  assert.deepEqual(fieldNumbers(secret), [1, 4], 'Secret{name=1, validation_context=4}');
  const vc = one(secret, 4);
  assert.deepEqual(fieldNumbers(vc), [1], 'validation_context{trusted_ca=1}');
  const ds = one(vc, 1);
  assert.deepEqual(fieldNumbers(ds), [2], 'trusted_ca is DataSource.inline_bytes');
  return one(ds, 2).toString();
}

function serialOf(secret: Buffer): string {
  return new X509Certificate(tlsOf(secret).chainPem).serialNumber;
}

interface DeltaRes {
  systemVersion: string;
  nonce: string;
  resources: Array<{ name: string; version: string; secret: Buffer }>;
  removed: string[];
}

/**
 * Checks a DeltaDiscoveryResponse: only system_version_info=1, resources=2, type_url=4, nonce=5, removed_resources=6;
 * nonce required; each Resource{version=1, resource=2 Any, name=3} with a name, a version and a Secret named alike.
 */
function readDelta(b: Buffer): DeltaRes {
  for (const no of fieldNumbers(b)) assert.ok([1, 2, 4, 5, 6].includes(no), `DeltaDiscoveryResponse has unexpected field ${no}`);
  assert.equal(str(b, 4), SECRET, 'DeltaDiscoveryResponse.type_url');
  const nonce = str(b, 5);
  assert.ok(nonce.length > 0, 'nonce is required');
  const resources = all(b, 2).map((res) => {
    for (const no of fieldNumbers(res)) assert.ok([1, 2, 3].includes(no), `Resource has unexpected field ${no}`);
    const name = str(res, 3);
    const version = str(res, 1);
    assert.ok(name.length > 0, 'Resource.name is set');
    assert.ok(version.length > 0, 'Resource.version is set');
    const any = one(res, 2);
    assert.equal(str(any, 1), SECRET, 'Resource.resource is a Secret Any');
    const secret = one(any, 2);
    assert.equal(str(secret, 1), name, 'Secret.name equals Resource.name');
    return { name, version, secret };
  });
  return { systemVersion: str(b, 1), nonce, resources, removed: strs(b, 6) };
}

/** Collects n SotW responses keyed by secret name. */
async function sotwByName(s: RawStream, n: number): Promise<Map<string, SotwRes & { secret: Buffer }>> {
  const out = new Map<string, SotwRes & { secret: Buffer }>();
  for (let i = 0; i < n; i++) {
    const r = readSotw(await s.next());
    assert.equal(r.secrets.length, 1, 'one Secret per response');
    assert.ok(!out.has(r.names[0]!), `${r.names[0]} sent once`);
    out.set(r.names[0]!, { ...r, secret: r.secrets[0]! });
  }
  return out;
}

function fetchRaw(client: grpc.Client, req: Fields): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(
      `${SDS}FetchSecrets`,
      (b: Buffer) => b,
      (b: Buffer) => b,
      encode(req),
      { deadline: Date.now() + 10_000 },
      (err, res) => (err ? reject(err) : resolve(res!)),
    ),
  );
}

describe('SDS on the wire (hand-encoded requests, field-by-field responses)', { timeout: 90_000 }, () => {
  let h: Harness;
  let web: SdsClient;
  const streams: RawStream[] = [];
  const open = (method: string): RawStream => {
    const s = new RawStream(web.client, `${SDS}${method}`);
    streams.push(s);
    return s;
  };

  before(async () => {
    h = await startHarness();
    web = await h.client(WEB, { id: 'unused', cluster: 'unused' });
  });
  after(async () => {
    for (const s of streams) s.cancel();
    await h.close();
  });

  it('Envoy with set_node_on_first_message_only: one stream per secret, node on the first request only, ACKs get no reply', async () => {
    const cert = open('StreamSecrets');
    const root = open('StreamSecrets');
    cert.send(sotwReq({ node: node('envoy-a'), names: ['default'] }));
    root.send(sotwReq({ node: node('envoy-a'), names: ['ROOTCA'] }));
    const c = readOne(await cert.next(), 'default');
    const r = readOne(await root.next(), 'ROOTCA');
    const leaf = new X509Certificate(tlsOf(c.secret).chainPem);
    assert.equal(leaf.subjectAltName, `URI:${WEB}`);
    assert.equal(trustedCaOf(r.secret), h.authority.bundle().pem);
    // ACKs as Envoy sends them: last version, the names, the type, the nonce; no node.
    cert.send(sotwReq({ version: c.version, names: ['default'], nonce: c.nonce }));
    root.send(sotwReq({ version: r.version, names: ['ROOTCA'], nonce: r.nonce }));
    await Promise.all([cert.expectSilence(300), root.expectSilence(300)]);
    // A content change is pushed with a fresh version and nonce; its ACK again gets no reply.
    await h.fake!.rotateBundle();
    const r2 = readOne(await root.next(), 'ROOTCA');
    assert.equal(trustedCaOf(r2.secret), h.authority.bundle().pem);
    assert.notEqual(r2.version, r.version);
    assert.notEqual(r2.nonce, r.nonce);
    root.send(sotwReq({ version: r2.version, names: ['ROOTCA'], nonce: r2.nonce }));
    await root.expectSilence(300);
  });

  it('Envoy without set_node_on_first_message_only repeats the node in every request: an ACK is still an ACK', async () => {
    const s = open('StreamSecrets');
    s.send(sotwReq({ node: node('envoy-b'), names: ['default'] }));
    const c = readOne(await s.next(), 'default');
    s.send(sotwReq({ version: c.version, node: node('envoy-b'), names: ['default'], nonce: c.nonce }));
    await s.expectSilence(300);
  });

  it('NACK (error_detail code 13): no reply, the stream stays open; the same request again gets no reply; a change is pushed fresh', async () => {
    const s = open('StreamSecrets');
    s.send(sotwReq({ node: node('envoy-c'), names: ['default'] }));
    const c = readOne(await s.next(), 'default');
    const nacksBefore = await h.metric('meshca_sds_nacks_total', { method: 'StreamSecrets' });
    // Envoy NACKs with its previous good version ('' here) and the nonce it rejects.
    s.send(sotwReq({ names: ['default'], nonce: c.nonce, error: { code: 13, message: 'Unexpected SDS secret (expecting default)' } }));
    await s.expectSilence(300);
    assert.equal(await h.metric('meshca_sds_nacks_total', { method: 'StreamSecrets' }), nacksBefore + 1);
    s.send(sotwReq({ names: ['default'], nonce: c.nonce }));
    await s.expectSilence(200);
    h.fake!.reissueAll();
    const c2 = readOne(await s.next(), 'default');
    assert.notEqual(serialOf(c2.secret), serialOf(c.secret));
    assert.notEqual(c2.version, c.version);
    assert.notEqual(c2.nonce, c.nonce);
  });

  it('a NACK that changes the names applies them: the added name is sent', async () => {
    const s = open('StreamSecrets');
    s.send(sotwReq({ node: node('envoy-d'), names: ['ROOTCA'] }));
    const r = readOne(await s.next(), 'ROOTCA');
    s.send(sotwReq({ names: ['ROOTCA', 'default'], nonce: r.nonce, error: { code: 13, message: 'rejected' } }));
    readOne(await s.next(), 'default');
    await s.expectSilence(200);
  });

  it('several names on one SotW stream: one Secret per response, each named as requested; unsubscribe and resubscribe re-send', async () => {
    const s = open('StreamSecrets');
    s.send(sotwReq({ node: node('envoy-e'), names: ['default', 'ROOTCA', `spiffe://${TD}`, WEB] }));
    const got = await sotwByName(s, 4);
    assert.deepEqual([...got.keys()].sort(), ['ROOTCA', 'default', WEB, `spiffe://${TD}`].sort());
    assert.equal(new Set([...got.values()].map((r) => r.nonce)).size, 4, 'a fresh nonce per response');
    assert.equal(new Set([...got.values()].map((r) => r.version)).size, 4, 'a fresh version per response');
    let latest = [...got.values()].at(-1)!;
    // Drop default: nothing to send (WEB keeps this node's certificate alive).
    s.send(sotwReq({ version: latest.version, names: ['ROOTCA', `spiffe://${TD}`, WEB], nonce: latest.nonce }));
    await s.expectSilence(300);
    // Ask for default again: it is sent again (same key and certificate for this node), with a fresh version/nonce.
    s.send(sotwReq({ version: latest.version, names: ['ROOTCA', `spiffe://${TD}`, WEB, 'default'], nonce: latest.nonce }));
    const again = readOne(await s.next(), 'default');
    assert.equal(serialOf(again.secret), serialOf(got.get('default')!.secret));
    assert.ok(![...got.values()].some((r) => r.nonce === again.nonce || r.version === again.version));
    latest = again;
    // Unsubscribe everything (the node's certificate is released), then subscribe again.
    s.send(sotwReq({ version: latest.version, names: [], nonce: latest.nonce }));
    await s.expectSilence(300);
    s.send(sotwReq({ version: latest.version, names: ['ROOTCA', 'default'], nonce: latest.nonce }));
    const back = await sotwByName(s, 2);
    assert.equal(trustedCaOf(back.get('ROOTCA')!.secret), h.authority.bundle().pem);
    assert.equal(new X509Certificate(tlsOf(back.get('default')!.secret).chainPem).subjectAltName, `URI:${WEB}`);
  });

  it('a request with an old nonce is ignored (even with new names); the same request with the latest nonce is applied', async () => {
    const s = open('StreamSecrets');
    s.send(sotwReq({ node: node('envoy-f'), names: ['ROOTCA'] }));
    const r1 = readOne(await s.next(), 'ROOTCA');
    s.send(sotwReq({ version: r1.version, names: ['ROOTCA', 'default'], nonce: r1.nonce }));
    const c = readOne(await s.next(), 'default');
    // r1's nonce is stale now: a re-request of the same names, or with another name, is ignored.
    s.send(sotwReq({ version: r1.version, names: ['ROOTCA', 'default'], nonce: r1.nonce }));
    s.send(sotwReq({ version: r1.version, names: ['ROOTCA', 'default', 'ALL'], nonce: r1.nonce }));
    await s.expectSilence(300);
    s.send(sotwReq({ version: c.version, names: ['ROOTCA', 'default', 'ALL'], nonce: c.nonce }));
    readOne(await s.next(), 'ALL');
  });

  it('reconnect: a new stream whose first request carries the last ACKed version and no nonce is answered in full', async () => {
    const s1 = open('StreamSecrets');
    s1.send(sotwReq({ node: node('envoy-g'), names: ['default'] }));
    const c1 = readOne(await s1.next(), 'default');
    s1.send(sotwReq({ version: c1.version, names: ['default'], nonce: c1.nonce }));
    const s2 = open('StreamSecrets');
    s1.cancel();
    s2.send(sotwReq({ version: c1.version, node: node('envoy-g'), names: ['default'] }));
    const c2 = readOne(await s2.next(), 'default');
    assert.notEqual(c2.nonce, c1.nonce);
    tlsOf(c2.secret);
  });

  it('SotW wildcard: a stream that never named a resource gets default + ROOTCA; naming them later re-sends them; then [] unsubscribes all', async () => {
    const s = open('StreamSecrets');
    s.send(sotwReq({ node: node('envoy-h') }));
    const wild = await sotwByName(s, 2);
    assert.deepEqual([...wild.keys()].sort(), ['ROOTCA', 'default']);
    const last = [...wild.values()].at(-1)!;
    s.send(sotwReq({ version: last.version, nonce: last.nonce }));
    await s.expectSilence(200);
    // xds_protocol.rst: "the server must resend any newly requested resources, even if it previously sent those
    // resources without having been asked for them": default and ROOTCA were sent for the wildcard, not by name.
    s.send(sotwReq({ version: last.version, names: ['default', 'ROOTCA'], nonce: last.nonce }));
    const named = await sotwByName(s, 2);
    assert.deepEqual([...named.keys()].sort(), ['ROOTCA', 'default']);
    assert.equal(serialOf(named.get('default')!.secret), serialOf(wild.get('default')!.secret), 'the same certificate and key');
    assert.equal(trustedCaOf(named.get('ROOTCA')!.secret), h.authority.bundle().pem);
    const l2 = [...named.values()].at(-1)!;
    s.send(sotwReq({ version: l2.version, names: [], nonce: l2.nonce }));
    await s.expectSilence(200);
    await h.fake!.rotateBundle();
    await s.expectSilence(300);
  });

  it('SotW explicit wildcard: `*` gets default + ROOTCA; `*` plus a name it covers re-sends that name only', async () => {
    const s = open('StreamSecrets');
    s.send(sotwReq({ node: node('envoy-h2'), names: ['*'] }));
    const wild = await sotwByName(s, 2);
    assert.deepEqual([...wild.keys()].sort(), ['ROOTCA', 'default']);
    const last = [...wild.values()].at(-1)!;
    s.send(sotwReq({ version: last.version, names: ['*', 'ROOTCA'], nonce: last.nonce }));
    const r = readOne(await s.next(), 'ROOTCA');
    assert.equal(trustedCaOf(r.secret), h.authority.bundle().pem);
    // Still named: an ACK of the same set is silent.
    s.send(sotwReq({ version: r.version, names: ['*', 'ROOTCA'], nonce: r.nonce }));
    await s.expectSilence(300);
  });

  it('ALL: validation_context.custom_validator_config = SPIFFE validator with the bare trust domain and its PEM bundle', async () => {
    const s = open('StreamSecrets');
    s.send(sotwReq({ node: node('envoy-all'), names: ['ALL'] }));
    const r = readOne(await s.next(), 'ALL');
    assert.deepEqual(fieldNumbers(r.secret), [1, 4], 'Secret{name=1, validation_context=4}');
    const vc = one(r.secret, 4);
    assert.deepEqual(fieldNumbers(vc), [12], 'validation_context{custom_validator_config=12}');
    const ext = one(vc, 12);
    assert.equal(str(ext, 1), 'envoy.tls.cert_validator.spiffe');
    const any = one(ext, 2);
    assert.equal(str(any, 1), 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig');
    const cfg = one(any, 2);
    assert.deepEqual(fieldNumbers(cfg), [1], 'SPIFFECertValidatorConfig{trust_domains=1}');
    const td = one(cfg, 1);
    assert.equal(str(td, 1), TD, 'bare trust domain name, no spiffe://');
    const ds = one(td, 2);
    assert.deepEqual(fieldNumbers(ds), [2], 'trust_bundle is DataSource.inline_bytes');
    assert.equal(one(ds, 2).toString(), h.authority.bundle().pem);
  });

  it('FetchSecrets: every requested name once, each Any typed, and a fresh version_info and nonce on every call', async () => {
    const req = sotwReq({ node: node('envoy-i'), names: ['default', 'ROOTCA'] });
    const a = readSotw(await fetchRaw(web.client, req));
    const b = readSotw(await fetchRaw(web.client, req));
    assert.deepEqual(a.names, ['default', 'ROOTCA']);
    assert.deepEqual(b.names, ['default', 'ROOTCA']);
    assert.notEqual(a.version, b.version);
    assert.notEqual(a.nonce, b.nonce);
    tlsOf(a.secrets[0]!);
    assert.equal(trustedCaOf(a.secrets[1]!), h.authority.bundle().pem);
  });

  it('DeltaSecrets: Resource{name, version, resource} per name, fresh nonce and system_version_info, ACK silent, pure unsubscribe silent', async () => {
    const s = open('DeltaSecrets');
    s.send(deltaReq({ node: node('envoy-j'), subscribe: ['default', 'ROOTCA'] }));
    const r1 = readDelta(await s.next());
    const r2 = readDelta(await s.next());
    assert.deepEqual([...r1.resources, ...r2.resources].map((r) => r.name).sort(), ['ROOTCA', 'default']);
    assert.deepEqual([...r1.removed, ...r2.removed], []);
    assert.notEqual(r1.nonce, r2.nonce);
    assert.ok(r1.systemVersion.length > 0 && r2.systemVersion.length > 0);
    assert.notEqual(r1.systemVersion, r2.systemVersion);
    s.send(deltaReq({ nonce: r1.nonce }));
    s.send(deltaReq({ nonce: r2.nonce }));
    await s.expectSilence(300);
    s.send(deltaReq({ unsubscribe: ['ROOTCA'] }));
    await s.expectSilence(300);
    await h.fake!.rotateBundle();
    await s.expectSilence(300);
    // Unknown trust domain: not found => removed_resources.
    s.send(deltaReq({ subscribe: ['spiffe://nowhere.test'] }));
    const nf = readDelta(await s.next());
    assert.deepEqual(nf.removed, ['spiffe://nowhere.test']);
    assert.deepEqual(nf.resources, []);
    // NACK with error_detail=7: no reply, open.
    s.send(deltaReq({ nonce: nf.nonce, error: { code: 13, message: 'rejected' } }));
    await s.expectSilence(300);
  });

  it('DeltaSecrets reconnect: initial_resource_versions (map entries) skip matching versions and send the rest', async () => {
    const s1 = open('DeltaSecrets');
    s1.send(deltaReq({ node: node('envoy-k'), subscribe: ['default', 'ROOTCA'] }));
    const got = [readDelta(await s1.next()), readDelta(await s1.next())].flatMap((r) => r.resources);
    const v = Object.fromEntries(got.map((r) => [r.name, r.version]));
    const s2 = open('DeltaSecrets');
    s2.send(deltaReq({ node: node('envoy-k'), subscribe: ['default', 'ROOTCA'], initial: v }));
    await s2.expectSilence(300);
    const s3 = open('DeltaSecrets');
    s3.send(deltaReq({ node: node('envoy-k'), subscribe: ['default', 'ROOTCA'], initial: { default: 'old', ROOTCA: v.ROOTCA! } }));
    const r = readDelta(await s3.next());
    assert.deepEqual(r.resources.map((x) => x.name), ['default']);
    assert.equal(r.resources[0]!.version, v.default, 'the version is the content version (same key and certificate for this node)');
    await s3.expectSilence(200);
  });

  it('DeltaSecrets legacy-wildcard reconnect: empty subscribe with initial_resource_versions skips what the client has', async () => {
    const s1 = open('DeltaSecrets');
    s1.send(deltaReq({ node: node('envoy-m') }));
    const got = [readDelta(await s1.next()), readDelta(await s1.next())].flatMap((r) => r.resources);
    const v = Object.fromEntries(got.map((r) => [r.name, r.version]));
    assert.deepEqual(Object.keys(v).sort(), ['ROOTCA', 'default']);
    const s2 = open('DeltaSecrets');
    s2.send(deltaReq({ node: node('envoy-m'), initial: v }));
    await s2.expectSilence(300);
    // Still a wildcard stream: a bundle change is pushed to it.
    await h.fake!.rotateBundle();
    const pushed = readDelta(await s2.next());
    assert.deepEqual(pushed.resources.map((x) => x.name), ['ROOTCA']);
    assert.notEqual(pushed.resources[0]!.version, v.ROOTCA);
  });

  it('DeltaSecrets wildcard: an empty first subscribe gets default + ROOTCA', async () => {
    const s = open('DeltaSecrets');
    s.send(deltaReq({ node: node('envoy-l') }));
    const names = [readDelta(await s.next()), readDelta(await s.next())].flatMap((r) => r.resources.map((x) => x.name));
    assert.deepEqual(names.sort(), ['ROOTCA', 'default']);
  });
});

describe('SDS on the wire against the real authority (chain PEM built from the issued DER chain)', { timeout: 60_000 }, () => {
  let m: Instance;
  let client: SdsClient;

  before(async () => {
    m = await startInstance({ trustDomain: TD });
    const creds = await m.credentialsFor(WEB);
    client = new SdsClient({ target: `127.0.0.1:${m.grpcPort}`, tls: { caPem: m.rootsPem(), certPem: creds.certPem, keyPem: creds.keyPem }, node: { id: 'x', cluster: 'x' } });
  });
  after(async () => {
    client?.close();
    await m?.close();
  });

  it('certificate_chain is the leaf then the signing CA, chaining to ROOTCA; the content version is stable across streams of a node', async () => {
    const a = new RawStream(client.client, `${SDS}DeltaSecrets`);
    const b = new RawStream(client.client, `${SDS}DeltaSecrets`);
    try {
      a.send(deltaReq({ node: node('real-1'), subscribe: ['default', 'ROOTCA'] }));
      const got = [readDelta(await a.next()), readDelta(await a.next())].flatMap((r) => r.resources);
      const cert = got.find((r) => r.name === 'default')!;
      const root = got.find((r) => r.name === 'ROOTCA')!;
      const { chainPem } = tlsOf(cert.secret);
      const pems = chainPem.match(/-----BEGIN CERTIFICATE-----\n[\s\S]+?\n-----END CERTIFICATE-----\n/g) ?? [];
      assert.equal(pems.join(''), chainPem, 'the chain is a concatenation of PEM certificates, nothing else');
      assert.equal(pems.length, 2, 'leaf + signing CA');
      const [leaf, ca] = pems.map((p) => new X509Certificate(p));
      assert.equal(leaf!.subjectAltName, `URI:${WEB}`);
      assert.ok(leaf!.verify(ca!.publicKey), 'the leaf comes first and is signed by the next certificate');
      const anchors = (trustedCaOf(root.secret).match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));
      assert.ok(anchors.some((r) => ca!.checkIssued(r) && ca!.verify(r.publicKey)), 'the signing CA chains to a ROOTCA anchor');
      b.send(deltaReq({ node: node('real-1'), subscribe: ['default'] }));
      const again = readDelta(await b.next()).resources[0]!;
      assert.equal(again.version, cert.version);
      assert.ok(again.secret.equals(cert.secret), 'same bytes');
    } finally {
      a.cancel();
      b.cancel();
    }
  });
});
