import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { CaError } from '../util/errors.js';
import { parseSpiffeId } from '../identity/spiffe-id.js';
import {
  parseAuthorityKeyId,
  parseBasicConstraints,
  parseCertificate,
  parseExtKeyUsage,
  parseGeneralNames,
  parseKeyUsage,
  parseSubjectKeyId,
  type ParsedCertificate,
} from './cert-parse.js';
import { OID, keyIdentifier } from './keys.js';
import { EKU, EXT, KU } from './profile.js';
import { issuedInProcessBy } from './provenance.js';

/**
 * Re-checks issued certificates against the X509-SVID profile (protocols.md §6). Every rule returns a sentence
 * naming what is wrong; checkSvidProfile throws the first as CaError INTERNAL (an issued certificate that breaks
 * the profile is our bug, not the caller's), describeSvidProblems lists them all for `meshca inspect`.
 *
 * Cost: a structural DER parse (~5–10 µs). The issuer's parsed subject, SKI and public key are cached per issuer
 * certificate. The issuer signature is verified with crypto.verify (~55 µs on P-256) unless provenance.ts shows
 * that this exact Buffer was signed in this process by a LeafSigner holding that issuer's (proven) key; pass
 * `verifySignature: 'always'` to force the check.
 */

const SIG_OIDS: Record<string, 'sha256' | 'sha384' | 'sha512' | null> = {
  [OID.ecdsaSha256]: 'sha256',
  [OID.ecdsaSha384]: 'sha384',
  [OID.ecdsaSha512]: 'sha512',
  [OID.sha256WithRsa]: 'sha256',
  [OID.sha384WithRsa]: 'sha384',
  [OID.sha512WithRsa]: 'sha512',
  [OID.ed25519]: null,
};

interface IssuerInfo {
  readonly der: Buffer;
  readonly subject: Buffer;
  readonly keyId: Buffer;
  readonly publicKey: KeyObject;
}

const issuerByBuffer = new WeakMap<Buffer, IssuerInfo>();
const issuerByHash = new Map<string, IssuerInfo>();
const ISSUER_CACHE_MAX = 32;

function issuerInfo(der: Buffer): IssuerInfo {
  const hit = issuerByBuffer.get(der);
  if (hit) return hit;
  const h = createHash('sha256').update(der).digest('base64');
  let info = issuerByHash.get(h);
  if (!info) {
    let p: ParsedCertificate;
    try {
      p = parseCertificate(der);
    } catch (e) {
      throw new CaError('INTERNAL', `issuer certificate is malformed: ${(e as Error).message}`);
    }
    const ski = p.extensions.get(EXT.subjectKeyIdentifier);
    info = {
      der,
      subject: p.subject,
      keyId: ski ? parseSubjectKeyId(ski.value) : keyIdentifier(p.spki),
      publicKey: createPublicKey({ key: p.spki, format: 'der', type: 'spki' }),
    };
    if (issuerByHash.size >= ISSUER_CACHE_MAX) issuerByHash.delete(issuerByHash.keys().next().value!);
    issuerByHash.set(h, info);
  }
  issuerByBuffer.set(der, info);
  return info;
}

export interface SvidCheckOptions {
  readonly trustDomain: string;
  readonly issuerCertDer?: Buffer;
  /** 'auto' (default) skips the signature check for certificates this process provably signed with the issuer's key. */
  readonly verifySignature?: 'auto' | 'always';
}

/** Throws CaError INTERNAL naming the first broken X509-SVID rule. */
export function checkSvidProfile(certDer: Buffer, opts: SvidCheckOptions): void {
  const problems = svidProblems(certDer, opts, true);
  if (problems.length > 0) throw new CaError('INTERNAL', `issued certificate breaks the X509-SVID profile: ${problems[0]}`);
}

/**
 * Every broken X509-SVID rule, as sentences; [] when the leaf conforms. Never throws. With no trust domain (meshca
 * inspect without --trust-domain, on a certificate whose SPIFFE ID gives none) every rule is still checked except
 * the comparison of the ID's trust domain.
 */
export function describeSvidProblems(certDer: Buffer, trustDomain: string | undefined, issuerCertDer?: Buffer): string[] {
  try {
    return svidProblems(certDer, { trustDomain, ...(issuerCertDer ? { issuerCertDer, verifySignature: 'always' as const } : {}) }, false);
  } catch (e) {
    return [`cannot check: ${(e as Error).message}`];
  }
}

