import 'reflect-metadata';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createECDH, createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { LeafSigner } from '../../../src/x509/leaf-signer.js';
import { LeafSignerPool } from '../../../src/x509/signer-pool.js';
import { RawP256KeyGenerator, generateKeyPair, keyIdentifier, p256Pkcs8FromRaw, spkiDerOf } from '../../../src/x509/keys.js';
import { parseCertificate } from '../../../src/x509/cert-parse.js';
import { checkSvidProfile } from '../../../src/x509/validate.js';
import { toPem } from '../../../src/x509/pem.js';
import { KEY_TYPES, type KeyType } from '../../../src/x509/types.js';
import { NOW, TD, makeCa, openssl, opensslVerify } from './fixtures.js';

const ID = `spiffe://${TD}/ns/default/sa/web`;
const nb = new Date(NOW.getTime() - 30_000);
const na = new Date(NOW.getTime() + 3600_000);

test('leaves for every CA and leaf key type pass openssl verify -x509_strict and the SVID profile', { timeout: 60_000 }, async () => {
  const leafTypes = ['ec-p256', 'ec-p384', 'rsa-2048', 'ed25519'] as KeyType[];
  const leafKeys = leafTypes.map((t) => generateKeyPair(t));
  for (const caType of ['ec-p256', 'ec-p384', 'rsa-2048', 'ed25519'] as KeyType[]) {
    const ca = await makeCa(caType);
    const signer = new LeafSigner(ca.signingCa);
    const ders = leafKeys.map((kp) =>
      signer.sign({ spiffeId: ID, dnsNames: ['web.default.svc'], ipAddresses: ['10.1.2.3', '2001:db8::1'], publicKey: kp.publicKey, notBefore: nb, notAfter: na }),
    );
    const v = openssl([
      'verify', '-x509_strict', '-attime', String(Math.floor(NOW.getTime() / 1000)),
      '-CAfile', { file: 'root.pem', data: toPem(ca.rootDer) }, '-untrusted', { file: 'inter.pem', data: toPem(ca.interDer) },
      ...ders.map((d, i) => ({ file: `leaf${i}.pem`, data: toPem(d) })),
    ]);
    assert.equal(v.status, 0, `${caType}: ${v.out}`);
    assert.equal(v.out.match(/: OK/g)?.length, 4, v.out);
    for (let i = 0; i < ders.length; i++) {
      const der = ders[i]!;
      const leafType = leafTypes[i]!;
      checkSvidProfile(der, { trustDomain: TD, issuerCertDer: ca.interDer, verifySignature: 'always' });
      const x = new X509Certificate(der);
      assert.ok(x.publicKey.equals(leafKeys[i]!.publicKey));
      assert.equal(x.checkIssued(new X509Certificate(ca.interDer)), true);
      if (caType !== 'ec-p256' && i > 0) continue; // text-parse every leaf type once, and every CA type once
      const text = openssl(['x509', '-noout', '-text', '-in', { file: 'l.pem', data: toPem(der) }]);
      assert.equal(text.status, 0, text.out);
      assert.match(text.out, /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/example\.org\/ns\/default\/sa\/web, DNS:web\.default\.svc, IP Address:10\.1\.2\.3, IP Address:2001:DB8:0:0:0:0:0:1/);
      assert.match(text.out, /Basic Constraints: critical\s+CA:FALSE/);
      assert.match(text.out, leafType.startsWith('rsa') ? /Key Usage: critical\s+Digital Signature, Key Encipherment/ : /Key Usage: critical\s+Digital Signature\n/);
      assert.match(text.out, /TLS Web Server Authentication, TLS Web Client Authentication/);
      assert.match(text.out, /Subject: \n/);
      const sigName = { 'ec-p256': 'ecdsa-with-SHA256', 'ec-p384': 'ecdsa-with-SHA384', 'rsa-2048': 'sha256WithRSAEncryption', 'rsa-3072': '', ed25519: 'ED25519' }[caType];
      assert.match(text.out, new RegExp(`Signature Algorithm: ${sigName}`));
    }
  }
});

