import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { createCaCsr, createSelfSignedRoot, signCaCertificate } from '../../../src/x509/ca-certs.js';
import { generateKeyPair } from '../../../src/x509/keys.js';
import { parseCertificate, parseAuthorityKeyId, parseSubjectKeyId } from '../../../src/x509/cert-parse.js';
import { checkCaProfile } from '../../../src/x509/validate.js';
import { toPem } from '../../../src/x509/pem.js';
import type { KeyType } from '../../../src/x509/types.js';
import { NOW, TD, openssl } from './fixtures.js';

test('roots and intermediates for every key type follow the CA profile and verify under openssl -x509_strict', { timeout: 30_000 }, async () => {
  for (const kt of ['ec-p256', 'ec-p384', 'rsa-2048', 'ed25519'] as KeyType[]) {
    const root = await createSelfSignedRoot({ trustDomain: TD, keyType: kt, ttlSeconds: 86400 * 365, now: NOW, commonName: 'r' });
    const ik = generateKeyPair(kt);
    const inter = await signCaCertificate({ issuer: { certDer: root.certDer, key: root.privateKey }, publicKey: ik.publicKey, trustDomain: TD, ttlSeconds: 3600, now: NOW, pathLen: 0 });
    checkCaProfile(root.certDer, { trustDomain: TD });
    checkCaProfile(inter, { trustDomain: TD });
    const v = openssl(['verify', '-x509_strict', '-attime', String(NOW.getTime() / 1000), '-CAfile', { file: 'r.pem', data: toPem(root.certDer) }, { file: 'i.pem', data: toPem(inter) }]);
    assert.equal(v.status, 0, `${kt}: ${v.out}`);
    const text = openssl(['x509', '-noout', '-text', '-in', { file: 'i.pem', data: toPem(inter) }]);
    assert.match(text.out, /Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    assert.match(text.out, /Key Usage: critical\s+Certificate Sign, CRL Sign/);
    assert.match(text.out, /Subject Alternative Name: \s+URI:spiffe:\/\/example\.org\n/);
    assert.match(text.out, /Subject: O = meshca, CN = meshca CA example\.org/);
    const r = parseCertificate(root.certDer);
    const i = parseCertificate(inter);
    assert.deepEqual(parseAuthorityKeyId(i.extensions.get('2.5.29.35')!.value), parseSubjectKeyId(r.extensions.get('2.5.29.14')!.value));
    assert.equal(r.extensions.has('2.5.29.35'), false, 'self-signed root has no AKI');
    assert.equal(r.notBefore.getTime(), NOW.getTime() - 30_000);
    assert.equal(i.serial.length, 20);
  }
});

test('intermediate notAfter is clamped to the issuer notAfter; expired issuers are refused', async () => {
  const root = await createSelfSignedRoot({ trustDomain: TD, keyType: 'ec-p256', ttlSeconds: 600, now: NOW });
  const inter = await signCaCertificate({ issuer: { certDer: root.certDer, key: root.privateKey }, publicKey: generateKeyPair('ec-p256').publicKey, trustDomain: TD, ttlSeconds: 86400, now: NOW });
  assert.equal(new X509Certificate(inter).validTo, new X509Certificate(root.certDer).validTo);
  await assert.rejects(
    signCaCertificate({ issuer: { certDer: root.certDer, key: root.privateKey }, publicKey: generateKeyPair('ec-p256').publicKey, trustDomain: TD, ttlSeconds: 60, now: new Date(NOW.getTime() + 700_000) }),
    { code: 'FAILED_PRECONDITION' },
  );
  await assert.rejects(createSelfSignedRoot({ trustDomain: 'Bad_TD!', keyType: 'ec-p256', ttlSeconds: 60, now: NOW }), /invalid trust domain/);
  await assert.rejects(createSelfSignedRoot({ trustDomain: TD, keyType: 'ec-p256', ttlSeconds: 0, now: NOW }), /ttlSeconds must be a positive/);
});

test('CA CSR verifies under openssl and requests CA:true with the trust domain URI', async () => {
  const csr = await createCaCsr({ key: generateKeyPair('ec-p384'), trustDomain: TD, commonName: 'meshca signing' });
  const t = openssl(['req', '-verify', '-noout', '-text', '-in', { file: 'c.pem', data: csr.pem }]);
  assert.equal(t.status, 0, t.out);
  assert.match(t.out, /CA:TRUE/);
  assert.match(t.out, /URI:spiffe:\/\/example\.org\n/);
  assert.match(t.out, /Certificate Sign, CRL Sign/);
  assert.match(t.out, /CN = meshca signing/);
});
