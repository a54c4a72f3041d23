import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startInstance, type Instance } from '../support/meshca-instance.js';
import { apiClients, unary, type ApiClients } from '../support/api-client.js';
import { corruptSignature, makeCsr } from '../support/csr.js';
import { fieldNumbers, strs } from '../support/pb-wire.js';
import { CaError } from '../../src/util/errors.js';

const TD = 'mesh.test';
const POD = `spiffe://${TD}/ns/default/sa/productpage`;
const ZTUNNEL = `spiffe://${TD}/ns/istio-system/sa/ztunnel`;

async function expectCode(p: Promise<unknown>, code: grpc.status, text?: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    const err = e as grpc.ServiceError;
    assert.equal(err.code, code, `expected ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
    if (text) assert.match(err.details, text);
    return;
  }
  assert.fail(`expected ${grpc.status[code]}, call succeeded`);
}

/**
 * A CSR exactly as istio-agent builds it (security/pkg/pki/util GenCSRTemplate + BuildSANExtension, RSA-2048 with
 * SHA256WithRSA), made once with Go's crypto/x509: Subject "O=" (an empty organisation), one URI SAN
 * spiffe://mesh.test/ns/default/sa/productpage in a *critical* subjectAltName extension, no other extension.
 */
const ISTIO_AGENT_CSR = `-----BEGIN CERTIFICATE REQUEST-----
MIICnTCCAYUCAQAwCzEJMAcGA1UEChMAMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A
MIIBCgKCAQEA4XqXyJwO+f/cXHdD5iCFD4LSDZdIN/uJ0gMe5XY7HUElMDbDBNA9
HLH9FKi37zrqXYIT7TcUwC6rR4f9x2XwYJVPysFld4IVigHzepaHGTVFvr9ikadW
KvJNdGmfjCtypfKLswJs962/vKylyt5HbE9mEoLJlR2vEIva0ZgtOJ3oi43Hu6JG
uav/PTVEwTMn6k8koMgxdF0hJVqa1MzkyiFpaDmZNDb+pGsMR/rHLA3vB6IATw5I
5FG8NQEvEZuK+/5hjpE85y/urdFASqBBgCoWKEYOqmSIYlpZHo7OJxKfp1qvllhA
AB0qn005mdKl+Fy/l6jOyo0SEGOOa8570wIDAQABoE0wSwYJKoZIhvcNAQkOMT4w
PDA6BgNVHREBAf8EMDAuhixzcGlmZmU6Ly9tZXNoLnRlc3QvbnMvZGVmYXVsdC9z
YS9wcm9kdWN0cGFnZTANBgkqhkiG9w0BAQsFAAOCAQEAQbP1cFlrNyvzGccum9LK
xmozmjjnVD6SLW9hZx+Ht4CuvNWNMYeSOHgT9St90U7suxqUmkeNR5entGbLVlY1
8vEM9WppNeHGiwNro7D2GMcoEaj5TbZ2ognBzXPqUKel+IRtNdHqW/hRdmevc0XS
M/1KPu2RvoaTPAvDrr/YAEZTj4L1Oe48BE+08e/OPrzUBq3WrLtFrJxa1r7eDE0W
YQml+J7jHv/vWAxzBWnppNUGpuJROzG7JQWBxF0b16JJhIeW50M9EKOsgmMH7p8/
uhTH883bCiDcmJDF8Y0KFyiWRCJ40LcPK5jeacfhjoKbW29DSYbNHOZtE1VnkHjo
vw==
-----END CERTIFICATE REQUEST-----
`;

/** A Struct as Istio's agent sends it (protobufjs names the bundled Value fields in camelCase). */
function metadata(fields: Record<string, string>) {
  return { fields: Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, { stringValue: v }])) };
}

/**
 * Protobuf by hand, from the field numbers in protocols.md §5 only (no .proto involved): what a Go istio-agent puts
 * on the wire. IstioCertificateRequest{csr=1 string, subject_id=2 (old, must be skipped), validity_duration=3 int64,
 * metadata=4 Struct{fields=1 map<string, Value{string_value=3}>}}; IstioCertificateResponse{cert_chain=1 repeated string}.
 */
function varint(n: bigint): Buffer {
  const out: number[] = [];
  let v = BigInt.asUintN(64, n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return Buffer.from(out);
}
function lenField(field: number, body: Buffer | string): Buffer {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  return Buffer.concat([varint(BigInt((field << 3) | 2)), varint(BigInt(b.length)), b]);
}
function rawIstioRequest(csr: string, validity: bigint, meta: Record<string, string>): Buffer {
  const entries = Object.entries(meta).map(([k, v]) => lenField(1, Buffer.concat([lenField(1, k), lenField(2, lenField(3, v))])));
  return Buffer.concat([lenField(1, csr), lenField(2, 'ignored-subject-id'), varint(BigInt((3 << 3) | 0)), varint(validity), lenField(4, Buffer.concat(entries))]);
}
function rawCertChain(buf: Buffer): string[] {
  assert.deepEqual([...new Set(fieldNumbers(buf))], [1], 'the response holds only field 1 (cert_chain)');
  return strs(buf, 1);
}

describe('istio.v1.auth.IstioCertificateService/CreateCertificate', { timeout: 60_000 }, () => {
  let m: Instance;
  let pod: ApiClients;
  let zt: ApiClients;

  before(async () => {
    m = await startInstance({
      trustDomain: TD,
      workload: { ttl: '12h', maxTtl: '48h' },
      controllers: [{ id: ZTUNNEL, allow: [`spiffe://${TD}/ns/*`], maxTtl: '24h' }],
    });
    pod = await m.clientsAs(POD);
    zt = await m.clientsAs(ZTUNNEL);
  });
  after(async () => {
    pod?.close();
    zt?.close();
    await m?.close();
  });

  test('ok/an agent CSR for its own identity: leaf first, root last, one PEM certificate per element', async () => {
    const csr = await makeCsr({ uris: [POD] });
    const res = await unary(pod.istio, 'CreateCertificate', { csr: csr.pem, validity_duration: 3600, metadata: metadata({ ClusterID: 'Kubernetes' }) });
    const chain: string[] = res.cert_chain;
    assert.ok(chain.length >= 2, 'istio-agent rejects <= 1 entries');
    for (const p of chain) {
      assert.equal(p.match(/-----BEGIN CERTIFICATE-----/g)?.length, 1, 'one certificate per element');
      assert.ok(p.endsWith('-----END CERTIFICATE-----\n'));
    }
    const certs = chain.map((p) => new X509Certificate(p));
    assert.equal(certs[0]!.subjectAltName, `URI:${POD}`);
    assert.ok(certs[0]!.publicKey.equals(createPublicKey(createPrivateKey(csr.privateKeyPem))));
    for (let i = 0; i + 1 < certs.length; i++) assert.ok(certs[i]!.verify(certs[i + 1]!.publicKey), `element ${i} signed by ${i + 1}`);
    const root = certs[certs.length - 1]!;
    assert.ok(root.verify(root.publicKey), 'last element is the self-signed root');
    assert.ok(m.core.authority.bundle().rootsDer.some((r) => r.equals(root.raw)), 'root is in the trust bundle');
    const life = (Date.parse(certs[0]!.validTo) - Date.parse(certs[0]!.validFrom)) / 1000;
    assert.ok(life >= 3600 && life <= 3631, `validity_duration honoured (${life}s)`);
    const line = m.logs.find((l) => l.logger === 'audit' && l.api === 'IstioCertificateService.CreateCertificate');
    assert.equal(line?.decision, 'allow');
  });

  test('ok/an istio-agent CSR (Go-made, RSA, empty O, critical SAN) and the chain as istio-agent uses it: openssl verifies it strictly', async () => {
    const res = await unary(pod.istio, 'CreateCertificate', { csr: ISTIO_AGENT_CSR, validity_duration: 86400, metadata: metadata({ ClusterID: 'Kubernetes' }) });
    const chain: string[] = res.cert_chain;
    assert.ok(chain.length >= 2);
    const leaf = new X509Certificate(chain[0]!);
    assert.equal(leaf.subjectAltName, `URI:${POD}`);
    assert.equal(leaf.publicKey.asymmetricKeyDetails?.modulusLength, 2048);
    // istio-agent: root = last element, the certificate chain = all elements concatenated (secretcache.go).
    const dir = await mkdtemp(join(tmpdir(), 'meshca-istio-'));
    try {
      await writeFile(join(dir, 'root.pem'), chain[chain.length - 1]!);
      await writeFile(join(dir, 'untrusted.pem'), chain.slice(1, -1).join('') || chain[chain.length - 1]!);
      await writeFile(join(dir, 'leaf.pem'), chain[0]!);
      for (const purpose of ['sslclient', 'sslserver']) {
        const r = spawnSync('openssl', ['verify', '-x509_strict', '-purpose', purpose, '-CAfile', join(dir, 'root.pem'), '-untrusted', join(dir, 'untrusted.pem'), join(dir, 'leaf.pem')], { encoding: 'utf8' });
        assert.equal(r.status, 0, `openssl verify (${purpose}): ${r.stdout}${r.stderr}`);
      }
      // X509-SVID leaf rules (protocols.md §6), read by openssl rather than by meshca's own parser.
      const text = spawnSync('openssl', ['x509', '-noout', '-text', '-in', join(dir, 'leaf.pem')], { encoding: 'utf8' }).stdout;
      assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature/);
      assert.doesNotMatch(text, /Certificate Sign|CRL Sign/);
      assert.match(text, /X509v3 Extended Key Usage:[^\n]*\n\s+(TLS Web Server Authentication, TLS Web Client Authentication|TLS Web Client Authentication, TLS Web Server Authentication)/);
      assert.match(text, /CA:FALSE/);
      assert.equal(text.match(/URI:/g)?.length, 1, 'exactly one URI SAN');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('wire/a request encoded by hand from the spec field numbers (old field 2 set, metadata Struct) decodes as Istio sends it', async () => {
    const creds = await m.credentialsFor(ZTUNNEL);
    const client = new grpc.Client(
      `127.0.0.1:${m.grpcPort}`,
      grpc.credentials.createSsl(Buffer.from(m.rootsPem()), Buffer.from(creds.keyPem), Buffer.from(creds.certPem)),
      { 'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost' },
    );
    try {
      const call = (req: Buffer, md: grpc.Metadata) =>
        new Promise<Buffer>((resolve, reject) =>
          client.makeUnaryRequest('/istio.v1.auth.IstioCertificateService/CreateCertificate', (b: Buffer) => b, (b: Buffer) => b, req, md, (err, res) => (err ? reject(err) : resolve(res!))),
        );
      const md = new grpc.Metadata();
      md.set('ClusterID', 'Kubernetes'); // as the agent sends it; gRPC lowercases the key
      const imp = `spiffe://${TD}/ns/shop/sa/cart`;
      const res = rawCertChain(await call(rawIstioRequest((await makeCsr()).pem, 7200n, { ImpersonatedIdentity: imp, WorkloadName: 'cart-1' }), md));
      assert.ok(res.length >= 2);
      const leaf = new X509Certificate(res[0]!);
      assert.equal(leaf.subjectAltName, `URI:${imp}`, 'metadata field 4 / Struct / Value.string_value=3 read');
      const life = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
      assert.ok(life >= 7200 && life <= 7231, `validity_duration (field 3, varint int64) honoured: ${life}s`);
      const root = new X509Certificate(res[res.length - 1]!);
      assert.ok(m.core.authority.bundle().rootsDer.some((r) => r.equals(root.raw)), 'root last');
      // A negative int64 (ten-byte varint) means the default lifetime, workload.ttl (12h).
      const neg = new X509Certificate(rawCertChain(await call(rawIstioRequest((await makeCsr({ uris: [ZTUNNEL] })).pem, -1n, {}), md))[0]!);
      const negLife = (Date.parse(neg.validTo) - Date.parse(neg.validFrom)) / 1000;
      assert.ok(negLife >= 12 * 3600 && negLife <= 12 * 3600 + 31, `validity_duration -1 -> workload.ttl (got ${negLife}s)`);
    } finally {
      client.close();
    }
  });

  test('ok/renewal as istio-agent does it: the returned cert_chain (root included) and the CSR key are the next call\'s client certificate', async () => {
    const first = await makeCsr({ uris: [POD] });
    const res = await unary(pod.istio, 'CreateCertificate', { csr: first.pem, validity_duration: 3600 });
    const again = apiClients(m.grpcPort, { rootsPem: m.rootsPem(), certPem: (res.cert_chain as string[]).join(''), keyPem: first.privateKeyPem });
    try {
      const next = await unary(again.istio, 'CreateCertificate', { csr: (await makeCsr({ uris: [POD] })).pem, validity_duration: 3600 });
      assert.equal(new X509Certificate(next.cert_chain[0]).subjectAltName, `URI:${POD}`);
      // The identity comes from the presented certificate: another one is still refused.
      await expectCode(
        unary(again.istio, 'CreateCertificate', { csr: (await makeCsr({ uris: [`spiffe://${TD}/ns/default/sa/reviews`] })).pem }),
        grpc.status.PERMISSION_DENIED,
        /spiffe:\/\/mesh\.test\/ns\/default\/sa\/reviews/,
      );
    } finally {
      again.close();
    }
  });

  test('ok/validity_duration <= 0 means workload.ttl; a CSR without URI SAN gets the caller identity', async () => {
    const csr = await makeCsr({ cn: 'istio' });
    const res = await unary(pod.istio, 'CreateCertificate', { csr: csr.pem, validity_duration: 0 });
    const leaf = new X509Certificate(res.cert_chain[0]);
    assert.equal(leaf.subjectAltName, `URI:${POD}`);
    const life = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
    assert.ok(life >= 12 * 3600 && life <= 12 * 3600 + 31, `default ttl (${life}s)`);
    const neg = await unary(pod.istio, 'CreateCertificate', { csr: csr.pem, validity_duration: -5 });
    assert.ok(neg.cert_chain.length >= 2);
  });

  test('ok/validity_duration above workload.maxTtl is clamped to it (issue #4: honoured up to the policy maximum)', async () => {
    // An unchanged istio-agent asks for SECRET_TTL (24h by default) whatever meshca's policy is; refusing would leave
    // it without a certificate, so meshca grants the policy maximum instead (as cert-manager istio-csr does).
    for (const vd of [49 * 3600, '9223372036854775807']) {
      const csr = await makeCsr({ uris: [POD] });
      const res = await unary(pod.istio, 'CreateCertificate', { csr: csr.pem, validity_duration: vd });
      const leaf = new X509Certificate(res.cert_chain[0]);
      const life = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
      assert.ok(life >= 48 * 3600 && life <= 48 * 3600 + 31, `validity_duration ${vd} clamped to workload.maxTtl 48h (got ${life}s)`);
      assert.ok(res.cert_chain.length >= 2);
    }
    const line = m.logs.find((l) => l.msg === 'validity_duration capped by policy');
    assert.ok(line, 'the cap is logged');
  });

  test('ok/an empty ImpersonatedIdentity is no impersonation (istiod reads it with GetStringValue() != "")', async () => {
    const csr = await makeCsr({ uris: [POD] });
    const res = await unary(pod.istio, 'CreateCertificate', {
      csr: csr.pem,
      metadata: metadata({ ImpersonatedIdentity: '', WorkloadName: 'productpage-v1', WorkloadIP: '10.0.0.7', ClusterID: 'Kubernetes' }),
    });
    assert.equal(new X509Certificate(res.cert_chain[0]).subjectAltName, `URI:${POD}`);
    // A value of another kind is refused (the caller meant to impersonate someone), naming the key.
    await expectCode(
      unary(zt.istio, 'CreateCertificate', { csr: (await makeCsr()).pem, metadata: { fields: { ImpersonatedIdentity: { numberValue: 7 } } } }),
      grpc.status.INVALID_ARGUMENT,
      /metadata ImpersonatedIdentity must be a string value/,
    );
    // A value that is not a SPIFFE ID of this trust domain is refused naming it.
    await expectCode(
      unary(zt.istio, 'CreateCertificate', { csr: (await makeCsr()).pem, metadata: metadata({ ImpersonatedIdentity: 'spiffe://elsewhere.test/ns/a/sa/b' }) }),
      grpc.status.INVALID_ARGUMENT,
      /^.*metadata ImpersonatedIdentity: invalid SPIFFE ID "spiffe:\/\/elsewhere\.test\/ns\/a\/sa\/b": trust domain/,
    );
  });

  test('fail/a CSR for another identity is PERMISSION_DENIED for a workload', async () => {
    const csr = await makeCsr({ uris: [`spiffe://${TD}/ns/default/sa/reviews`] });
    await expectCode(unary(pod.istio, 'CreateCertificate', { csr: csr.pem }), grpc.status.PERMISSION_DENIED, /not authorized/);
  });

  test('ok/an authorised controller gets the CSR identity, or the ImpersonatedIdentity; its maxTtl applies', async () => {
    const target = `spiffe://${TD}/ns/default/sa/reviews`;
    const res = await unary(zt.istio, 'CreateCertificate', { csr: (await makeCsr({ uris: [target] })).pem, validity_duration: 3600 });
    assert.equal(new X509Certificate(res.cert_chain[0]).subjectAltName, `URI:${target}`);
    const imp = `spiffe://${TD}/ns/shop/sa/cart`;
    const res2 = await unary(zt.istio, 'CreateCertificate', { csr: (await makeCsr()).pem, metadata: metadata({ ImpersonatedIdentity: imp }) });
    assert.equal(new X509Certificate(res2.cert_chain[0]).subjectAltName, `URI:${imp}`);
    // The controller's maxTtl (24h) caps validity_duration like workload.maxTtl does.
    const capped = await unary(zt.istio, 'CreateCertificate', { csr: (await makeCsr({ uris: [target] })).pem, validity_duration: 25 * 3600 });
    const cappedLeaf = new X509Certificate(capped.cert_chain[0]);
    const cappedLife = (Date.parse(cappedLeaf.validTo) - Date.parse(cappedLeaf.validFrom)) / 1000;
    assert.ok(cappedLife >= 24 * 3600 && cappedLife <= 24 * 3600 + 31, `capped at the controller's maxTtl 24h (got ${cappedLife}s)`);
    await expectCode(
      unary(pod.istio, 'CreateCertificate', { csr: (await makeCsr()).pem, metadata: metadata({ ImpersonatedIdentity: imp }) }),
      grpc.status.PERMISSION_DENIED,
    );
    await expectCode(
      unary(zt.istio, 'CreateCertificate', { csr: (await makeCsr({ uris: [target] })).pem, metadata: metadata({ ImpersonatedIdentity: imp }) }),
      grpc.status.INVALID_ARGUMENT,
      /does not match metadata ImpersonatedIdentity/,
    );
  });

  describe('bad CSRs are INVALID_ARGUMENT', () => {
    const cases: [string, () => Promise<string>, RegExp][] = [
      ['empty', async () => '', /csr is required/],
      ['not PEM', async () => 'MIIB', /must be PEM/],
      ['a bad signature', async () => corruptSignature(await makeCsr({ uris: [POD] })).pem, /signature does not verify/],
      ['several URI SANs', async () => (await makeCsr({ uris: [POD, `spiffe://${TD}/b`] })).pem, /2 URI SANs/],
      ['CA:true', async () => (await makeCsr({ uris: [POD], ca: true })).pem, /CA certificate/],
      ['a non-SPIFFE URI', async () => (await makeCsr({ uris: ['urn:example:x'] })).pem, /not a SPIFFE ID/],
      ['a foreign trust domain', async () => (await makeCsr({ uris: ['spiffe://cluster.local/ns/default/sa/productpage'] })).pem, /not this CA's trust domain/],
    ];
    for (const [name, make, re] of cases) {
      test(`fail/${name}`, async () => {
        await expectCode(unary(pod.istio, 'CreateCertificate', { csr: await make() }), grpc.status.INVALID_ARGUMENT, re);
      });
    }
    test('ok/no PEM block text reaches the logs, not even in the refusals of these CSRs', () => {
      const text = JSON.stringify(m.logs);
      assert.ok(text.includes('CreateCertificate refused'), 'the refusals were logged');
      assert.ok(!text.includes('-----BEGIN'), 'a log scanner looking for PEM blocks finds none');
    });
  });

  test('fail/a CA that is not ready or cannot sign is INTERNAL (as istiod)', async () => {
    const authority = m.core.authority as { issue: typeof m.core.authority.issue };
    const issue = authority.issue;
    authority.issue = async () => {
      throw new CaError('UNAVAILABLE', 'no valid signing CA (backend: sealed)');
    };
    try {
      const csr = await makeCsr({ uris: [POD] });
      await expectCode(unary(pod.istio, 'CreateCertificate', { csr: csr.pem }), grpc.status.INTERNAL, /no valid signing CA/);
    } finally {
      authority.issue = issue;
    }
    const ok = await unary(pod.istio, 'CreateCertificate', { csr: (await makeCsr({ uris: [POD] })).pem });
    assert.ok(ok.cert_chain.length >= 2);
  });

  test('fail/no client certificate, or a bearer token with no token authenticator, is UNAUTHENTICATED', async () => {
    const anon = await m.clientsAs(undefined);
    try {
      const csr = await makeCsr({ uris: [POD] });
      await expectCode(unary(anon.istio, 'CreateCertificate', { csr: csr.pem }), grpc.status.UNAUTHENTICATED);
      const md = new grpc.Metadata();
      md.set('authorization', 'Bearer abc.def.ghi');
      await expectCode(unary(anon.istio, 'CreateCertificate', { csr: csr.pem }, md), grpc.status.UNAUTHENTICATED, /bearer/i);
      assert.ok(!JSON.stringify(m.logs).includes('abc.def.ghi'), 'token never logged');
    } finally {
      anon.close();
    }
  });
});
