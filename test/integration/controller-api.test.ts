import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { startInstance, type Instance } from '../support/meshca-instance.js';
import { unary, type ApiClients } from '../support/api-client.js';
import { corruptSignature, makeCsr } from '../support/csr.js';
import { CaError } from '../../src/util/errors.js';

const TD = 'ctl.test';
const WEB = `spiffe://${TD}/ns/default/sa/web`;
const CTL = `spiffe://${TD}/controller/mesh`;
const BOOT = `spiffe://${TD}/controller/bootstrap`;
const OPS = `spiffe://${TD}/ops/deployer`;
const DNSCTL = `spiffe://${TD}/controller/dns`;

function verifiesTo(chainDer: readonly Buffer[], rootsDer: readonly Buffer[]): boolean {
  const certs = chainDer.map((d) => new X509Certificate(d));
  for (let i = 0; i + 1 < certs.length; i++) if (!certs[i]!.verify(certs[i + 1]!.publicKey)) return false;
  const top = certs[certs.length - 1]!;
  return rootsDer.some((r) => {
    const x = new X509Certificate(r);
    return top.checkIssued(x) && top.verify(x.publicKey);
  });
}

async function expectCode(p: Promise<unknown>, code: grpc.status, text?: RegExp): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    const err = e as grpc.ServiceError;
    assert.equal(err.code, code, `expected ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
    if (text) assert.match(err.details, text);
    return err;
  }
  assert.fail(`expected ${grpc.status[code]}, call succeeded`);
}

describe('meshca.v1 IdentityService and BundleService over mTLS', { timeout: 60_000 }, () => {
  let m: Instance;
  let web: ApiClients;
  let ctl: ApiClients;
  let boot: ApiClients;
  let ops: ApiClients;
  let dnsctl: ApiClients;

  before(async () => {
    m = await startInstance({
      trustDomain: TD,
      maxMessageBytes: 64 * 1024,
      workload: { ttl: '1h', maxTtl: '24h' },
      controllers: [
        { id: CTL, allow: [`spiffe://${TD}/ns/*`], maxTtl: '2h' },
        { id: BOOT, allow: [`spiffe://${TD}/bootstrap/*`], maxTtl: '30m', generateKeys: true },
        // Two rules match OPS (its exact ID, then a prefix): it may do what either allows.
        { id: OPS, allow: [`spiffe://${TD}/ns/*`], maxTtl: '1h' },
        { id: `spiffe://${TD}/ops/*`, allow: [`spiffe://${TD}/ns/*`], maxTtl: '3h', generateKeys: true },
        { id: DNSCTL, allow: [`spiffe://${TD}/ns/apps/*`], dnsNames: ['api.apps.svc', '*.apps.svc.cluster.local'] },
      ],
    });
    web = await m.clientsAs(WEB);
    ctl = await m.clientsAs(CTL);
    boot = await m.clientsAs(BOOT);
    ops = await m.clientsAs(OPS);
    dnsctl = await m.clientsAs(DNSCTL);
  });
  after(async () => {
    web?.close();
    ctl?.close();
    boot?.close();
    ops?.close();
    dnsctl?.close();
    await m?.close();
  });

  test('ok/a workload gets its own identity for a PEM CSR: chain, bundle, notAfter, no key', async () => {
    const csr = await makeCsr({ uris: [WEB] });
    const res = await unary(web.identity, 'Issue', { spiffe_id: WEB, csr_pem: csr.pem });
    assert.equal(res.spiffe_id, WEB);
    assert.equal(res.private_key_pem, '');
    assert.ok(res.cert_chain_der.length >= 2);
    const leaf = new X509Certificate(res.cert_chain_der[0]);
    assert.equal(leaf.subjectAltName, `URI:${WEB}`);
    assert.ok(leaf.publicKey.equals(createPublicKey(createPrivateKey(csr.privateKeyPem))));
    assert.equal(res.bundle.trust_domain, TD);
    assert.equal(res.bundle.source, 'BUNDLE_SOURCE_OWN');
    assert.ok(verifiesTo(res.cert_chain_der, res.bundle.x509_authorities));
    assert.equal(Number(res.not_after.seconds), Math.floor(Date.parse(leaf.validTo) / 1000));
    assert.equal(Number(res.ttl_seconds), 3600, 'default workload.ttl');
    assert.equal(Number(res.not_after.seconds) - Number(res.not_before.seconds), 3600 + 30, 'not_before is backdated by workload.backdate');
    assert.equal(res.serial_number, leaf.serialNumber.toLowerCase());
    assert.ok(res.cert_chain_pem.startsWith('-----BEGIN CERTIFICATE-----'));
  });

  test('ok/a DER CSR works too, and dns_names default to the CSR DNS SANs', async () => {
    const csr = await makeCsr({ uris: [WEB], dnsNames: ['web.default.svc'] });
    const res = await unary(ctl.identity, 'Issue', { spiffe_id: WEB, csr_der: csr.der, ttl_seconds: 600 });
    const leaf = new X509Certificate(res.cert_chain_der[0]);
    assert.match(leaf.subjectAltName!, /DNS:web\.default\.svc/);
    assert.equal(Number(res.ttl_seconds), 600, 'the ttl granted, without the backdate');
  });

  test('fail/a workload that is not a controller may not put DNS names in its own certificate, from dns_names or its CSR', async () => {
    const csr = await makeCsr({ uris: [WEB], dnsNames: ['web.default.svc'] });
    await expectCode(unary(web.identity, 'Issue', { spiffe_id: WEB, csr_der: csr.der }), grpc.status.PERMISSION_DENIED, /may not put DNS names "web\.default\.svc".*authorization\.controllers/);
    const plain = await makeCsr({ uris: [WEB] });
    await expectCode(unary(web.identity, 'Issue', { spiffe_id: WEB, csr_pem: plain.pem, dns_names: ['payments.default.svc'] }), grpc.status.PERMISSION_DENIED, /payments\.default\.svc/);
    assert.ok(m.logs.some((l) => l.logger === 'audit' && l.decision === 'deny' && JSON.stringify(l.dnsNames) === '["payments.default.svc"]'), 'the audit line names the DNS names');
  });

  test('fail/malformed DNS names are INVALID_ARGUMENT before any authorisation decision', async () => {
    const plain = await makeCsr({ uris: [WEB] });
    await expectCode(unary(web.identity, 'Issue', { spiffe_id: WEB, csr_pem: plain.pem, dns_names: ['bad name!', 'a..b'] }), grpc.status.INVALID_ARGUMENT, /invalid DNS names "bad name!", "a\.\.b"/);
  });

  test('ok/a controller rule with dnsNames grants those names only, to itself too', async () => {
    const csr = await makeCsr({ uris: [DNSCTL], dnsNames: ['api.apps.svc', 'x.apps.svc.cluster.local'] });
    const res = await unary(dnsctl.identity, 'Issue', { spiffe_id: DNSCTL, csr_pem: csr.pem });
    assert.match(new X509Certificate(res.cert_chain_der[0]).subjectAltName!, /DNS:api\.apps\.svc, DNS:x\.apps\.svc\.cluster\.local/);
    const other = await makeCsr({ uris: [`spiffe://${TD}/ns/apps/sa/a`] });
    await unary(dnsctl.identity, 'Issue', { spiffe_id: `spiffe://${TD}/ns/apps/sa/a`, csr_pem: other.pem, dns_names: ['a.apps.svc.cluster.local'] });
    await expectCode(
      unary(dnsctl.identity, 'Issue', { spiffe_id: `spiffe://${TD}/ns/apps/sa/a`, csr_pem: other.pem, dns_names: ['a.other.svc'] }),
      grpc.status.PERMISSION_DENIED,
      /allows dnsNames \[api\.apps\.svc, \*\.apps\.svc\.cluster\.local\]/,
    );
  });

  test('fail/dns_names that differ from the CSR DNS SANs', async () => {
    const csr = await makeCsr({ uris: [WEB], dnsNames: ['a.example'] });
    await expectCode(unary(web.identity, 'Issue', { spiffe_id: WEB, csr_pem: csr.pem, dns_names: ['b.example'] }), grpc.status.INVALID_ARGUMENT, /differ from the CSR/);
  });

  test('fail/a workload asking for another identity is PERMISSION_DENIED and audited', async () => {
    const other = `spiffe://${TD}/ns/default/sa/db`;
    const csr = await makeCsr({ uris: [other] });
    await expectCode(unary(web.identity, 'Issue', { spiffe_id: other, csr_pem: csr.pem }), grpc.status.PERMISSION_DENIED, /not authorized for identity/);
    const line = m.logs.find((l) => l.logger === 'audit' && l.target === other && l.caller === WEB);
    assert.ok(line, 'audit line written');
    assert.equal(line.decision, 'deny');
    assert.equal(line.via, 'mtls');
    assert.match(String(line.reason), /not a controller/);
    assert.ok(!JSON.stringify(m.logs).includes('BEGIN CERTIFICATE REQUEST'), 'CSRs never logged');
  });

  test('fail/a workload may not have meshca generate its key', async () => {
    await expectCode(unary(web.identity, 'Issue', { spiffe_id: WEB }), grpc.status.PERMISSION_DENIED, /only with a CSR/);
  });

  test('ok/a controller gets an allowed identity; the TTL is capped at its maxTtl', async () => {
    const target = `spiffe://${TD}/ns/shop/sa/cart`;
    const csr = await makeCsr({ uris: [target] });
    const res = await unary(ctl.identity, 'Issue', { spiffe_id: target, csr_pem: csr.pem, ttl_seconds: 10 * 3600 });
    const leaf = new X509Certificate(res.cert_chain_der[0]);
    const life = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
    assert.ok(life <= 2 * 3600 + 31 && life >= 2 * 3600, `lifetime ${life}s capped at 2h`);
    const line = m.logs.find((l) => l.logger === 'audit' && l.target === target);
    assert.equal(line?.decision, 'allow');
    assert.match(String(line?.reason), /controller rule/);
  });

  test('fail/a controller outside its allow patterns, or asking meshca for a key without generateKeys', async () => {
    const outside = `spiffe://${TD}/infra/x`;
    const csr = await makeCsr({ uris: [outside] });
    await expectCode(unary(ctl.identity, 'Issue', { spiffe_id: outside, csr_pem: csr.pem }), grpc.status.PERMISSION_DENIED, /no allow pattern/);
    await expectCode(unary(ctl.identity, 'Issue', { spiffe_id: `spiffe://${TD}/ns/a/sa/b` }), grpc.status.PERMISSION_DENIED, /generateKeys/);
  });

  test('ok/ttl_seconds beyond 2^53 (any int64) is capped like any long request, not refused', async () => {
    const csr = await makeCsr({ uris: [WEB] });
    const res = await unary(web.identity, 'Issue', { spiffe_id: WEB, csr_pem: csr.pem, ttl_seconds: '9223372036854775807' });
    const leaf = new X509Certificate(res.cert_chain_der[0]);
    const life = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
    assert.ok(life >= 24 * 3600 && life <= 24 * 3600 + 31, `capped at workload.maxTtl 24h (got ${life}s)`);
    assert.equal(Number(res.ttl_seconds), 24 * 3600, 'granted: workload.maxTtl');
    await expectCode(unary(web.identity, 'Issue', { spiffe_id: WEB, csr_pem: csr.pem, ttl_seconds: -1 }), grpc.status.INVALID_ARGUMENT, /ttl_seconds must not be negative/);
  });

  test('ok/a caller matching several controller rules may do what any of them allows (generateKeys, longest maxTtl)', async () => {
    const target = `spiffe://${TD}/ns/ops/sa/job`;
    // The first matching rule (exact ID) has no generateKeys; the second (prefix) has.
    const gen = await unary(ops.identity, 'Issue', { spiffe_id: target });
    assert.match(gen.private_key_pem, /^-----BEGIN PRIVATE KEY-----/);
    assert.equal(new X509Certificate(gen.cert_chain_der[0]).subjectAltName, `URI:${target}`);
    // With a CSR, both rules allow the target: the longer maxTtl (3h) applies, not the first rule's 1h.
    const res = await unary(ops.identity, 'Issue', { spiffe_id: target, csr_pem: (await makeCsr({ uris: [target] })).pem, ttl_seconds: 5 * 3600 });
    const leaf = new X509Certificate(res.cert_chain_der[0]);
    const life = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
    assert.ok(life >= 3 * 3600 && life <= 3 * 3600 + 31, `capped at the longest matching maxTtl 3h (got ${life}s)`);
  });

  test('ok/a generateKeys controller gets a bootstrap credential with its private key', async () => {
    const target = `spiffe://${TD}/bootstrap/node-1`;
    const res = await unary(boot.identity, 'Issue', { spiffe_id: target, key_type: 'KEY_TYPE_EC_P384' });
    assert.match(res.private_key_pem, /^-----BEGIN PRIVATE KEY-----/);
    const leaf = new X509Certificate(res.cert_chain_der[0]);
    assert.ok(leaf.publicKey.equals(createPublicKey(createPrivateKey(res.private_key_pem))));
    assert.equal(leaf.publicKey.asymmetricKeyDetails?.namedCurve, 'secp384r1');
    assert.ok(!JSON.stringify(m.logs).includes(res.private_key_pem.split('\n')[1]), 'key never logged');
  });

  describe('bad CSRs are INVALID_ARGUMENT with a clear message', () => {
    const cases: [string, () => Promise<{ spiffe_id: string; csr_pem?: string; csr_der?: Buffer }>, RegExp][] = [
      ['a bad signature', async () => ({ spiffe_id: WEB, csr_der: corruptSignature(await makeCsr({ uris: [WEB] })).der }), /signature does not verify/],
      ['several URI SANs', async () => ({ spiffe_id: WEB, csr_pem: (await makeCsr({ uris: [WEB, `spiffe://${TD}/x`] })).pem }), /2 URI SANs/],
      ['a CA:true request', async () => ({ spiffe_id: WEB, csr_pem: (await makeCsr({ uris: [WEB], ca: true })).pem }), /CA certificate/],
      ['a non-SPIFFE URI', async () => ({ spiffe_id: WEB, csr_pem: (await makeCsr({ uris: ['https://example.com/web'] })).pem }), /is not a SPIFFE ID/],
      ['a foreign trust domain in the CSR', async () => ({ spiffe_id: WEB, csr_pem: (await makeCsr({ uris: ['spiffe://other.test/ns/default/sa/web'] })).pem }), /trust domain "other.test"/],
      ['a URI SAN that is not the requested ID', async () => ({ spiffe_id: WEB, csr_pem: (await makeCsr({ uris: [`spiffe://${TD}/ns/default/sa/db`] })).pem }), /CSR URI SAN spiffe:\/\/ctl\.test\/ns\/default\/sa\/db does not match requested identity spiffe:\/\/ctl\.test\/ns\/default\/sa\/web/],
      ['no URI SAN', async () => ({ spiffe_id: WEB, csr_pem: (await makeCsr({ dnsNames: ['x.example'] })).pem }), /no URI SAN/],
      ['an IP SAN in the CSR', async () => ({ spiffe_id: WEB, csr_pem: (await makeCsr({ uris: [WEB], ipAddresses: ['10.96.0.1'] })).pem }), /CSR carries SANs meshca never certifies \(IP:10\.96\.0\.1\)/],
      ['garbage', async () => ({ spiffe_id: WEB, csr_pem: 'hello' }), /CSR/],
      ['a requested ID in another trust domain', async () => ({ spiffe_id: 'spiffe://other.test/ns/default/sa/web', csr_pem: (await makeCsr({ uris: ['spiffe://other.test/ns/default/sa/web'] })).pem }), /not this CA's trust domain/],
      ['a requested ID that is not a SPIFFE ID', async () => ({ spiffe_id: 'web', csr_pem: (await makeCsr({ uris: [WEB] })).pem }), /scheme must be/],
    ];
    for (const [name, make, re] of cases) {
      test(`fail/${name}`, async () => {
        const seq = m.core.authority.bundle().sequence;
        await expectCode(unary(web.identity, 'Issue', await make()), grpc.status.INVALID_ARGUMENT, re);
        assert.equal(m.core.authority.bundle().sequence, seq, 'no state change');
      });
    }
  });

  test('fail/a message larger than server.grpc.maxMessageBytes is RESOURCE_EXHAUSTED and the server keeps serving', async () => {
    await expectCode(unary(web.identity, 'Issue', { spiffe_id: WEB, csr_pem: 'A'.repeat(100 * 1024) }), grpc.status.RESOURCE_EXHAUSTED);
    const csr = await makeCsr({ uris: [WEB] });
    const res = await unary(web.identity, 'Issue', { spiffe_id: WEB, csr_pem: csr.pem });
    assert.equal(res.spiffe_id, WEB);
  });

  test('fail/no client certificate is UNAUTHENTICATED for Issue but bundles stay readable', async () => {
    const anon = await m.clientsAs(undefined);
    try {
      const csr = await makeCsr({ uris: [WEB] });
      await expectCode(unary(anon.identity, 'Issue', { spiffe_id: WEB, csr_pem: csr.pem }), grpc.status.UNAUTHENTICATED, /no client certificate/);
      const b = await unary(anon.bundle, 'GetBundle', {});
      assert.equal(b.own_trust_domain, TD);
    } finally {
      anon.close();
    }
  });

  test('IssueBatch: each entry gets its own result; one bad entry does not fail the others', async () => {
    const good1 = `spiffe://${TD}/ns/a/sa/one`;
    const good2 = `spiffe://${TD}/ns/a/sa/two`;
    const res = await unary(ctl.identity, 'IssueBatch', {
      requests: [
        { spiffe_id: good1, csr_pem: (await makeCsr({ uris: [good1] })).pem },
        { spiffe_id: good2, csr_pem: corruptSignature(await makeCsr({ uris: [good2] })).pem },
        { spiffe_id: `spiffe://${TD}/infra/nope`, csr_pem: (await makeCsr({ uris: [`spiffe://${TD}/infra/nope`] })).pem },
        { spiffe_id: good2, csr_pem: (await makeCsr({ uris: [good2] })).pem },
      ],
    });
    assert.equal(res.results.length, 4);
    assert.equal(res.results[0].result, 'certificate');
    assert.equal(res.results[0].certificate.spiffe_id, good1);
    assert.equal(res.results[1].result, 'error');
    assert.equal(res.results[1].error.code, grpc.status.INVALID_ARGUMENT);
    assert.match(res.results[1].error.message, /signature/);
    assert.equal(res.results[2].error.code, grpc.status.PERMISSION_DENIED);
    assert.equal(res.results[3].result, 'certificate');
    assert.equal(res.results[3].spiffe_id, good2);
  });

  test('fail/IssueBatch with no entries or too many', async () => {
    await expectCode(unary(ctl.identity, 'IssueBatch', { requests: [] }), grpc.status.INVALID_ARGUMENT, /empty/);
    const many = Array.from({ length: 101 }, () => ({ spiffe_id: WEB }));
    await expectCode(unary(ctl.identity, 'IssueBatch', { requests: many }), grpc.status.INVALID_ARGUMENT, /maximum 100/);
  });

  /** Sum of a counter's samples in this instance's registry whose labels include `labels`. */
  async function count(name: string, labels: Record<string, string>): Promise<number> {
    const values = (await m.core.metrics.getSingleMetric(name)!.get()).values;
    return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((n, v) => n + v.value, 0);
  }

  const TOO_BIG = 'the response would exceed server.grpc.maxMessageBytes (65536 bytes); send fewer entries per batch';

  test('ok/IssueBatch within the 100-entry limit fits server.grpc.maxMessageBytes: the entries that would not fit get RESOURCE_EXHAUSTED, unminted, and the call is OK', async () => {
    const ids = Array.from({ length: 100 }, (_, i) => `spiffe://${TD}/ns/batch/sa/job-${i}`);
    const issued0 = await count('meshca_certificates_issued_total', { type: 'workload', source: 'api' });
    const ok0 = await count('meshca_api_requests_total', { method: 'IssueBatch', code: 'OK' });
    const res = await unary(ops.identity, 'IssueBatch', { requests: ids.map((spiffe_id) => ({ spiffe_id })) });
    assert.deepEqual(res.results.map((r: { spiffe_id: string }) => r.spiffe_id), ids, 'one result per request, in order');
    const fitted = res.results.findIndex((r: { result: string }) => r.result !== 'certificate');
    // 100 generated P-256 keys with their chains and bundle are ~490 KB: a 64 KiB response holds about a dozen.
    assert.ok(fitted >= 5 && fitted < 100, `${fitted} certificates fitted`);
    for (const r of res.results.slice(0, fitted)) assert.match(r.certificate.private_key_pem, /BEGIN PRIVATE KEY/);
    for (const r of res.results.slice(fitted)) {
      assert.equal(r.result, 'error');
      assert.equal(r.error.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.equal(r.error.message, TOO_BIG);
    }
    assert.equal(await count('meshca_certificates_issued_total', { type: 'workload', source: 'api' }), issued0 + fitted, 'no certificate minted and then dropped');
    assert.equal(await count('meshca_api_requests_total', { method: 'IssueBatch', code: 'OK' }), ok0 + 1);

    // The response is as full as it gets: the entries left out, sent again, are answered in the same way.
    const again = await unary(ops.identity, 'IssueBatch', { requests: ids.slice(fitted).map((spiffe_id) => ({ spiffe_id })) });
    const second = again.results.findIndex((r: { result: string }) => r.result !== 'certificate');
    assert.ok(Math.abs(second - fitted) <= 1, `first batch fitted ${fitted}, the next ${second}`);
    assert.equal(again.results[second].error.message, TOO_BIG);
  });

  test('fail/IssueBatch whose answer would not fit server.grpc.maxMessageBytes even without certificates is RESOURCE_EXHAUSTED, counted so, and mints nothing', async () => {
    // Each error result echoes its spiffe_id: 100 IDs of ~600 bytes make a request under 64 KiB, but an answer over it.
    const ids = Array.from({ length: 100 }, (_, i) => `spiffe://${TD}/ns/batch/sa/${'x'.repeat(580)}-${i}`);
    const issued0 = await count('meshca_certificates_issued_total', { type: 'workload', source: 'api' });
    const ok0 = await count('meshca_api_requests_total', { method: 'IssueBatch', code: 'OK' });
    const exhausted0 = await count('meshca_api_requests_total', { method: 'IssueBatch', code: 'RESOURCE_EXHAUSTED' });
    await expectCode(
      unary(ops.identity, 'IssueBatch', { requests: ids.map((spiffe_id) => ({ spiffe_id })) }),
      grpc.status.RESOURCE_EXHAUSTED,
      /the response would exceed server\.grpc\.maxMessageBytes \(65536 bytes\) even without certificates; send fewer entries per batch/,
    );
    assert.equal(await count('meshca_certificates_issued_total', { type: 'workload', source: 'api' }), issued0, 'nothing minted');
    assert.equal(await count('meshca_api_requests_total', { method: 'IssueBatch', code: 'OK' }), ok0);
    assert.equal(await count('meshca_api_requests_total', { method: 'IssueBatch', code: 'RESOURCE_EXHAUSTED' }), exhausted0 + 1);
  });

  test('fail/a CA that cannot sign: UNAVAILABLE (retryable) for Issue and per batch entry; other failures INTERNAL without detail', async () => {
    const authority = m.core.authority as { issue: typeof m.core.authority.issue };
    const issue = authority.issue;
    const target = `spiffe://${TD}/ns/a/sa/one`;
    const req = async () => ({ spiffe_id: target, csr_pem: (await makeCsr({ uris: [target] })).pem });
    try {
      authority.issue = async () => {
        throw new CaError('UNAVAILABLE', 'no valid signing CA (backend: sealed)');
      };
      await expectCode(unary(ctl.identity, 'Issue', await req()), grpc.status.UNAVAILABLE, /no valid signing CA/);
      const batch = await unary(ctl.identity, 'IssueBatch', { requests: [await req()] });
      assert.equal(batch.results[0].error.code, grpc.status.UNAVAILABLE);
      assert.match(batch.results[0].error.message, /no valid signing CA/);
      authority.issue = async () => {
        throw new Error('ECONNREFUSED https://vault.internal:8200/v1/pki/sign');
      };
      const err = await expectCode(unary(ctl.identity, 'Issue', await req()), grpc.status.INTERNAL);
      assert.doesNotMatch(err.details, /vault\.internal/);
      const batch2 = await unary(ctl.identity, 'IssueBatch', { requests: [await req()] });
      assert.equal(batch2.results[0].error.code, grpc.status.INTERNAL);
      assert.doesNotMatch(batch2.results[0].error.message, /vault\.internal/);
    } finally {
      authority.issue = issue;
    }
    assert.equal((await unary(ctl.identity, 'Issue', await req())).spiffe_id, target);
  });

  test('GetBundle returns the own bundle; an unknown trust domain is NOT_FOUND', async () => {
    const res = await unary(web.bundle, 'GetBundle', { trust_domains: [TD] });
    assert.equal(res.bundles.length, 1);
    const b = res.bundles[0];
    assert.equal(b.trust_domain, TD);
    assert.equal(Number(b.sequence), m.core.authority.bundle().sequence);
    assert.deepEqual(b.x509_authorities.map((x: Buffer) => x.toString('base64')), m.core.authority.bundle().rootsDer.map((x) => x.toString('base64')));
    const doc = JSON.parse(b.spiffe_bundle_json);
    assert.equal(doc.keys[0].use, 'x509-svid');
    assert.equal(doc.spiffe_sequence, Number(b.sequence));
    await expectCode(unary(web.bundle, 'GetBundle', { trust_domains: ['nope.test'] }), grpc.status.NOT_FOUND, /nope\.test/);
  });

  test('WatchBundle sends the current state first, then every change', async () => {
    const stream = web.bundle.WatchBundle({});
    const msgs: { bundles: { trust_domain: string; sequence: string }[]; changed_trust_domains: string[] }[] = [];
    const waitFor = async (n: number) => {
      const end = Date.now() + 5000;
      while (msgs.length < n) {
        if (Date.now() > end) assert.fail(`only ${msgs.length} WatchBundle messages`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    stream.on('data', (d: (typeof msgs)[number]) => msgs.push(d));
    stream.on('error', () => undefined);
    try {
      await waitFor(1);
      assert.deepEqual(msgs[0]!.changed_trust_domains, [TD]);
      const seq0 = Number(msgs[0]!.bundles[0]!.sequence);
      await m.core.authority.rotate({ root: true });
      await waitFor(2);
      assert.deepEqual(msgs[1]!.changed_trust_domains, [TD]);
      assert.ok(Number(msgs[1]!.bundles[0]!.sequence) > seq0);
      // A federated domain appearing later is pushed to an all-domains watch.
      const other = await makeCsr();
      void other;
      m.registry.setFederated('peer.test', { rootsDer: m.core.authority.bundle().rootsDer.slice(0, 1), refreshHintSeconds: 60, source: 'federated-file' });
      await waitFor(3);
      assert.deepEqual(msgs[2]!.changed_trust_domains, ['peer.test']);
      assert.deepEqual(msgs[2]!.bundles.map((b) => b.trust_domain), [TD, 'peer.test']);
    } finally {
      stream.cancel();
      m.registry.removeFederated('peer.test');
    }
  });
});
