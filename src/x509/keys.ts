import * as nodeCrypto from 'node:crypto';
import { createECDH, createHash, createPrivateKey, generateKeyPairSync, randomFillSync, type ECDH, type KeyObject } from 'node:crypto';
import { invalidArgument } from '../util/errors.js';
import { DER_NULL, bitString, children, octetString, oid, readWhole, seq, smallInteger, tlv, TAG } from './der.js';
import { toPem } from './pem.js';
import type { KeyType } from './types.js';

export const OID = {
  ecPublicKey: '1.2.840.10045.2.1',
  p256: '1.2.840.10045.3.1.7',
  p384: '1.3.132.0.34',
  rsaEncryption: '1.2.840.113549.1.1.1',
  ed25519: '1.3.101.112',
  ecdsaSha256: '1.2.840.10045.4.3.2',
  ecdsaSha384: '1.2.840.10045.4.3.3',
  ecdsaSha512: '1.2.840.10045.4.3.4',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  sha384WithRsa: '1.2.840.113549.1.1.12',
  sha512WithRsa: '1.2.840.113549.1.1.13',
} as const;

/** Generates a key pair for `keyType`. Synchronous: P-256 takes ~40 µs, RSA-3072 can take ~1 s. */
export function generateKeyPair(keyType: KeyType): { privateKey: KeyObject; publicKey: KeyObject } {
  switch (keyType) {
    case 'ec-p256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' });
    case 'ec-p384':
      return generateKeyPairSync('ec', { namedCurve: 'P-384' });
    case 'rsa-2048':
      return generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 0x10001 });
    case 'rsa-3072':
      return generateKeyPairSync('rsa', { modulusLength: 3072, publicExponent: 0x10001 });
    case 'ed25519':
      return generateKeyPairSync('ed25519');
    default:
      throw invalidArgument(`unsupported key type "${String(keyType)}"`);
  }
}

/** PKCS#8 PEM ("BEGIN PRIVATE KEY"), unencrypted; the caller writes it 0600 or sends it over mTLS only. */
export function privateKeyToPkcs8Pem(key: KeyObject): string {
  if (key.type !== 'private') throw invalidArgument('privateKeyToPkcs8Pem needs a private key');
  return key.export({ type: 'pkcs8', format: 'pem' }) as string;
}

// Key types already known for a KeyObject (its importer saw the curve OID), so the CSR hot path skips the native
// asymmetricKeyDetails lookup (~3-5 µs per fresh key). Weak: entries die with the KeyObject.
const keyTypeByKey = new WeakMap<KeyObject, KeyType>();

/** Records the key type of `key` (the caller guarantees it, e.g. it imported `key` as a P-256 point). */
export function rememberKeyType(key: KeyObject, keyType: KeyType): void {
  keyTypeByKey.set(key, keyType);
}

/** The meshca key type of a key, or undefined for keys meshca does not generate (RSA-4096, P-521, DSA...). */
export function keyTypeOf(key: KeyObject): KeyType | undefined {
  const known = keyTypeByKey.get(key);
  if (known) return known;
  const d = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case 'ec':
      return d?.namedCurve === 'prime256v1' ? 'ec-p256' : d?.namedCurve === 'secp384r1' ? 'ec-p384' : undefined;
    case 'rsa':
      return d?.modulusLength === 2048 ? 'rsa-2048' : d?.modulusLength === 3072 ? 'rsa-3072' : undefined;
    case 'ed25519':
      return 'ed25519';
    default:
      return undefined;
  }
}

export interface SignatureAlgorithm {
  /** Digest name for crypto.sign/verify; null for Ed25519 (pure EdDSA). */
  readonly hash: 'sha256' | 'sha384' | null;
  readonly oid: string;
  /** Full AlgorithmIdentifier DER (RSA with explicit NULL parameters, ECDSA/Ed25519 with none, per RFC 5758/8410). */
  readonly algorithmIdentifier: Buffer;
  readonly name: string;
}

const ALG: Record<string, SignatureAlgorithm> = {
  ecdsaSha256: { hash: 'sha256', oid: OID.ecdsaSha256, algorithmIdentifier: seq(oid(OID.ecdsaSha256)), name: 'ecdsa-with-SHA256' },
  ecdsaSha384: { hash: 'sha384', oid: OID.ecdsaSha384, algorithmIdentifier: seq(oid(OID.ecdsaSha384)), name: 'ecdsa-with-SHA384' },
  rsaSha256: {
    hash: 'sha256',
    oid: OID.sha256WithRsa,
    algorithmIdentifier: seq(oid(OID.sha256WithRsa), DER_NULL),
    name: 'sha256WithRSAEncryption',
  },
  ed25519: { hash: null, oid: OID.ed25519, algorithmIdentifier: seq(oid(OID.ed25519)), name: 'Ed25519' },
};

