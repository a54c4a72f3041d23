import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';

/**
 * An independent reader of SPIFFE bundle documents (protocols.md §7, SPIFFE_Trust_Domain_and_Bundle.md), written
 * from the spec and sharing no code with src/: the JWK key parameters are derived here from the certificate's
 * SubjectPublicKeyInfo with a hand-written DER reader, not with Node's JWK export that meshca itself uses.
 *
 * checkOwnBundleDoc asserts that a document meshca emits for its own trust domain is exactly the SPIFFE format:
 * - members: `keys` (required), `spiffe_sequence` and `spiffe_refresh_hint` (both SHOULD, so meshca always sets
 *   them); nothing else;
 * - `spiffe_sequence` a non-negative safe integer, `spiffe_refresh_hint` a positive whole number of seconds;
 * - one JWK per root, in order: `use: "x509-svid"`, no `kid`, `x5c` exactly one standard-base64 (padded) DER CA
 *   certificate, and `kty` with exactly its public parameters (EC: crv/x/y, RSA: n/e, OKP: crv/x), each base64url
 *   without padding and equal to the certificate's key.
 */

interface Tlv {
  tag: number;
  value: Buffer;
  end: number;
}

function tlv(buf: Buffer, at: number): Tlv {
  const tag = buf[at]!;
  let len = buf[at + 1]!;
  let off = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[off + i]!;
    off += n;
  }
  return { tag, value: buf.subarray(off, off + len), end: off + len };
}

function children(buf: Buffer): Tlv[] {
  const out: Tlv[] = [];
  for (let at = 0; at < buf.length; ) {
    const t = tlv(buf, at);
    out.push(t);
    at = t.end;
  }
  return out;
}

function oidText(b: Buffer): string {
  const parts = [Math.floor(b[0]! / 40), b[0]! % 40];
  let v = 0;
  for (const x of b.subarray(1)) {
    v = v * 128 + (x & 0x7f);
    if (!(x & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  return parts.join('.');
}

const b64url = (b: Buffer): string => b.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const stripZeros = (b: Buffer): Buffer => {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
};

/** The JWK public parameters of a certificate's key, derived from its SPKI DER by hand. */
export function expectedJwkParams(certDer: Buffer): Record<string, string> {
  const spki = new X509Certificate(certDer).publicKey.export({ type: 'spki', format: 'der' });
  const [alg, bits] = children(tlv(spki, 0).value);
  const [algOid, params] = children(alg!.value);
  const key = bits!.value.subarray(1); // unused-bits octet
  switch (oidText(algOid!.value)) {
    case '1.2.840.10045.2.1': {
      const curve = oidText(params!.value);
      const crv = { '1.2.840.10045.3.1.7': 'P-256', '1.3.132.0.34': 'P-384', '1.3.132.0.35': 'P-521' }[curve];
      assert.ok(crv, `unexpected curve ${curve}`);
      assert.equal(key[0], 0x04, 'uncompressed EC point');
      const size = (key.length - 1) / 2;
      return { kty: 'EC', crv, x: b64url(key.subarray(1, 1 + size)), y: b64url(key.subarray(1 + size)) };
    }
    case '1.2.840.113549.1.1.1': {
      const [n, e] = children(tlv(key, 0).value);
      return { kty: 'RSA', n: b64url(stripZeros(n!.value)), e: b64url(stripZeros(e!.value)) };
    }
    case '1.3.101.112':
      return { kty: 'OKP', crv: 'Ed25519', x: b64url(key) };
    default:
      throw new Error(`unexpected key algorithm ${oidText(algOid!.value)}`);
  }
}

const STD_B64 = /^[A-Za-z0-9+/]*={0,2}$/;
const B64URL_NOPAD = /^[A-Za-z0-9_-]+$/;

export interface SpiffeBundleDocument {
  keys: Record<string, unknown>[];
  spiffe_sequence: number;
  spiffe_refresh_hint: number;
}

/** Asserts `text` is exactly a SPIFFE bundle of `rootsDer` (see the file comment). Returns the parsed document. */
export function checkOwnBundleDoc(
  text: string,
  expect: { rootsDer: readonly Buffer[]; sequence?: number; refreshHintSeconds?: number },
  what = 'bundle',
): SpiffeBundleDocument {
  const doc = JSON.parse(text) as Record<string, unknown>;
  assert.ok(typeof doc === 'object' && doc !== null && !Array.isArray(doc), `${what}: a JSON object`);
  assert.deepEqual(Object.keys(doc).sort(), ['keys', 'spiffe_refresh_hint', 'spiffe_sequence'], `${what}: members`);
  assert.ok(Number.isSafeInteger(doc.spiffe_sequence) && (doc.spiffe_sequence as number) >= 0, `${what}: spiffe_sequence ${String(doc.spiffe_sequence)}`);
  assert.ok(Number.isInteger(doc.spiffe_refresh_hint) && (doc.spiffe_refresh_hint as number) > 0, `${what}: spiffe_refresh_hint ${String(doc.spiffe_refresh_hint)}`);
  if (expect.sequence !== undefined) assert.equal(doc.spiffe_sequence, expect.sequence, `${what}: spiffe_sequence`);
  if (expect.refreshHintSeconds !== undefined) assert.equal(doc.spiffe_refresh_hint, expect.refreshHintSeconds, `${what}: spiffe_refresh_hint`);
  assert.ok(Array.isArray(doc.keys), `${what}: keys is an array`);
  const keys = doc.keys as Record<string, unknown>[];
  assert.equal(keys.length, expect.rootsDer.length, `${what}: one key per root`);
  keys.forEach((k, i) => {
    const at = `${what}: keys[${i}]`;
    const root = expect.rootsDer[i]!;
    assert.equal(k.use, 'x509-svid', `${at}.use`);
    assert.equal('kid' in k, false, `${at}: an x509-svid key has no kid`);
    assert.ok(Array.isArray(k.x5c) && k.x5c.length === 1, `${at}: x5c holds exactly one certificate`);
    const b64 = (k.x5c as unknown[])[0];
    assert.equal(typeof b64, 'string', `${at}: x5c[0] is a string`);
    assert.match(b64 as string, STD_B64, `${at}: x5c[0] is standard (not url-safe) base64`);
    assert.equal((b64 as string).length % 4, 0, `${at}: x5c[0] is padded base64`);
    const der = Buffer.from(b64 as string, 'base64');
    assert.equal(der.toString('base64'), b64, `${at}: x5c[0] is canonical base64`);
    assert.ok(der.equals(root), `${at}: x5c[0] is the DER of root ${i}`);
    assert.ok(new X509Certificate(der).ca, `${at}: x5c[0] is a CA certificate`);
    const want = expectedJwkParams(der);
    assert.deepEqual(Object.keys(k).sort(), [...Object.keys(want), 'use', 'x5c'].sort(), `${at}: members for kty ${want.kty}`);
    for (const [name, value] of Object.entries(want)) {
      assert.equal(k[name], value, `${at}.${name}`);
      if (name !== 'kty' && name !== 'crv') assert.match(k[name] as string, B64URL_NOPAD, `${at}.${name} is base64url without padding`);
    }
  });
  return doc as unknown as SpiffeBundleDocument;
}