test('fast leaf TBS equals @peculiar/x509 generator output byte for byte given the same serial and key ids', { timeout: 20_000 }, async () => {
  const ca = await makeCa('ec-p256');
  const signer = new LeafSigner(ca.signingCa);
  const crypto = webcrypto as unknown as Parameters<typeof x509.X509CertificateGenerator.create>[1];
  const signingKey = await webcrypto.subtle.importKey('pkcs8', ca.interKey.export({ type: 'pkcs8', format: 'der' }), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  for (const [notAfter, dns, ips] of [
    [na, ['a.example'], ['192.0.2.1']],
    [new Date('2049-12-31T23:59:59Z'), [], []],
    [new Date('2050-01-01T00:00:00Z'), ['x.y'], ['2001:db8::5', '10.0.0.1']],
  ] as [Date, string[], string[]][]) {
    const ca2 = notAfter > na ? await makeCa('ec-p256', NOW, 30 * 365 * 86400) : ca;
    const s = ca2 === ca ? signer : new LeafSigner(ca2.signingCa);
    const kp = generateKeyPair('ec-p256');
    const ours = parseCertificate(s.sign({ spiffeId: ID, dnsNames: dns, ipAddresses: ips, publicKey: kp.publicKey, notBefore: nb, notAfter }));
    const sk = ca2 === ca ? signingKey : await webcrypto.subtle.importKey('pkcs8', ca2.interKey.export({ type: 'pkcs8', format: 'der' }), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    const ref = await x509.X509CertificateGenerator.create(
      {
        serialNumber: ours.serial.toString('hex'),
        issuer: new x509.Name(new Uint8Array(parseCertificate(ca2.interDer).subject)),
        notBefore: nb,
        notAfter,
        publicKey: new Uint8Array(spkiDerOf(kp.publicKey)),
        signingKey: sk as never,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as never,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
          new x509.SubjectKeyIdentifierExtension(keyIdentifier(spkiDerOf(kp.publicKey)).toString('hex')),
          new x509.AuthorityKeyIdentifierExtension(keyIdentifier(parseCertificate(ca2.interDer).spki).toString('hex')),
          new x509.SubjectAlternativeNameExtension(
            [{ type: 'url', value: ID }, ...dns.map((d) => ({ type: 'dns' as const, value: d })), ...ips.map((i) => ({ type: 'ip' as const, value: i }))],
            true,
          ),
        ],
      },
      crypto,
    );
    const theirs = parseCertificate(Buffer.from(ref.rawData));
    assert.equal(ours.tbs.toString('hex'), theirs.tbs.toString('hex'), `TBS differs for notAfter ${notAfter.toISOString()}`);
  }
});

test('IPv4-mapped and compressed IPv6 SANs encode as 16 bytes (openssl agrees)', async () => {
  // @peculiar/x509 2.2 mis-encodes "::ffff:1.2.3.4"; ours must match what openssl prints.
  const ca = await makeCa();
  const s = new LeafSigner(ca.signingCa);
  const der = s.sign({ spiffeId: ID, dnsNames: [], ipAddresses: ['::ffff:1.2.3.4', 'fe80::1:2', '::'], publicKey: generateKeyPair('ec-p256').publicKey, notBefore: nb, notAfter: na });
  const text = openssl(['x509', '-noout', '-ext', 'subjectAltName', '-in', { file: 'l.pem', data: toPem(der) }]);
  assert.match(text.out, /IP Address:0:0:0:0:0:FFFF:102:304, IP Address:FE80:0:0:0:0:0:1:2, IP Address:0:0:0:0:0:0:0:0/);
});

test('validity uses UTCTime before 2050 and GeneralizedTime from 2050', async () => {
  const ca = await makeCa('ec-p256', NOW, 30 * 365 * 86400);
  const s = new LeafSigner(ca.signingCa);
  const pub = generateKeyPair('ec-p256').publicKey;
  const at = (notAfter: Date): Buffer => {
    const c = parseCertificate(s.sign({ spiffeId: ID, dnsNames: [], publicKey: pub, notBefore: nb, notAfter }));
    return c.tbs;
  };
  assert.ok(at(new Date('2049-12-31T23:59:59.999Z')).includes(Buffer.from('\x17\x0d491231235959Z', 'latin1')));
  assert.ok(at(new Date('2050-01-01T00:00:00Z')).includes(Buffer.from('\x18\x0f20500101000000Z', 'latin1')));
  const der = s.sign({ spiffeId: ID, dnsNames: [], publicKey: pub, notBefore: nb, notAfter: new Date('2050-01-01T00:00:05Z') });
  assert.equal(new X509Certificate(der).validTo, 'Jan  1 00:00:05 2050 GMT');
  assert.equal(opensslVerify(ca, der).status, 0);
});

test('serials are 20 positive octets, minimally encoded and distinct', async () => {
  const ca = await makeCa();
  const s = new LeafSigner(ca.signingCa);
  const pub = generateKeyPair('ec-p256').publicKey;
  const seen = new Set<string>();
  for (let i = 0; i < 500; i++) {
    const c = parseCertificate(s.sign({ spiffeId: ID, dnsNames: [], publicKey: pub, notBefore: nb, notAfter: na }));
    assert.equal(c.serial.length, 20);
    assert.ok(c.serial[0]! > 0 && c.serial[0]! < 0x80);
    seen.add(c.serial.toString('hex'));
  }
  assert.equal(seen.size, 500);
});

test('refuses validity outside the CA, a mismatched CA key and unsupported leaf keys', async () => {
  const ca = await makeCa();
  const s = new LeafSigner(ca.signingCa);
  const pub = generateKeyPair('ec-p256').publicKey;
  assert.throws(() => s.sign({ spiffeId: ID, dnsNames: [], publicKey: pub, notBefore: nb, notAfter: new Date(ca.signingCa.notAfter.getTime() + 1000) }), /outside the signing CA validity/);
  assert.throws(() => s.sign({ spiffeId: ID, dnsNames: [], publicKey: pub, notBefore: na, notAfter: nb }), /notBefore must be before notAfter/);
  assert.throws(() => new LeafSigner({ ...ca.signingCa, key: generateKeyPair('ec-p256').privateKey }), /does not match its certificate/);
  const dsa = (await import('node:crypto')).generateKeyPairSync('dsa', { modulusLength: 2048, divisorLength: 256 }).publicKey;
  assert.throws(() => s.sign({ spiffeId: ID, dnsNames: [], publicKey: dsa, notBefore: nb, notAfter: na }), /algorithm 1\.2\.840\.10040\.4\.1 is not supported/);
  assert.throws(() => s.sign({ spiffeId: ID, dnsNames: ['bad\u00e9.example'], publicKey: pub, notBefore: nb, notAfter: na }), /non-ASCII/);
  assert.throws(() => s.sign({ spiffeId: ID, dnsNames: [], ipAddresses: ['10.0.0.300'], publicKey: pub, notBefore: nb, notAfter: na }), /not an IP address/);
});

test('signWithNewKey returns a PKCS#8 key matching the certificate for every key type', { timeout: 30_000 }, async () => {
  const ca = await makeCa();
  const s = new LeafSigner(ca.signingCa);
  for (const keyType of KEY_TYPES.filter((k) => k !== 'rsa-3072')) {
    const r = s.signWithNewKey({ spiffeId: ID, dnsNames: [], notBefore: nb, notAfter: na, keyType });
    const key = createPrivateKey(r.privateKeyPkcs8Pem);
    assert.ok(new X509Certificate(r.certDer).publicKey.equals(createPublicKey(key)), keyType);
    assert.match(r.privateKeyPkcs8Pem, /^-----BEGIN PRIVATE KEY-----\n/);
    assert.equal(opensslVerify(ca, r.certDer).status, 0, keyType);
    if (keyType === 'ec-p256') {
      const ours = createPrivateKey(r.privateKeyPkcs8Pem).export({ type: 'pkcs8', format: 'pem' });
      assert.equal(ours, r.privateKeyPkcs8Pem, 'hand-built PKCS#8 equals what OpenSSL writes');
    }
  }
});

test('LeafSignerPool signs on workers, follows setCa, and fails cleanly after close', { timeout: 20_000 }, async () => {
  const pool = new LeafSignerPool({ workers: 2, inlineShare: 0 });
  try {
    const pub = generateKeyPair('ec-p256').publicKey;
    await assert.rejects(pool.sign({ spiffeId: ID, dnsNames: [], publicKey: pub, notBefore: nb, notAfter: na }), { code: 'FAILED_PRECONDITION' });
    const ca1 = await makeCa();
    pool.setCa(ca1.signingCa);
    const ders = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? pool.sign({ spiffeId: ID, dnsNames: [], publicKey: pub, notBefore: nb, notAfter: na }) : pool.signWithNewKey({ spiffeId: ID, dnsNames: [], notBefore: nb, notAfter: na, keyType: 'ec-p256' }).then((r) => r.certDer))));
    for (const d of ders) checkSvidProfile(d, { trustDomain: TD, issuerCertDer: ca1.interDer, verifySignature: 'always' });
    assert.equal(opensslVerify(ca1, ders[0]!).status, 0);
    const ca2 = await makeCa('ec-p384');
    pool.setCa(ca2.signingCa);
    const d2 = await pool.sign({ spiffeId: ID, dnsNames: [], publicKey: pub, notBefore: nb, notAfter: na });
    checkSvidProfile(d2, { trustDomain: TD, issuerCertDer: ca2.interDer });
    assert.throws(() => checkSvidProfile(d2, { trustDomain: TD, issuerCertDer: ca1.interDer }), /issuer name does not match|authorityKeyIdentifier/);
    await assert.rejects(pool.sign({ spiffeId: ID, dnsNames: [], publicKey: pub, notBefore: nb, notAfter: new Date(NOW.getTime() + 400 * 86400_000) }), /outside the signing CA validity/);
  } finally {
    await pool.close();
  }
  await assert.rejects(pool.sign({ spiffeId: ID, dnsNames: [], publicKey: generateKeyPair('ec-p256').publicKey, notBefore: nb, notAfter: na }), { code: 'UNAVAILABLE' });
});