function svidProblems(certDer: Buffer, opts: Omit<SvidCheckOptions, 'trustDomain'> & { readonly trustDomain: string | undefined }, firstOnly: boolean): string[] {
  const out: string[] = [];
  const fail = (msg: string): boolean => {
    out.push(msg);
    return firstOnly;
  };
  let c: ParsedCertificate;
  try {
    c = parseCertificate(certDer);
  } catch (e) {
    return [`certificate is not valid DER: ${(e as Error).message}`];
  }
  if (commonChecks(c, fail)) return out;

  // Exactly one URI SAN, a SPIFFE ID with a path in the trust domain; SAN critical when the subject is empty.
  const sanExt = c.extensions.get(EXT.subjectAltName);
  if (!sanExt) {
    if (fail('subjectAltName is missing (an SVID needs exactly one URI SAN)')) return out;
  } else {
    let uris: string[] = [];
    try {
      uris = parseGeneralNames(sanExt.value).uris;
    } catch (e) {
      if (fail(`subjectAltName is malformed: ${(e as Error).message}`)) return out;
    }
    if (uris.length !== 1) {
      if (fail(`must have exactly one URI SAN, found ${uris.length}${uris.length ? ` (${uris.join(', ')})` : ''}`)) return out;
    } else {
      try {
        const id = parseSpiffeId(uris[0]!);
        if (opts.trustDomain !== undefined && id.trustDomain !== opts.trustDomain) {
          if (fail(`SPIFFE ID ${id.uri} is not in trust domain "${opts.trustDomain}"`)) return out;
        } else if (id.path === '') {
          if (fail(`SPIFFE ID ${id.uri} has no path (a leaf SVID must name a workload)`)) return out;
        }
      } catch (e) {
        if (fail(`URI SAN is not a valid SPIFFE ID: ${(e as Error).message}`)) return out;
      }
    }
    if (c.subjectEmpty && !sanExt.critical) if (fail('subjectAltName must be critical when the subject is empty')) return out;
  }

  const bcExt = c.extensions.get(EXT.basicConstraints);
  if (bcExt) {
    try {
      if (parseBasicConstraints(bcExt.value).ca) if (fail('basicConstraints has CA:true (a leaf SVID must be CA:false)')) return out;
    } catch (e) {
      if (fail(`basicConstraints is malformed: ${(e as Error).message}`)) return out;
    }
  }

  const kuExt = c.extensions.get(EXT.keyUsage);
  if (!kuExt) {
    if (fail('keyUsage is missing (must be critical with digitalSignature)')) return out;
  } else {
    if (!kuExt.critical) if (fail('keyUsage must be critical')) return out;
    try {
      const ku = parseKeyUsage(kuExt.value);
      if (!ku.has(KU.digitalSignature)) if (fail('keyUsage lacks digitalSignature')) return out;
      if (ku.has(KU.keyCertSign)) if (fail('keyUsage has keyCertSign (not allowed on a leaf SVID)')) return out;
      if (ku.has(KU.cRLSign)) if (fail('keyUsage has cRLSign (not allowed on a leaf SVID)')) return out;
    } catch (e) {
      if (fail(`keyUsage is malformed: ${(e as Error).message}`)) return out;
    }
  }

  // meshca's profile (stricter than the SPIFFE SHOULD): EKU present with serverAuth and clientAuth. Backends are
  // asked for both usages, so a leaf without them is a misconfigured backend, caught here.
  const ekuExt = c.extensions.get(EXT.extKeyUsage);
  if (!ekuExt) {
    if (fail('extKeyUsage is missing (must contain serverAuth and clientAuth)')) return out;
  } else {
    try {
      const eku = parseExtKeyUsage(ekuExt.value);
      if (!eku.includes(EKU.serverAuth) || !eku.includes(EKU.clientAuth)) {
        if (fail('extKeyUsage must contain both serverAuth and clientAuth')) return out;
      }
    } catch (e) {
      if (fail(`extKeyUsage is malformed: ${(e as Error).message}`)) return out;
    }
  }

  // No SKI is not a violation: RFC 5280 makes it a SHOULD for end-entity certificates and Go-based signers (the
  // Kubernetes CSR signer among them) leave it out of leaves. meshca's own leaves always carry one.

  if (opts.issuerCertDer) issuerChecks(c, opts.issuerCertDer, opts.verifySignature ?? 'auto', fail);
  return out;
}

