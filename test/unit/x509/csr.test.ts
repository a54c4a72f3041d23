import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { parseCsr } from '../../../src/x509/csr.js';
import { createLeafCsr } from '../../../src/x509/leaf-csr.js';
import { createCaCsr } from '../../../src/x509/ca-certs.js';
import { generateKeyPair, spkiDerOf } from '../../../src/x509/keys.js';
import { toPem } from '../../../src/x509/pem.js';
import type { KeyType } from '../../../src/x509/types.js';
import { TD, openssl } from './fixtures.js';

const ID = `spiffe://${TD}/ns/a/sa/b`;

test('ok/parses leaf CSRs for every key type, PEM and DER, and openssl agrees they verify', { timeout: 20_000 }, async () => {
  for (const kt of ['ec-p256', 'ec-p384', 'rsa-2048', 'ed25519'] as KeyType[]) {
    const kp = generateKeyPair(kt);
    const csr = await createLeafCsr({ key: kp, spiffeId: ID, dnsNames: ['b.a.svc'] });
    assert.equal(openssl(['req', '-verify', '-noout', '-in', { file: 'c.pem', data: csr.pem }]).status, 0, kt);
    for (const input of [csr.pem, csr.der, Buffer.from(csr.pem)]) {
      const p = parseCsr(input);
      assert.equal(p.keyType, kt);
      assert.deepEqual(p.uris, [ID]);
      assert.deepEqual(p.dnsNames, ['b.a.svc']);
      assert.equal(p.requestsCa, false);
      assert.ok(p.publicKey.equals(kp.publicKey));
      assert.deepEqual(spkiDerOf(p.publicKey), spkiDerOf(kp.publicKey));
      assert.ok(p.der.equals(csr.der), 'the DER of the CSR, whichever encoding came in');
    }
  }
});

test('ok/parses an openssl-made CSR with subject, IP, email and several URIs (the caller decides policy)', () => {
  const r = openssl([
    'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', '/dev/null', '-subj', '/O=x/CN=hello',
    '-addext', `subjectAltName=URI:${ID},URI:spiffe://${TD}/other,IP:10.0.0.7,email:a@b.c,DNS:d.e`, '-addext', 'basicConstraints=critical,CA:TRUE',
  ]);
  assert.equal(r.status, 0, r.out);
  const p = parseCsr(r.stdout);
  assert.deepEqual(p.uris, [ID, `spiffe://${TD}/other`]);
  assert.deepEqual(p.ipAddresses, ['10.0.0.7']);
  assert.deepEqual(p.emails, ['a@b.c']);
  assert.deepEqual(p.dnsNames, ['d.e']);
  assert.equal(p.subjectCommonName, 'hello');
  assert.equal(p.requestsCa, true);
});

test('ok/CA CSR requests CA:true and the trust domain ID', async () => {
  const p = parseCsr((await createCaCsr({ key: generateKeyPair('ec-p256'), trustDomain: TD })).der);
  assert.equal(p.requestsCa, true);
  assert.deepEqual(p.uris, [`spiffe://${TD}`]);
});

test('fail/a CSR whose signature does not verify', async () => {
  const csr = await createLeafCsr({ key: generateKeyPair('ec-p256'), spiffeId: ID, dnsNames: [] });
  const bad = Buffer.from(csr.der);
  bad[bad.length - 5]! ^= 0x01; // inside the ECDSA signature
  assert.throws(() => parseCsr(bad), { code: 'INVALID_ARGUMENT', message: 'CSR signature does not verify' });
  const tampered = Buffer.from(csr.der);
  const at = tampered.indexOf(Buffer.from('ns/a'));
  tampered[at] = 0x4e; // "Ns/a": content changed after signing
  assert.throws(() => parseCsr(tampered), /CSR signature does not verify/);
});

test('fail/malformed input names the problem', () => {
  assert.throws(() => parseCsr('hello'), { code: 'INVALID_ARGUMENT', message: 'CSR is not valid PEM or DER' });
  assert.throws(() => parseCsr(Buffer.from([0x30, 0x03, 0x02, 0x01])), /CSR is not valid PEM or DER: truncated/);
  assert.throws(() => parseCsr(Buffer.alloc(0)), /CSR is empty/);
  assert.throws(() => parseCsr('-----BEGIN CERTIFICATE REQUEST-----\nMII$$\n-----END CERTIFICATE REQUEST-----\n'), /invalid base64/);
  assert.throws(() => parseCsr('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), /no CERTIFICATE REQUEST block/);
  assert.throws(() => parseCsr(toPem(Buffer.from([0x30, 0x00]), 'CERTIFICATE REQUEST')), /CSR is not valid PEM or DER/);
});

test('fail/unsupported keys and weak signature algorithms', () => {
  const bigE = openssl(['req', '-new', '-newkey', 'rsa:2048', '-pkeyopt', 'rsa_keygen_pubexp:2147483649', '-nodes', '-keyout', '/dev/null', '-subj', '/CN=x']);
  assert.throws(() => parseCsr(bigE.stdout), /CSR RSA public exponent 2147483649 is not supported \(use 65537\)/);
  const rsa1024 = openssl(['req', '-new', '-newkey', 'rsa:1024', '-nodes', '-keyout', '/dev/null', '-subj', '/CN=x']);
  assert.throws(() => parseCsr(rsa1024.stdout), /RSA key is 1024 bits; at least 2048 are required/);
  const sha1 = openssl(['req', '-new', '-sha1', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', '/dev/null', '-subj', '/CN=x']);
  assert.throws(() => parseCsr(sha1.stdout), /ecdsa-with-SHA1 is too weak/);
  const p521 = openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-521', '-nodes', '-keyout', '/dev/null', '-subj', '/CN=x']);
  assert.throws(() => parseCsr(p521.stdout), /curve 1\.3\.132\.0\.35 is not supported/);
  const dsaKey = generateKeyPairSync('dsa', { modulusLength: 2048, divisorLength: 256 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const dsa = openssl(['req', '-new', '-key', { file: 'k.pem', data: dsaKey }, '-subj', '/CN=x']);
  assert.throws(() => parseCsr(dsa.stdout), /CSR key algorithm DSA is not supported/);
});
