import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkCaProfile, checkSvidProfile, describeSvidProblems } from '../../../src/x509/validate.js';
import { generateKeyPair } from '../../../src/x509/keys.js';
import { LeafSigner } from '../../../src/x509/leaf-signer.js';
import { oid, seq } from '../../../src/x509/der.js';
import { EKU, KU, basicConstraintsExt, extKeyUsageExt, keyUsageExt, authorityKeyIdExt } from '../../../src/x509/profile.js';
import { NOW, TD, buildLeaf, makeCa, type TestCa } from './fixtures.js';

let ca: TestCa;
const check = (der: Buffer): void => checkSvidProfile(der, { trustDomain: TD, issuerCertDer: ca.interDer });

test('setup', async () => {
  ca = await makeCa();
});

test('ok/a hand-built conforming leaf passes, with and without the issuer', () => {
  const der = buildLeaf(ca);
  check(der);
  checkSvidProfile(der, { trustDomain: TD });
  assert.deepEqual(describeSvidProblems(der, TD, ca.interDer), []);
});

test('ok/a leaf without subjectKeyIdentifier passes (RFC 5280 SHOULD; Go-based signers such as the Kubernetes CSR signer omit it)', () => {
  const der = buildLeaf(ca, { ski: null });
  check(der);
  assert.deepEqual(describeSvidProblems(der, TD, ca.interDer), []);
});