/** Rules shared by leaves and CAs. Returns true when the caller should stop (first-only mode hit a failure). */
function commonChecks(c: ParsedCertificate, fail: (m: string) => boolean): boolean {
  if (c.version !== 3) if (fail(`certificate version is v${c.version}, must be v3`)) return true;
  const s = c.serial;
  if (s.length === 0 || s[0]! & 0x80) {
    if (fail('serial number is negative')) return true;
  } else if (s.every((b) => b === 0)) {
    if (fail('serial number is zero')) return true;
  } else if (s.length > 20) {
    if (fail(`serial number is ${s.length} octets, more than 20`)) return true;
  }
  if (!(c.signatureAlg.oid in SIG_OIDS)) if (fail(`signature algorithm ${c.signatureAlg.oid} is not SHA-256 or stronger (or not supported)`)) return true;
  if (!c.signatureAlg.raw.equals(c.tbsSignatureAlg.raw)) if (fail('signature algorithm differs between TBSCertificate and Certificate')) return true;
  if (!(c.notBefore < c.notAfter)) if (fail('notBefore is not before notAfter')) return true;
  if (c.duplicateExtensions.length > 0) if (fail(`extension ${c.duplicateExtensions[0]} appears more than once`)) return true;
  return false;
}

function issuerChecks(c: ParsedCertificate, issuerDer: Buffer, mode: 'auto' | 'always', fail: (m: string) => boolean): void {
  const issuer = issuerInfo(issuerDer);
  if (!c.issuer.equals(issuer.subject)) if (fail('issuer name does not match the issuer certificate subject')) return;
  const akiExt = c.extensions.get(EXT.authorityKeyIdentifier);
  let aki: Buffer | undefined;
  try {
    aki = akiExt ? parseAuthorityKeyId(akiExt.value) : undefined;
  } catch (e) {
    if (fail(`authorityKeyIdentifier is malformed: ${(e as Error).message}`)) return;
  }
  if (!aki) {
    if (fail('authorityKeyIdentifier keyIdentifier is missing')) return;
  } else if (!aki.equals(issuer.keyId)) {
    if (fail('authorityKeyIdentifier does not match the issuer subjectKeyIdentifier')) return;
  }
  const signedHere = mode === 'auto' && issuedInProcessBy(c.der);
  if (signedHere && (signedHere === issuerDer || signedHere.equals(issuerDer))) return;
  const hash = SIG_OIDS[c.signatureAlg.oid];
  let ok = false;
  try {
    ok = hash !== undefined && cryptoVerify(hash, c.tbs, issuer.publicKey, c.signature);
  } catch {
    ok = false;
  }
  if (!ok) fail("signature does not verify with the issuer's key");
}

/** Throws CaError INTERNAL naming the first broken CA-certificate rule. */
export function checkCaProfile(certDer: Buffer, opts: { trustDomain: string }): void {
  const p = describeCaProblems(certDer, opts.trustDomain);
  if (p.length > 0) throw new CaError('INTERNAL', `CA certificate breaks the SPIFFE CA profile: ${p[0]}`);
}

/** Every broken CA rule (protocols.md §6 CA certificate), as sentences. Never throws. */
/** Every broken SPIFFE CA rule; with no trust domain, all but the comparison of a URI SAN's trust domain. */
export function describeCaProblems(certDer: Buffer, trustDomain: string | undefined): string[] {
  const out: string[] = [];
  const fail = (m: string): boolean => {
    out.push(m);
    return false;
  };
  let c: ParsedCertificate;
  try {
    c = parseCertificate(certDer);
  } catch (e) {
    return [`certificate is not valid DER: ${(e as Error).message}`];
  }
  commonChecks(c, fail);
  try {
    const bc = c.extensions.get(EXT.basicConstraints);
    if (!bc) fail('basicConstraints is missing (a CA needs CA:true)');
    else {
      if (!bc.critical) fail('basicConstraints must be critical');
      if (!parseBasicConstraints(bc.value).ca) fail('basicConstraints has CA:false');
    }
    const ku = c.extensions.get(EXT.keyUsage);
    if (!ku) fail('keyUsage is missing (a CA needs critical keyCertSign)');
    else {
      if (!ku.critical) fail('keyUsage must be critical');
      if (!parseKeyUsage(ku.value).has(KU.keyCertSign)) fail('keyUsage lacks keyCertSign');
    }
    if (!c.extensions.get(EXT.subjectKeyIdentifier)) fail('subjectKeyIdentifier is missing');
    const san = c.extensions.get(EXT.subjectAltName);
    if (san) {
      const uris = parseGeneralNames(san.value).uris;
      if (uris.length > 1) fail(`a CA must have at most one URI SAN, found ${uris.length}`);
      for (const u of uris) {
        try {
          const id = parseSpiffeId(u);
          if (id.path !== '') fail(`CA SPIFFE ID ${u} must have no path`);
          if (trustDomain !== undefined && id.trustDomain !== trustDomain) fail(`CA SPIFFE ID ${u} is not in trust domain "${trustDomain}"`);
        } catch (e) {
          fail(`CA URI SAN is not a valid SPIFFE ID: ${(e as Error).message}`);
        }
      }
    }
  } catch (e) {
    fail(`extension is malformed: ${(e as Error).message}`);
  }
  return out;
}