test('LeafSignerPool with 0 workers signs inline', async () => {
  const pool = new LeafSignerPool({ workers: 0 });
  const ca = await makeCa();
  pool.setCa(ca.signingCa);
  const r = await pool.signWithNewKey({ spiffeId: ID, dnsNames: [], notBefore: nb, notAfter: na, keyType: 'ec-p256' });
  checkSvidProfile(r.certDer, { trustDomain: TD, issuerCertDer: ca.interDer });
  await pool.close();
});

test('LeafSignerPool.parseCsr parses on a worker with parseCsr results and errors', { timeout: 20_000 }, async () => {
  const { createLeafCsr } = await import('../../../src/x509/leaf-csr.js');
  const pool = new LeafSignerPool({ workers: 1, inlineShare: 0 });
  try {
    const ca = await makeCa();
    pool.setCa(ca.signingCa);
    const kp = generateKeyPair('ec-p256');
    const csr = await createLeafCsr({ key: kp, spiffeId: ID, dnsNames: ['x.svc'] });
    for (const input of [csr.der, csr.pem]) {
      const p = await pool.parseCsr(input);
      assert.deepEqual(p.uris, [ID]);
      assert.deepEqual(p.dnsNames, ['x.svc']);
      assert.equal(p.keyType, 'ec-p256');
      assert.ok(p.publicKey.equals(kp.publicKey));
      assert.deepEqual(p.der, csr.der);
      const der = await pool.sign({ spiffeId: p.uris[0]!, dnsNames: p.dnsNames, publicKey: p.publicKey, notBefore: nb, notAfter: na });
      assert.ok(new X509Certificate(der).publicKey.equals(kp.publicKey));
    }
    const bad = Buffer.from(csr.der);
    bad[bad.length - 3]! ^= 1;
    await assert.rejects(pool.parseCsr(bad), { code: 'INVALID_ARGUMENT', message: 'CSR signature does not verify' });
    await assert.rejects(pool.parseCsr('junk'), { code: 'INVALID_ARGUMENT', message: 'CSR is not valid PEM or DER' });
  } finally {
    await pool.close();
  }
});

