import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash, type KeyObject } from 'node:crypto';
import { LeafSigner } from '../../../src/x509/leaf-signer.js';
import { generateKeyPair } from '../../../src/x509/keys.js';
import { toPem } from '../../../src/x509/pem.js';
import { KEY_TYPES, type KeyType } from '../../../src/x509/types.js';
import { NOW, TD, makeCa, openssl, type TestCa } from './fixtures.js';

/**
 * The X509-SVID and CA profiles (protocols.md §6, issue #2) checked on certificates meshca really issues, for every
 * CA key type x every leaf key type, through the signer's public-key path and its generate-the-key path (the raw
 * P-256 fast path included), with and without DNS/IP SANs. The reading is done by independent parsers: openssl
 * (`verify -x509_strict`, `x509 -text`) and Node's X509Certificate; the expected SKI is SHA-1 over the
 * subjectPublicKey BIT STRING computed here from Node's SPKI export (RFC 5280 4.2.1.2 method 1).
 */

const ID = `spiffe://${TD}/ns/prod/sa/api`;
const nb = new Date(NOW.getTime() - 30_000);
const na = new Date(NOW.getTime() + 3600_000);
const SIG_NAME: Record<KeyType, string> = {
  'ec-p256': 'ecdsa-with-SHA256',
  'ec-p384': 'ecdsa-with-SHA384',
  'rsa-2048': 'sha256WithRSAEncryption',
  'rsa-3072': 'sha256WithRSAEncryption',
  ed25519: 'ED25519',
};

/** RFC 5280 method-1 key identifier, from a hand walk of the SPKI DER (SEQUENCE { alg SEQUENCE, BIT STRING }). */
function expectedKeyId(pub: KeyObject): string {
  const spki = pub.export({ type: 'spki', format: 'der' });
  const lenAt = (at: number): [number, number] => {
    const l = spki[at]!;
    if (l < 0x80) return [l, at + 1];
    let n = 0;
    for (let i = 0; i < (l & 0x7f); i++) n = n * 256 + spki[at + 1 + i]!;
    return [n, at + 1 + (l & 0x7f)];
  };
  const [, inner] = lenAt(1); // outer SEQUENCE
  const [algLen, algBody] = lenAt(inner + 1);
  const bitAt = algBody + algLen;
  assert.equal(spki[bitAt], 0x03);
  const [bitLen, bitBody] = lenAt(bitAt + 1);
  const key = spki.subarray(bitBody + 1, bitBody + bitLen); // skip the unused-bits octet
  return createHash('sha1').update(key).digest('hex').toUpperCase().match(/../g)!.join(':');
}

function text(der: Buffer): string {
  const t = openssl(['x509', '-noout', '-text', '-in', { file: 'c.pem', data: toPem(der) }]);
  assert.equal(t.status, 0, t.out);
  return t.stdout;
}

function extBody(t: string, name: string): { critical: boolean; body: string } | undefined {
  const m = new RegExp(`X509v3 ${name}:( critical)? ?\\n\\s+(.*)`).exec(t);
  return m ? { critical: m[1] !== undefined, body: m[2]!.trim() } : undefined;
}

function checkSerial(x: X509Certificate, what: string): void {
  const s = x.serialNumber;
  assert.ok(s.length <= 40, `${what}: serial ${s} is at most 20 octets`);
  assert.match(s, /^[0-7]/, `${what}: serial is positive (high bit clear)`);
  assert.ok(/[1-9A-F]/.test(s), `${what}: serial is not zero`);
}

function checkCa(der: Buffer, issuerDer: Buffer | undefined, keyType: KeyType, what: string): void {
  const t = text(der);
  const x = new X509Certificate(der);
  assert.ok(x.ca, `${what}: CA:true`);
  assert.match(t, /Version: 3 \(0x2\)/, what);
  assert.deepEqual(extBody(t, 'Basic Constraints')?.critical, true, `${what}: basicConstraints critical`);
  assert.match(extBody(t, 'Basic Constraints')!.body, /^CA:TRUE/, what);
  assert.deepEqual(extBody(t, 'Key Usage'), { critical: true, body: 'Certificate Sign, CRL Sign' }, `${what}: keyUsage`);
  assert.deepEqual(extBody(t, 'Subject Alternative Name')?.body, `URI:spiffe://${TD}`, `${what}: SPIFFE ID without a path`);
  assert.equal(extBody(t, 'Subject Key Identifier')?.body, expectedKeyId(x.publicKey), `${what}: SKI`);
  if (issuerDer) {
    const issuer = new X509Certificate(issuerDer);
    assert.equal(extBody(t, 'Authority Key Identifier')?.body.replace(/^keyid:/, ''), expectedKeyId(issuer.publicKey), `${what}: AKI = issuer SKI`);
    assert.ok(x.verify(issuer.publicKey), `${what}: signed by the issuer`);
  } else {
    assert.ok(x.verify(x.publicKey), `${what}: self-signed`);
  }
  assert.match(t, new RegExp(`Signature Algorithm: ${SIG_NAME[keyType]}\\n`), `${what}: signature algorithm`);
  checkSerial(x, what);
}

