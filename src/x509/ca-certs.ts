import { sign as cryptoSign, type KeyObject } from 'node:crypto';
import { CaError, failedPrecondition, invalidArgument } from '../util/errors.js';
import { validateTrustDomain } from '../identity/spiffe-id.js';
import { bitString, encodeTime, oid, seq, set, tlv } from './der.js';
import { parseCertificate, parseSubjectKeyId } from './cert-parse.js';
import { generateKeyPair, keyIdentifier, keyTypeOf, describeKey, signatureAlgorithmFor, spkiDerOf } from './keys.js';
import { toPem } from './pem.js';
import {
  ATTR,
  EXT,
  KU,
  SerialGenerator,
  authorityKeyIdExt,
  basicConstraintsExt,
  encodeName,
  keyUsageExt,
  subjectAltNameExt,
  subjectKeyIdExt,
} from './profile.js';
import type { KeyType } from './types.js';

/**
 * CA certificates and the CA CSR (protocols.md §6 CA profile): critical basicConstraints CA:true, critical keyUsage
 * keyCertSign+cRLSign, SKI, AKI (= issuer SKI) unless self-signed, URI SAN spiffe://<td> (no path), random 20-octet
 * serial, SHA-256+ signature, subject O=meshca CN=<commonName>, notBefore backdated 30 s against clock skew.
 * Built with the same DER helpers as the leaf signer; async for API stability (a backend may sign remotely).
 */

export const CA_BACKDATE_SECONDS = 30;
const serials = new SerialGenerator();
const VERSION_3 = Buffer.from([0xa0, 0x03, 0x02, 0x01, 0x02]);

function caExtensions(spki: Buffer, trustDomain: string, akiKeyId: Buffer | undefined, pathLen: number | undefined): Buffer[] {
  return [
    basicConstraintsExt(true, pathLen),
    keyUsageExt([KU.keyCertSign, KU.cRLSign]),
    subjectKeyIdExt(keyIdentifier(spki)),
    ...(akiKeyId ? [authorityKeyIdExt(akiKeyId)] : []),
    subjectAltNameExt(false, [`spiffe://${trustDomain}`]),
  ];
}

function checkTtl(ttlSeconds: number): void {
  if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0) throw invalidArgument(`CA ttlSeconds must be a positive number, got ${ttlSeconds}`);
}

function checkKey(key: KeyObject, what: string): void {
  if (!keyTypeOf(key) && !(key.asymmetricKeyType === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048)) {
    throw invalidArgument(`${what} key ${describeKey(key)} is not supported (use EC P-256/P-384, RSA >= 2048 or Ed25519)`);
  }
}

function buildCert(opts: {
  issuerName: Buffer;
  subjectName: Buffer;
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
  extensions: Buffer[];
  signingKey: KeyObject;
}): Buffer {
  const alg = signatureAlgorithmFor(opts.signingKey);
  const tbs = seq(
    VERSION_3,
    serials.next(),
    alg.algorithmIdentifier,
    opts.issuerName,
    seq(encodeTime(opts.notBefore), encodeTime(opts.notAfter)),
    opts.subjectName,
    opts.spki,
    tlv(0xa3, seq(...opts.extensions)),
  );
  return seq(tbs, alg.algorithmIdentifier, bitString(cryptoSign(alg.hash, tbs, opts.signingKey)));
}

/** A self-signed root for `trustDomain`. Generates a key of `keyType` unless `key` is given. */
export async function createSelfSignedRoot(opts: {
  trustDomain: string;
  keyType: KeyType;
  ttlSeconds: number;
  now: Date;
  commonName?: string;
  key?: { privateKey: KeyObject; publicKey: KeyObject };
}): Promise<{ certDer: Buffer; privateKey: KeyObject }> {
  validateTrustDomain(opts.trustDomain);
  checkTtl(opts.ttlSeconds);
  const key = opts.key ?? generateKeyPair(opts.keyType);
  checkKey(key.privateKey, 'root');
  const spki = spkiDerOf(key.publicKey);
  const name = encodeName({ organization: 'meshca', commonName: opts.commonName ?? `meshca root ${opts.trustDomain}` });
  const now = opts.now.getTime();
  const certDer = buildCert({
    issuerName: name,
    subjectName: name,
    notBefore: new Date(now - CA_BACKDATE_SECONDS * 1000),
    notAfter: new Date(now + opts.ttlSeconds * 1000),
    spki,
    extensions: caExtensions(spki, opts.trustDomain, undefined, undefined),
    signingKey: key.privateKey,
  });
  return { certDer, privateKey: key.privateKey };
}

