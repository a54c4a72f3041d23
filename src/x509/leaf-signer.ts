import { createPublicKey, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import { CaError, invalidArgument } from '../util/errors.js';
import { headerSize, oidToString, readNode, TAG, timeSize, writeHeader, writeTime } from './der.js';
import { parseCertificate, parseSubjectKeyId } from './cert-parse.js';
import {
  OID,
  RawP256KeyGenerator,
  generateKeyPair,
  isP256Spki,
  keyIdentifier,
  pkcs8DerToPem,
  privateKeyToPkcs8Pem,
  signatureAlgorithmFor,
  spkiDerOf,
  type SignatureAlgorithm,
} from './keys.js';
import { EKU, EMPTY_NAME, EXT, KU, SerialGenerator, authorityKeyIdExt, basicConstraintsExt, extKeyUsageExt, keyUsageExt, subjectAltNameExt, subjectKeyIdExt } from './profile.js';
import { noteIssuedBy } from './provenance.js';
import type { KeyType, LeafTemplate, SigningCa } from './types.js';

export type LeafFields = Omit<LeafTemplate, 'publicKey'>;
export type NewKeyLeafFields = LeafFields & { readonly keyType: KeyType };
export interface LeafWithKey {
  readonly certDer: Buffer;
  /** PKCS#8 PEM of the generated key. Secret: never log it. */
  readonly privateKeyPkcs8Pem: string;
}

const VERSION_3 = Buffer.from([0xa0, 0x03, 0x02, 0x01, 0x02]);
/** subjectKeyIdentifier extension up to its 20-byte key identifier (SEQUENCE, OID, OCTET STRING { OCTET STRING }). */
const SKI_EXT_PREFIX = subjectKeyIdExt(Buffer.alloc(20)).subarray(0, -20);
const SAN_MEMO_MAX = 1024;
const SPKI_ALG_EC = '1.2.840.10045.2.1';

/**
 * Issues X509-SVID leaves under one signing CA, synchronously, from a DER template (protocols.md §6 leaf profile):
 * v3, random 20-octet serial, empty subject, critical SAN with exactly one URI (the SPIFFE ID) plus optional DNS
 * names and IPs, critical basicConstraints CA:false, critical keyUsage digitalSignature (+keyEncipherment for RSA
 * keys), EKU serverAuth+clientAuth, SKI (RFC 5280 method 1), AKI = the CA's SKI.
 *
 * Everything that depends only on the CA is encoded once in the constructor. The constructor also proves that
 * `ca.key` is the key of `ca.certDer` (throws FAILED_PRECONDITION otherwise), which is what lets validate.ts trust
 * signatures recorded in provenance.ts.
 *
 * Contract: the template is already validated and clamped by the authority (SPIFFE ID, TTL); this class only
 * refuses inputs that would produce a malformed certificate (validity outside the CA's, empty/invalid names,
 * unsupported key algorithms).
 */
export class LeafSigner {
  readonly ca: SigningCa;
  private readonly alg: SignatureAlgorithm;
  private readonly head: Buffer; // signature AlgorithmIdentifier + issuer Name (between serial and validity)
  private readonly fixedExts: Buffer; // basicConstraints + keyUsage(digitalSignature) + EKU
  private readonly fixedExtsRsa: Buffer; // same with keyEncipherment
  private readonly akiExt: Buffer;
  private readonly serials = new SerialGenerator();
  private readonly notBeforeMs: number;
  private readonly notAfterMs: number;
  private rawKeys: RawP256KeyGenerator | undefined;
  private readonly sans = new Map<string, { dns: readonly string[]; ips: readonly string[]; ext: Buffer }>();

  constructor(ca: SigningCa) {
    this.ca = ca;
    let parsed;
    try {
      parsed = parseCertificate(ca.certDer);
    } catch (e) {
      throw new CaError('FAILED_PRECONDITION', `signing CA certificate is malformed: ${(e as Error).message}`);
    }
    this.alg = signatureAlgorithmFor(ca.key);
    const probe = Buffer.from('meshca signing CA key check');
    const caPub = createPublicKey({ key: parsed.spki, format: 'der', type: 'spki' });
    if (!cryptoVerify(this.alg.hash, probe, caPub, cryptoSign(this.alg.hash, probe, ca.key))) {
      throw new CaError('FAILED_PRECONDITION', 'signing CA private key does not match its certificate');
    }
    const skiExt = parsed.extensions.get(EXT.subjectKeyIdentifier);
    const caKeyId = skiExt ? parseSubjectKeyId(skiExt.value) : keyIdentifier(parsed.spki);
    this.head = Buffer.concat([this.alg.algorithmIdentifier, parsed.subject]);
    this.akiExt = authorityKeyIdExt(caKeyId);
    const eku = extKeyUsageExt([EKU.serverAuth, EKU.clientAuth]);
    this.fixedExts = Buffer.concat([basicConstraintsExt(false), keyUsageExt([KU.digitalSignature]), eku]);
    this.fixedExtsRsa = Buffer.concat([basicConstraintsExt(false), keyUsageExt([KU.digitalSignature, KU.keyEncipherment]), eku]);
    this.notBeforeMs = Math.max(ca.notBefore.getTime(), parsed.notBefore.getTime());
    this.notAfterMs = Math.min(ca.notAfter.getTime(), parsed.notAfter.getTime());
  }

  /** Signs a leaf for `t.publicKey`; returns the certificate DER. */
  sign(t: LeafTemplate): Buffer {
    if (t.publicKey.type !== 'public') throw invalidArgument('leaf template needs a public key');
    return this.signSpki(spkiDerOf(t.publicKey), t);
  }

  /** Same as sign() for a SubjectPublicKeyInfo DER the caller already holds (from a CSR, or a raw key). */
  signSpki(spkiDer: Buffer, t: LeafFields): Buffer {
    const nb = t.notBefore.getTime();
    const na = t.notAfter.getTime();
    if (!(nb < na)) throw invalidArgument('leaf notBefore must be before notAfter');
    // Whole seconds are encoded; compare at that resolution so a CA valid from 12:00:00.500 can issue from 12:00:00.
    if (Math.floor(nb / 1000) < Math.floor(this.notBeforeMs / 1000) || na > this.notAfterMs) {
      throw new CaError('INTERNAL', 'leaf validity is outside the signing CA validity (the caller must clamp it)');
    }
    const fixed = isRsaSpki(spkiDer) ? this.fixedExtsRsa : this.fixedExts;
    const san = this.sanExt(t);
    const keyId = keyIdentifier(spkiDer);
    // One pass, one allocation for the TBSCertificate and one for the Certificate (this is the issuance hot path;
    // nesting seq()/tlv() calls copied every byte once per level):
    //   TBSCertificate ::= SEQUENCE { [0] v3, serial, signature alg, issuer, validity, subject, spki, [3] extensions }
    const nbSize = timeSize(t.notBefore);
    const validityLen = nbSize + timeSize(t.notAfter);
    const extsLen = fixed.length + SKI_EXT_PREFIX.length + keyId.length + this.akiExt.length + san.length;
    const a3Len = headerSize(extsLen) + extsLen;
    const tbsLen =
      VERSION_3.length + SerialGenerator.SIZE + this.head.length + headerSize(validityLen) + validityLen + EMPTY_NAME.length + spkiDer.length + headerSize(a3Len) + a3Len;
    const tbs = Buffer.allocUnsafe(headerSize(tbsLen) + tbsLen);
    let o = writeHeader(tbs, 0, TAG.SEQUENCE, tbsLen);
    o += VERSION_3.copy(tbs, o);
    o = this.serials.writeNext(tbs, o);
    o += this.head.copy(tbs, o);
    o = writeHeader(tbs, o, TAG.SEQUENCE, validityLen);
    o = writeTime(tbs, o, t.notBefore);
    o = writeTime(tbs, o, t.notAfter);
    o += EMPTY_NAME.copy(tbs, o);
    o += spkiDer.copy(tbs, o);
    o = writeHeader(tbs, o, 0xa3, a3Len);
    o = writeHeader(tbs, o, TAG.SEQUENCE, extsLen);
    o += fixed.copy(tbs, o);
    o += SKI_EXT_PREFIX.copy(tbs, o);
    o += keyId.copy(tbs, o);
    o += this.akiExt.copy(tbs, o);
    o += san.copy(tbs, o);
    if (o !== tbs.length) throw new CaError('INTERNAL', `leaf TBSCertificate encoding is ${o} bytes, expected ${tbs.length}`);
    const sig = cryptoSign(this.alg.hash, tbs, this.ca.key);
    //   Certificate ::= SEQUENCE { tbs, signatureAlgorithm, signatureValue BIT STRING (no unused bits) }
    const alg = this.alg.algorithmIdentifier;
    const certLen = tbs.length + alg.length + headerSize(sig.length + 1) + 1 + sig.length;
    // Outside Node's shared buffer pool: a certificate lives for hours and one live slice pins a whole 8 KB slab.
    const der = Buffer.allocUnsafeSlow(headerSize(certLen) + certLen);
    o = writeHeader(der, 0, TAG.SEQUENCE, certLen);
    o += tbs.copy(der, o);
    o += alg.copy(der, o);
    o = writeHeader(der, o, TAG.BIT_STRING, sig.length + 1);
    der[o++] = 0;
    o += sig.copy(der, o);
    noteIssuedBy(der, this.ca.certDer);
    return der;
  }

  /**
   * The SAN extension for these names, memoised per SPIFFE ID: the same identities are re-issued all day with the
   * same DNS names and IPs (compared element by element, so names can never hit another request's entry).
   */
  private sanExt(t: LeafFields): Buffer {
    const ips = t.ipAddresses ?? [];
    const hit = this.sans.get(t.spiffeId);
    if (hit && sameStrings(hit.dns, t.dnsNames) && sameStrings(hit.ips, ips)) return hit.ext;
    const ext = subjectAltNameExt(true, [t.spiffeId], t.dnsNames, ips);
    if (!hit && this.sans.size >= SAN_MEMO_MAX) this.sans.delete(this.sans.keys().next().value!);
    this.sans.set(t.spiffeId, { dns: [...t.dnsNames], ips: [...ips], ext });
    return ext;
  }

  /**
   * Generates a key of `t.keyType` and signs a leaf for it. P-256 keys are generated as raw scalars and encoded
   * by hand (no KeyObject, no OpenSSL encoders), which is the fast path for "meshca generates the key".
   */
  signWithNewKey(t: NewKeyLeafFields): LeafWithKey {
    if (t.keyType === 'ec-p256') {
      this.rawKeys ??= new RawP256KeyGenerator();
      const k = this.rawKeys.generate();
      return { certDer: this.signSpki(k.spkiDer, t), privateKeyPkcs8Pem: pkcs8DerToPem(k.pkcs8Der) };
    }
    const kp = generateKeyPair(t.keyType);
    return { certDer: this.sign({ ...t, publicKey: kp.publicKey }), privateKeyPkcs8Pem: privateKeyToPkcs8Pem(kp.privateKey) };
  }
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** True for rsaEncryption keys; throws INVALID_ARGUMENT for algorithms meshca does not certify. */
function isRsaSpki(spkiDer: Buffer): boolean {
  if (isP256Spki(spkiDer)) return false; // the common case, without parsing
  let algOid: string;
  try {
    const top = readNode(spkiDer, 0);
    const algSeq = readNode(top.value, 0);
    const o = readNode(algSeq.value, 0);
    if (top.tag !== TAG.SEQUENCE || algSeq.tag !== TAG.SEQUENCE || o.tag !== TAG.OID) throw new Error('bad');
    algOid = oidToString(o.value);
  } catch {
    throw invalidArgument('leaf public key is not a valid SubjectPublicKeyInfo');
  }
  if (algOid === OID.rsaEncryption) return true;
  if (algOid === SPKI_ALG_EC || algOid === OID.ed25519) return false;
  throw invalidArgument(`leaf public key algorithm ${algOid} is not supported (use EC P-256/P-384, RSA or Ed25519)`);
}