function checkLeaf(der: Buffer, ca: TestCa, caType: KeyType, leafPub: KeyObject, sans: { dns: string[]; ips: string[] }, what: string): void {
  const t = text(der);
  const x = new X509Certificate(der);
  const inter = new X509Certificate(ca.interDer);
  assert.equal(x.ca, false, what);
  assert.match(t, /Version: 3 \(0x2\)/, what);
  assert.match(t, /\n\s+Subject: ?\n/, `${what}: empty subject`);
  const san = extBody(t, 'Subject Alternative Name');
  assert.equal(san?.critical, true, `${what}: SAN critical (empty subject)`);
  const want = [`URI:${ID}`, ...sans.dns.map((d) => `DNS:${d}`), ...sans.ips.map((i) => `IP Address:${i}`)].join(', ');
  assert.equal(san?.body, want, `${what}: SAN`);
  assert.equal(san!.body.match(/URI:/g)!.length, 1, `${what}: exactly one URI SAN`);
  assert.deepEqual(extBody(t, 'Basic Constraints'), { critical: true, body: 'CA:FALSE' }, `${what}: basicConstraints`);
  const rsa = leafPub.asymmetricKeyType === 'rsa';
  assert.deepEqual(extBody(t, 'Key Usage'), { critical: true, body: rsa ? 'Digital Signature, Key Encipherment' : 'Digital Signature' }, `${what}: keyUsage`);
  assert.equal(extBody(t, 'Extended Key Usage')?.body, 'TLS Web Server Authentication, TLS Web Client Authentication', `${what}: EKU`);
  assert.equal(extBody(t, 'Subject Key Identifier')?.body, expectedKeyId(leafPub), `${what}: SKI`);
  assert.equal(extBody(t, 'Authority Key Identifier')?.body.replace(/^keyid:/, ''), expectedKeyId(inter.publicKey), `${what}: AKI = signing CA SKI`);
  assert.match(t, new RegExp(`Signature Algorithm: ${SIG_NAME[caType]}\\n`), `${what}: signature algorithm`);
  assert.ok(x.publicKey.equals(leafPub), `${what}: certified key`);
  assert.ok(x.checkIssued(inter) && x.verify(inter.publicKey), `${what}: issued and signed by the signing CA`);
  assert.equal(new Date(x.validFrom).getTime(), Math.floor(nb.getTime() / 1000) * 1000, `${what}: notBefore`);
  assert.equal(new Date(x.validTo).getTime(), Math.floor(na.getTime() / 1000) * 1000, `${what}: notAfter`);
  checkSerial(x, what);
}

test('every CA key type x every leaf key type, both signer paths, with and without DNS/IP SANs: SVID and CA profiles under openssl and Node', { timeout: 180_000 }, async () => {
  const leafKeys = new Map(KEY_TYPES.map((k) => [k, generateKeyPair(k)] as const));
  const sanSets = [
    { dns: [], ips: [] },
    { dns: ['api.prod.svc', 'api.prod.svc.cluster.local'], ips: ['10.0.0.7', '2001:DB8:0:0:0:0:0:9'] },
  ];
  for (const caType of KEY_TYPES) {
    const ca = await makeCa(caType);
    checkCa(ca.rootDer, undefined, caType, `${caType} root`);
    checkCa(ca.interDer, ca.rootDer, caType, `${caType} signing CA`);
    const signer = new LeafSigner(ca.signingCa);
    const leaves: Buffer[] = [];
    for (const [leafType, kp] of leafKeys) {
      for (const s of sanSets) {
        const der = signer.sign({ spiffeId: ID, dnsNames: s.dns, ipAddresses: s.ips, publicKey: kp.publicKey, notBefore: nb, notAfter: na });
        checkLeaf(der, ca, caType, kp.publicKey, s, `${caType} CA / ${leafType} leaf / ${s.dns.length ? 'with' : 'without'} DNS+IP`);
        leaves.push(der);
      }
    }
    // meshca generates the key: the raw P-256 fast path and OpenSSL keygen for the others (RSA-3072 once: slow).
    for (const keyType of KEY_TYPES.filter((k) => k !== 'rsa-3072' || caType === 'ec-p256')) {
      const r = signer.signWithNewKey({ spiffeId: ID, dnsNames: ['api.prod.svc'], ipAddresses: ['10.0.0.7'], notBefore: nb, notAfter: na, keyType });
      const pub = new X509Certificate(r.certDer).publicKey;
      checkLeaf(r.certDer, ca, caType, pub, { dns: ['api.prod.svc'], ips: ['10.0.0.7'] }, `${caType} CA / generated ${keyType} leaf`);
      leaves.push(r.certDer);
    }
    const v = openssl([
      'verify', '-x509_strict', '-purpose', 'sslserver', '-attime', String(Math.floor(NOW.getTime() / 1000)),
      '-CAfile', { file: 'root.pem', data: toPem(ca.rootDer) }, '-untrusted', { file: 'inter.pem', data: toPem(ca.interDer) },
      ...leaves.map((d, i) => ({ file: `leaf${i}.pem`, data: toPem(d) })),
    ]);
    assert.equal(v.status, 0, `${caType}: ${v.out}`);
    assert.equal(v.out.match(/: OK/g)?.length, leaves.length, v.out);
    const vc = openssl([
      'verify', '-x509_strict', '-purpose', 'sslclient', '-attime', String(Math.floor(NOW.getTime() / 1000)),
      '-CAfile', { file: 'root.pem', data: toPem(ca.rootDer) }, '-untrusted', { file: 'inter.pem', data: toPem(ca.interDer) },
      { file: 'leaf.pem', data: toPem(leaves[0]!) },
    ]);
    assert.equal(vc.status, 0, `${caType} (client purpose): ${vc.out}`);
  }
});
