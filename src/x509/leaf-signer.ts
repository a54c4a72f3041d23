import { createPublicKey, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import { CaError, invalidArgument } from '../util/errors.js';
import { bitString, encodeTime, oidToString, readNode, seq, tlv, TAG } from './der.js';
import { parseCertificate, parseSubjectKeyId } from './cert-parse.js';
import {
  OID,
  RawP256KeyGenerator,
  generateKeyPair,
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
    const rsa = isRsaSpki(spkiDer);
    const tbs = seq(
      VERSION_3,
      this.serials.next(),
      this.head,
      seq(encodeTime(t.notBefore), encodeTime(t.notAfter)),
      EMPTY_NAME,
      spkiDer,
      tlv(
        0xa3,
        seq(
          rsa ? this.fixedExtsRsa : this.fixedExts,
          subjectKeyIdExt(keyIdentifier(spkiDer)),
          this.akiExt,
          subjectAltNameExt(true, [t.spiffeId], t.dnsNames, t.ipAddresses ?? []),
        ),
      ),
    );
    const sig = cryptoSign(this.alg.hash, tbs, this.ca.key);
    const der = seq(tbs, this.alg.algorithmIdentifier, bitString(sig));
    noteIssuedBy(der, this.ca.certDer);
    return der;
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

/** True for rsaEncryption keys; throws INVALID_ARGUMENT for algorithms meshca does not certify. */
function isRsaSpki(spkiDer: Buffer): boolean {
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