const cases: Record<string, [Parameters<typeof buildLeaf>[1], RegExp]> = {
  'fail/two URI SANs': [{ uris: [`spiffe://${TD}/a`, `spiffe://${TD}/b`] }, /must have exactly one URI SAN, found 2/],
  'fail/no URI SAN': [{ uris: [], dnsNames: ['x.example'] }, /exactly one URI SAN, found 0/],
  'fail/no SAN at all': [{ noSan: true }, /subjectAltName is missing/],
  'fail/SPIFFE ID without a path': [{ uris: [`spiffe://${TD}`] }, /has no path/],
  'fail/SPIFFE ID in another trust domain': [{ uris: ['spiffe://other.org/w'] }, /is not in trust domain "example.org"/],
  'fail/URI SAN that is not a SPIFFE ID': [{ uris: ['https://example.org/w'] }, /not a valid SPIFFE ID/],
  'fail/SAN not critical with an empty subject': [{ sanCritical: false }, /subjectAltName must be critical/],
  'fail/CA:true on a leaf': [{ basicConstraints: basicConstraintsExt(true) }, /CA:true/],
  'fail/keyCertSign on a leaf': [{ keyUsage: keyUsageExt([KU.digitalSignature, KU.keyCertSign]) }, /keyCertSign/],
  'fail/cRLSign on a leaf': [{ keyUsage: keyUsageExt([KU.digitalSignature, KU.cRLSign]) }, /cRLSign/],
  'fail/keyUsage without digitalSignature': [{ keyUsage: keyUsageExt([KU.keyEncipherment]) }, /lacks digitalSignature/],
  'fail/keyUsage missing': [{ keyUsage: null }, /keyUsage is missing/],
  'fail/EKU without clientAuth': [{ eku: extKeyUsageExt([EKU.serverAuth]) }, /serverAuth and clientAuth/],
  'fail/EKU missing': [{ eku: null }, /extKeyUsage is missing \(must contain serverAuth and clientAuth\)/],
  'fail/serial of 21 octets': [{ serial: Buffer.concat([Buffer.from([0x02, 21, 0x01]), Buffer.alloc(20, 7)]) }, /21 octets, more than 20/],
  'fail/negative serial': [{ serial: Buffer.from([0x02, 0x01, 0x80]) }, /negative/],
  'fail/zero serial': [{ serial: Buffer.from([0x02, 0x01, 0x00]) }, /zero/],
  'fail/AKI not the issuer SKI': [{ aki: authorityKeyIdExt(Buffer.alloc(20, 1)) }, /authorityKeyIdentifier does not match/],
  'fail/AKI missing': [{ aki: null }, /authorityKeyIdentifier keyIdentifier is missing/],
  'fail/signed by another key': [{ signWith: generateKeyPair('ec-p256').privateKey }, /signature does not verify with the issuer's key/],
  'fail/SHA-1 signature': [{ sigAlgOverride: { algId: seq(oid('1.2.840.10045.4.1')), hash: 'sha1' } }, /not SHA-256 or stronger/],
  'fail/notAfter before notBefore': [{ notBefore: new Date(NOW.getTime() + 1000), notAfter: NOW }, /notBefore is not before notAfter/],
};

for (const [name, [overrides, re]] of Object.entries(cases)) {
  test(name, () => {
    const der = buildLeaf(ca, overrides);
    assert.throws(() => check(der), (e: Error & { code?: string }) => e.code === 'INTERNAL' && re.test(e.message) && /X509-SVID profile/.test(e.message));
    assert.ok(describeSvidProblems(der, TD, ca.interDer).some((p) => re.test(p)));
  });
}

test('describeSvidProblems lists every broken rule and never throws', () => {
  const der = buildLeaf(ca, { uris: [`spiffe://${TD}`, 'spiffe://x/y'], basicConstraints: basicConstraintsExt(true), keyUsage: keyUsageExt([KU.keyCertSign]) });
  const p = describeSvidProblems(der, TD, ca.interDer);
  assert.ok(p.length >= 4, p.join('\n'));
  assert.deepEqual(describeSvidProblems(Buffer.from([1, 2, 3]), TD), [describeSvidProblems(Buffer.from([1, 2, 3]), TD)[0]]);
  assert.match(describeSvidProblems(Buffer.from([1, 2, 3]), TD)[0]!, /not valid DER/);
});

test('a certificate tampered after signing fails even when the signer made it in this process', () => {
  const s = new LeafSigner(ca.signingCa);
  const der = s.sign({ spiffeId: `spiffe://${TD}/w`, dnsNames: [], publicKey: generateKeyPair('ec-p256').publicKey, notBefore: new Date(NOW.getTime() - 1000), notAfter: new Date(NOW.getTime() + 60_000) });
  check(der);
  const copy = Buffer.from(der);
  copy[copy.indexOf(Buffer.from('/w')) + 1] = 0x78; // spiffe://example.org/x
  assert.throws(() => check(copy), /signature does not verify/);
});

test('CA profile: meshca roots and intermediates pass; a leaf does not', () => {
  checkCaProfile(ca.rootDer, { trustDomain: TD });
  checkCaProfile(ca.interDer, { trustDomain: TD });
  assert.throws(() => checkCaProfile(ca.interDer, { trustDomain: 'other.org' }), /not in trust domain "other.org"/);
  assert.throws(() => checkCaProfile(buildLeaf(ca), { trustDomain: TD }), /CA:false/);
});

test('checkSvidProfile on a signer-issued leaf is cheap', () => {
  const s = new LeafSigner(ca.signingCa);
  const pub = generateKeyPair('ec-p256').publicKey;
  const ders = Array.from({ length: 300 }, () => s.sign({ spiffeId: `spiffe://${TD}/w`, dnsNames: ['a.b'], publicKey: pub, notBefore: new Date(NOW.getTime() - 1000), notAfter: new Date(NOW.getTime() + 60_000) }));
  for (const d of ders.slice(0, 20)) check(d);
  const t0 = process.hrtime.bigint();
  for (const d of ders) check(d);
  const us = Number(process.hrtime.bigint() - t0) / 1000 / ders.length;
  assert.ok(us < 200, `checkSvidProfile took ${us.toFixed(1)} µs per leaf`);
});

test('certSerialHex matches X509Certificate.serialNumber', async () => {
  const { certSerialHex } = await import('../../../src/x509/cert-parse.js');
  const { X509Certificate } = await import('node:crypto');
  for (const der of [ca.rootDer, ca.interDer, buildLeaf(ca)]) assert.equal(certSerialHex(der), new X509Certificate(der).serialNumber);
});