test('LeafSignerPool signs a lone request inline and spreads a burst over its workers', { timeout: 20_000 }, async () => {
  const pool = new LeafSignerPool({ workers: 2, trustDomain: TD });
  try {
    assert.throws(() => new LeafSignerPool({ workers: 1, inlineShare: 2 }), /inlineShare must be between 0 and 1/);
    const ca = await makeCa();
    pool.setCa(ca.signingCa);
    const one = () => pool.signWithNewKey({ spiffeId: ID, dnsNames: [], notBefore: nb, notAfter: na, keyType: 'ec-p256' });
    await one();
    assert.deepEqual(pool.jobCounts(), { inline: 1, dispatched: 0 });
    await new Promise((r) => setTimeout(r, 15));
    // 300 requests in one tick: the inline budget (25% of a 10 ms window) is spent after a few dozen.
    const burst = await Promise.all(Array.from({ length: 300 }, one));
    const c = pool.jobCounts();
    assert.equal(c.inline + c.dispatched, 301);
    assert.ok(c.dispatched >= 150, `a burst goes mostly to the workers (${JSON.stringify(c)})`);
    assert.ok(c.inline >= 2, `the calling thread takes its share (${JSON.stringify(c)})`);
    for (const r of burst) checkSvidProfile(r.certDer, { trustDomain: TD, issuerCertDer: ca.interDer, verifySignature: 'always' });
    // RSA key generation (50-500 ms) never blocks the calling thread while workers exist, idle or not.
    await new Promise((r) => setTimeout(r, 15));
    const before = pool.jobCounts();
    const rsa = await pool.signWithNewKey({ spiffeId: ID, dnsNames: [], notBefore: nb, notAfter: na, keyType: 'rsa-2048' });
    assert.deepEqual(pool.jobCounts(), { inline: before.inline, dispatched: before.dispatched + 1 });
    assert.ok(createPrivateKey(rsa.privateKeyPkcs8Pem).asymmetricKeyType === 'rsa');
  } finally {
    await pool.close();
  }
});