/** The signature algorithm a certificate signed by `key` uses. Throws INVALID_ARGUMENT for unsupported keys. */
export function signatureAlgorithmFor(key: KeyObject): SignatureAlgorithm {
  const t = keyTypeOf(key);
  switch (t) {
    case 'ec-p256':
      return ALG.ecdsaSha256!;
    case 'ec-p384':
      return ALG.ecdsaSha384!;
    case 'rsa-2048':
    case 'rsa-3072':
      return ALG.rsaSha256!;
    case 'ed25519':
      return ALG.ed25519!;
    default:
      if (key.asymmetricKeyType === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048) return ALG.rsaSha256!;
      throw invalidArgument(`unsupported signing key: ${describeKey(key)}`);
  }
}

export function describeKey(key: KeyObject): string {
  const d = key.asymmetricKeyDetails;
  const t = key.asymmetricKeyType ?? 'unknown';
  if (t === 'ec') return `EC ${d?.namedCurve ?? '?'}`;
  if (t === 'rsa' || t === 'rsa-pss') return `${t.toUpperCase()} ${d?.modulusLength ?? '?'} bits`;
  return t;
}

// SubjectPublicKeyInfo DER for keys whose SPKI we already hold (parsed from a CSR, or built from raw key material),
// so the hot path never runs OpenSSL's encoder (~100 µs per export). Weak: entries die with the KeyObject.
const spkiByKey = new WeakMap<KeyObject, Buffer>();

/** Records the SPKI DER of `key` (the caller guarantees they match, e.g. it imported `key` from these bytes). */
export function rememberSpki(key: KeyObject, spkiDer: Buffer): void {
  spkiByKey.set(key, spkiDer);
}

/** SubjectPublicKeyInfo DER of a public (or private) key; cached when known. */
export function spkiDerOf(key: KeyObject): Buffer {
  const hit = spkiByKey.get(key);
  if (hit) return hit;
  const der = key.export({ type: 'spki', format: 'der' });
  if (key.type === 'public') spkiByKey.set(key, der);
  return der;
}