/** An intermediate CA certificate for `publicKey`, signed by `issuer`; notAfter is clamped to the issuer's. */
export async function signCaCertificate(opts: {
  issuer: { certDer: Buffer; key: KeyObject };
  publicKey: KeyObject;
  trustDomain: string;
  ttlSeconds: number;
  now: Date;
  commonName?: string;
  pathLen?: number;
}): Promise<Buffer> {
  validateTrustDomain(opts.trustDomain);
  checkTtl(opts.ttlSeconds);
  checkKey(opts.publicKey, 'intermediate CA');
  if (opts.pathLen !== undefined && (!Number.isInteger(opts.pathLen) || opts.pathLen < 0)) {
    throw invalidArgument(`pathLen must be a non-negative integer, got ${opts.pathLen}`);
  }
  let issuer;
  try {
    issuer = parseCertificate(opts.issuer.certDer);
  } catch (e) {
    throw failedPrecondition(`issuer CA certificate is malformed: ${(e as Error).message}`);
  }
  const ski = issuer.extensions.get(EXT.subjectKeyIdentifier);
  const issuerKeyId = ski ? parseSubjectKeyId(ski.value) : keyIdentifier(issuer.spki);
  const now = opts.now.getTime();
  const notBefore = Math.max(now - CA_BACKDATE_SECONDS * 1000, issuer.notBefore.getTime());
  const notAfter = Math.min(now + opts.ttlSeconds * 1000, issuer.notAfter.getTime());
  if (notAfter <= now) throw new CaError('FAILED_PRECONDITION', `issuer CA expired at ${issuer.notAfter.toISOString()}`);
  const spki = spkiDerOf(opts.publicKey);
  return buildCert({
    issuerName: issuer.subject,
    subjectName: encodeName({ organization: 'meshca', commonName: opts.commonName ?? `meshca CA ${opts.trustDomain}` }),
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
    spki,
    extensions: caExtensions(spki, opts.trustDomain, issuerKeyId, opts.pathLen),
    signingKey: opts.issuer.key,
  });
}

/**
 * PKCS#10 request for meshca's signing CA, for backends that mint intermediates from a CSR (Vault, cert-manager,
 * Kubernetes). Requests CA:true, keyCertSign+cRLSign and the URI SAN spiffe://<td> via extensionRequest.
 */
export async function createCaCsr(opts: {
  key: { privateKey: KeyObject; publicKey: KeyObject };
  trustDomain: string;
  commonName?: string;
}): Promise<{ der: Buffer; pem: string }> {
  validateTrustDomain(opts.trustDomain);
  checkKey(opts.key.privateKey, 'signing CA');
  const spki = spkiDerOf(opts.key.publicKey);
  const exts = seq(
    basicConstraintsExt(true),
    keyUsageExt([KU.keyCertSign, KU.cRLSign]),
    subjectAltNameExt(false, [`spiffe://${opts.trustDomain}`]),
  );
  const cri = seq(
    Buffer.from([0x02, 0x01, 0x00]),
    encodeName({ organization: 'meshca', commonName: opts.commonName ?? `meshca CA ${opts.trustDomain}` }),
    spki,
    tlv(0xa0, seq(oid(ATTR.extensionRequest), set(exts))),
  );
  const alg = signatureAlgorithmFor(opts.key.privateKey);
  const der = seq(cri, alg.algorithmIdentifier, bitString(cryptoSign(alg.hash, cri, opts.key.privateKey)));
  return { der, pem: toPem(der, 'CERTIFICATE REQUEST') };
}