test('hand-built P-256 PKCS#8 pads a short private scalar and matches OpenSSL byte for byte', () => {
  const ecdh = createECDH('prime256v1');
  const d = Buffer.alloc(32, 0x5a);
  d[0] = 0; // a scalar with a leading zero byte comes back 31 bytes long from some APIs
  ecdh.setPrivateKey(d);
  const q = ecdh.getPublicKey();
  const der = p256Pkcs8FromRaw(d.subarray(1), q);
  const viaOpenssl = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ type: 'pkcs8', format: 'der' });
  assert.ok(der.equals(viaOpenssl));
  assert.ok(p256Pkcs8FromRaw(d, q).equals(der));
  assert.throws(() => p256Pkcs8FromRaw(Buffer.alloc(33, 1), q), /at most 32 bytes/);
  assert.throws(() => p256Pkcs8FromRaw(d, q.subarray(1)), /65 bytes uncompressed/);
});

test('RawP256KeyGenerator: fresh scalars in [1, n-1], PKCS#8 and SPKI of one key pair, out-of-range draws skipped', () => {
  const n = Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex');
  const good = Buffer.alloc(32, 0x11);
  // The injected source yields, in order: 0, n, 0xff..ff, then a valid scalar; only the last may become a key.
  let calls = 0;
  const gen = new RawP256KeyGenerator((buf) => {
    calls++;
    buf.fill(0);
    n.copy(buf, 32);
    buf.fill(0xff, 64, 96);
    for (let at = 96; at < buf.length; at += 32) good.copy(buf, at);
  });
  const k = gen.generate();
  assert.equal(calls, 1);
  const priv = createPrivateKey({ key: k.pkcs8Der, format: 'der', type: 'pkcs8' });
  assert.equal((priv.export({ format: 'jwk' }) as { d: string }).d, good.toString('base64url'));
  assert.ok(createPublicKey(priv).export({ type: 'spki', format: 'der' }).equals(k.spkiDer));

  // With the real CSPRNG: every key is valid, matches its SPKI, and none repeats.
  const real = new RawP256KeyGenerator();
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const r = real.generate();
    const key = createPrivateKey({ key: r.pkcs8Der, format: 'der', type: 'pkcs8' });
    if (i % 20 === 0) assert.ok(createPublicKey(key).export({ type: 'spki', format: 'der' }).equals(r.spkiDer));
    seen.add(r.spkiDer.toString('hex'));
  }
  assert.equal(seen.size, 200);
});