/** The subjectPublicKey BIT STRING contents (without the unused-bits byte) of an SPKI. */
export function subjectPublicKeyBits(spkiDer: Buffer): Buffer {
  const top = readWhole(spkiDer, TAG.SEQUENCE, 'SubjectPublicKeyInfo');
  const parts = children(top.value);
  const bits = parts[1];
  if (parts.length !== 2 || parts[0]!.tag !== TAG.SEQUENCE || !bits || bits.tag !== TAG.BIT_STRING || bits.value[0] !== 0) {
    throw invalidArgument('malformed SubjectPublicKeyInfo');
  }
  return bits.value.subarray(1);
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(spkiDer: Buffer): Buffer {
  // P-256 SPKIs (every leaf meshca generates) have a fixed header: skip the generic parse on the hot path.
  return sha1(isP256Spki(spkiDer) ? spkiDer.subarray(P256_SPKI_PREFIX.length) : subjectPublicKeyBits(spkiDer));
}

/** True when `spkiDer` is an uncompressed P-256 SubjectPublicKeyInfo (byte comparison with its fixed header). */
export function isP256Spki(spkiDer: Buffer): boolean {
  return (
    spkiDer.length === P256_SPKI_PREFIX.length + 65 &&
    spkiDer.compare(P256_SPKI_PREFIX, 0, P256_SPKI_PREFIX.length, 0, P256_SPKI_PREFIX.length) === 0
  );
}

/** One-shot crypto.hash where Node has it (>= 20.12), else a Hash object. */
const oneShotHash = (nodeCrypto as { hash?: typeof nodeCrypto.hash }).hash;
const sha1: (data: Buffer) => Buffer = oneShotHash
  ? (data) => oneShotHash('sha1', data, 'buffer')
  : (data) => createHash('sha1').update(data).digest();

// --- Raw P-256 keys for the issuance hot path -------------------------------------------------------------------
// Raw d and Q (no KeyObject) make building SPKI/PKCS#8 byte concatenation, whereas exporting a KeyObject goes
// through OpenSSL 3's encoders (20-170 µs per export, depending on the Node version).

const P256_ALG_ID = seq(oid(OID.ecPublicKey), oid(OID.p256));
const P256_SPKI_PREFIX = Buffer.from([0x30, 0x59, 0x30, 0x13, ...P256_ALG_ID.subarray(2), 0x03, 0x42, 0x00]);

/** SPKI DER for an uncompressed P-256 point (65 bytes, 0x04 || X || Y). */
export function p256SpkiFromPoint(q: Buffer): Buffer {
  if (q.length !== 65 || q[0] !== 0x04) throw invalidArgument('P-256 public point must be 65 bytes uncompressed');
  return Buffer.concat([P256_SPKI_PREFIX, q]);
}

/** PKCS#8 DER (RFC 5208 + RFC 5915 ECPrivateKey with the public key, as OpenSSL writes it) for a P-256 key. */
export function p256Pkcs8FromRaw(d: Buffer, q: Buffer): Buffer {
  if (d.length > 32) throw invalidArgument('P-256 private scalar must be at most 32 bytes');
  if (q.length !== 65 || q[0] !== 0x04) throw invalidArgument('P-256 public point must be 65 bytes uncompressed');
  // Fixed-size fields, so the encoding is a template with d and Q copied in (hot path: every generated leaf key).
  const out = Buffer.from(P256_PKCS8.template);
  out.fill(0, P256_PKCS8.dAt, P256_PKCS8.dAt + 32 - d.length);
  d.copy(out, P256_PKCS8.dAt + 32 - d.length);
  q.copy(out, P256_PKCS8.qAt);
  return out;
}

/** The PKCS#8 structure for P-256, built once with marker bytes to find where d and Q go. */
const P256_PKCS8 = ((): { template: Buffer; dAt: number; qAt: number } => {
  const dMark = Buffer.alloc(32, 0xd1);
  const qMark = Buffer.concat([Buffer.from([0x04]), Buffer.alloc(64, 0xe2)]);
  const ecPrivateKey = seq(smallInteger(1), octetString(dMark), tlv(0xa1, bitString(qMark)));
  const template = seq(smallInteger(0), P256_ALG_ID, octetString(ecPrivateKey));
  return { template, dAt: template.indexOf(dMark), qAt: template.indexOf(qMark) };
})();

// The P-256 group order n, big-endian: a private scalar must be in [1, n - 1].
const P256_ORDER = Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex');
const SCALAR_BATCH = 64;

/**
 * A fresh P-256 key as raw encodings only (no KeyObject): what signWithNewKey needs. The private scalar is drawn
 * from Node's CSPRNG (OpenSSL's DRBG, as its own key generation uses) by rejection sampling into [1, n - 1]
 * (FIPS 186-5 A.2.2), and ECDH setPrivateKey computes Q = dG. That costs ~13 µs on Node 20, 22 and 24, where
 * ECDH generateKeys() measured 12 µs on 20/22 but 29 µs on 24 (it re-checks the key it just made).
 * Not thread-safe across awaits.
 */
export class RawP256KeyGenerator {
  private readonly ecdh: ECDH = createECDH('prime256v1');
  private readonly random = Buffer.allocUnsafeSlow(32 * SCALAR_BATCH);
  private used = SCALAR_BATCH;

  /** `fill` is the random source (tests inject edge cases); it must be a CSPRNG in production. */
  constructor(private readonly fill: (buf: Buffer) => void = randomFillSync) {}

  generate(): { spkiDer: Buffer; pkcs8Der: Buffer } {
    const d = this.nextScalar();
    this.ecdh.setPrivateKey(d);
    const q = this.ecdh.getPublicKey();
    const pkcs8Der = p256Pkcs8FromRaw(d, q);
    d.fill(0); // the only other copy of the scalar is inside pkcs8Der (and the ECDH object until the next key)
    return { spkiDer: p256SpkiFromPoint(q), pkcs8Der };
  }

  private nextScalar(): Buffer {
    for (;;) {
      if (this.used === SCALAR_BATCH) {
        this.fill(this.random);
        this.used = 0;
      }
      const d = this.random.subarray(32 * this.used, 32 * ++this.used);
      if (d.compare(P256_ORDER) < 0 && !isZero(d)) return d;
      d.fill(0); // rejected (probability ~2^-32): wipe it and draw the next
    }
  }
}

function isZero(b: Buffer): boolean {
  for (const x of b) if (x !== 0) return false;
  return true;
}

/** PKCS#8 PEM from DER, without a KeyObject round trip. */
export function pkcs8DerToPem(der: Buffer): string {
  return toPem(der, 'PRIVATE KEY');
}

/**
 * Imports a PKCS#8 DER private key (the CA key a signer worker receives) and zeroes `der` whether or not the import
 * succeeds. The key is read through a view of `der`, so no unwiped copy of it is left behind.
 */
export function importPkcs8DerAndWipe(der: Uint8Array): KeyObject {
  const view = Buffer.from(der.buffer, der.byteOffset, der.byteLength);
  try {
    return createPrivateKey({ key: view, format: 'der', type: 'pkcs8' });
  } finally {
    view.fill(0);
  }
}