test('the memoised SAN follows each request: one identity issued with different DNS names and IPs in turn', async () => {
  const ca = await makeCa();
  const s = new LeafSigner(ca.signingCa);
  const pub = generateKeyPair('ec-p256').publicKey;
  const sanOf = (dnsNames: string[], ipAddresses: string[] = []): string =>
    new X509Certificate(s.sign({ spiffeId: ID, dnsNames, ipAddresses, publicKey: pub, notBefore: nb, notAfter: na })).subjectAltName!;
  assert.equal(sanOf(['a.svc']), `URI:${ID}, DNS:a.svc`);
  assert.equal(sanOf(['a.svc', 'b.svc']), `URI:${ID}, DNS:a.svc, DNS:b.svc`);
  assert.equal(sanOf(['a.svc']), `URI:${ID}, DNS:a.svc`);
  assert.equal(sanOf(['a.svc'], ['10.0.0.1']), `URI:${ID}, DNS:a.svc, IP Address:10.0.0.1`);
  assert.equal(sanOf([]), `URI:${ID}`);
  // Another identity with the same names never gets the first one's extension.
  const other = `spiffe://${TD}/ns/default/sa/db`;
  const der = s.sign({ spiffeId: other, dnsNames: ['a.svc'], publicKey: pub, notBefore: nb, notAfter: na });
  assert.equal(new X509Certificate(der).subjectAltName, `URI:${other}, DNS:a.svc`);
});

test('fast leaf TBS equals @peculiar/x509 output for P-384, RSA (keyEncipherment) and Ed25519 leaf keys and for each CA key type', { timeout: 30_000 }, async () => {
  const crypto = webcrypto as unknown as Parameters<typeof x509.X509CertificateGenerator.create>[1];
  const algs: Partial<Record<KeyType, { import: object; sign: object }>> = {
    'ec-p384': { import: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
    'rsa-2048': { import: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, sign: { name: 'RSASSA-PKCS1-v1_5' } },
    'ec-p256': { import: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  };
  for (const [caType, alg] of Object.entries(algs) as [KeyType, { import: object; sign: object }][]) {
    const ca = await makeCa(caType);
    const signer = new LeafSigner(ca.signingCa);
    const sk = await webcrypto.subtle.importKey('pkcs8', ca.interKey.export({ type: 'pkcs8', format: 'der' }), alg.import as never, false, ['sign']);
    for (const leafType of ['ec-p384', 'rsa-2048', 'ed25519'] as KeyType[]) {
      const kp = generateKeyPair(leafType);
      const ours = parseCertificate(signer.sign({ spiffeId: ID, dnsNames: ['a.example'], ipAddresses: ['192.0.2.1'], publicKey: kp.publicKey, notBefore: nb, notAfter: na }));
      const ku = leafType.startsWith('rsa') ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment : x509.KeyUsageFlags.digitalSignature;
      const ref = await x509.X509CertificateGenerator.create(
        {
          serialNumber: ours.serial.toString('hex'),
          issuer: new x509.Name(new Uint8Array(parseCertificate(ca.interDer).subject)),
          notBefore: nb,
          notAfter: na,
          publicKey: new Uint8Array(spkiDerOf(kp.publicKey)),
          signingKey: sk as never,
          signingAlgorithm: alg.sign as never,
          extensions: [
            new x509.BasicConstraintsExtension(false, undefined, true),
            new x509.KeyUsagesExtension(ku, true),
            new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
            new x509.SubjectKeyIdentifierExtension(keyIdentifier(spkiDerOf(kp.publicKey)).toString('hex')),
            new x509.AuthorityKeyIdentifierExtension(keyIdentifier(parseCertificate(ca.interDer).spki).toString('hex')),
            new x509.SubjectAlternativeNameExtension([{ type: 'url', value: ID }, { type: 'dns', value: 'a.example' }, { type: 'ip', value: '192.0.2.1' }], true),
          ],
        },
        crypto,
      );
      const theirs = parseCertificate(Buffer.from(ref.rawData));
      assert.equal(ours.tbs.toString('hex'), theirs.tbs.toString('hex'), `TBS differs: ${caType} CA, ${leafType} leaf`);
    }
  }
});
