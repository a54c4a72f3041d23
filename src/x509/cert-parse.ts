import { X509Certificate } from 'node:crypto';
import { DerError, TAG, childNodes, children, decodeTime, expectNode, oidOf, oidToString, onlyChild, readNode, readWhole, type DerNode } from './der.js';
import { EXT, ipFromBytes } from './profile.js';

/**
 * A cheap structural parse of an X.509 certificate: slices into the input plus the few decoded values the SVID
 * checks need. No signature check and no semantic validation here (see validate.ts). Throws DerError.
 */
export interface ParsedCertificate {
  readonly der: Buffer;
  readonly tbs: Buffer;
  readonly version: number;
  /** INTEGER value bytes as encoded (two's complement). */
  readonly serial: Buffer;
  /** OID of the TBS signature AlgorithmIdentifier, and its full DER. */
  readonly tbsSignatureAlg: { oid: string; raw: Buffer };
  readonly signatureAlg: { oid: string; raw: Buffer };
  readonly signature: Buffer;
  readonly issuer: Buffer;
  readonly subject: Buffer;
  readonly subjectEmpty: boolean;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spki: Buffer;
  readonly extensions: ReadonlyMap<string, ParsedExtension>;
  readonly duplicateExtensions: readonly string[];
}

export interface ParsedExtension {
  readonly oid: string;
  readonly critical: boolean;
  readonly value: Buffer;
}

/**
 * A distinguished name from Node's X509Certificate (subject/issuer: one "K=v" per line) on one line, '' when empty.
 * Node gives `undefined`, not '', for an empty subject (meshca's own SVIDs have one), so never call string methods on
 * those properties directly.
 */
export function dnLine(name: string | undefined): string {
  return name ? name.split('\n').filter(Boolean).join(', ') : '';
}

/** True when `c` issued itself: names and key identifiers match (X509_check_issued, as OpenSSL decides what is a
 * self-signed anchor) and its signature verifies with its own key. */
export function isSelfSigned(c: X509Certificate): boolean {
  return c.checkIssued(c) && c.verify(c.publicKey);
}

export function parseCertificate(der: Buffer): ParsedCertificate {
  // Walks nodes in place (childNodes/onlyChild/oidOf) and makes views only for what it returns: this runs on
  // every issued certificate.
  const top = readWhole(der, TAG.SEQUENCE, 'Certificate');
  const [tbsN, algN, sigN, ...extra] = childNodes(top);
  if (!tbsN || !algN || !sigN || extra.length > 0) throw new DerError('Certificate must have 3 elements');
  if (tbsN.tag !== TAG.SEQUENCE || algN.tag !== TAG.SEQUENCE || sigN.tag !== TAG.BIT_STRING) throw new DerError('Certificate elements have wrong types');
  if (sigN.end === sigN.valueStart || sigN.buf[sigN.valueStart] !== 0) throw new DerError('signature BIT STRING has unused bits');
  const t = childNodes(tbsN);
  let i = 0;
  let version = 1;
  if (t[0]?.tag === 0xa0) {
    const v = onlyChild(t[0], TAG.INTEGER, 'version');
    version = v.end - v.valueStart === 1 ? v.buf[v.valueStart]! + 1 : -1;
    i = 1;
  }
  const need = (tag: number, what: string): DerNode => {
    const n = t[i++];
    if (!n || n.tag !== tag) throw new DerError(`TBSCertificate ${what} missing or of wrong type`);
    return n;
  };
  const serialN = need(TAG.INTEGER, 'serialNumber');
  const tbsAlgN = need(TAG.SEQUENCE, 'signature');
  const issuerN = need(TAG.SEQUENCE, 'issuer');
  const validityN = need(TAG.SEQUENCE, 'validity');
  const subjectN = need(TAG.SEQUENCE, 'subject');
  const spkiN = need(TAG.SEQUENCE, 'subjectPublicKeyInfo');
  const extensions = new Map<string, ParsedExtension>();
  const duplicates: string[] = [];
  for (; i < t.length; i++) {
    const n = t[i]!;
    if (n.tag === 0xa1 || n.tag === 0xa2 || n.tag === 0x81 || n.tag === 0x82) continue; // unique IDs
    if (n.tag !== 0xa3) throw new DerError(`unexpected TBSCertificate element tag 0x${n.tag.toString(16)}`);
    const list = onlyChild(n, TAG.SEQUENCE, 'extensions');
    for (const e of childNodes(list)) {
      if (e.tag !== TAG.SEQUENCE) throw new DerError('Extension is not a SEQUENCE');
      const f = childNodes(e);
      const idN = f[0];
      if (!idN || idN.tag !== TAG.OID) throw new DerError('Extension without extnID');
      let critical = false;
      let k = 1;
      const b = f[1];
      if (b?.tag === TAG.BOOLEAN) {
        critical = b.end === b.valueStart || b.buf[b.valueStart] !== 0;
        k = 2;
      }
      const valN = f[k];
      if (!valN || valN.tag !== TAG.OCTET_STRING || f.length !== k + 1) throw new DerError('Extension without extnValue');
      const id = oidOf(idN);
      if (extensions.has(id)) duplicates.push(id);
      extensions.set(id, { oid: id, critical, value: valN.value });
    }
  }
  const [nb, na] = childNodes(validityN);
  if (!nb || !na) throw new DerError('Validity must have notBefore and notAfter');
  const tbsAlg = childNodes(tbsAlgN)[0];
  const outerAlg = childNodes(algN)[0];
  if (!tbsAlg || !outerAlg) throw new DerError('truncated DER');
  return {
    der,
    tbs: tbsN.raw,
    version,
    serial: serialN.value,
    tbsSignatureAlg: { oid: oidOf(tbsAlg), raw: tbsAlgN.raw },
    signatureAlg: { oid: oidOf(outerAlg), raw: algN.raw },
    signature: sigN.buf.subarray(sigN.valueStart + 1, sigN.end),
    issuer: issuerN.raw,
    subject: subjectN.raw,
    subjectEmpty: subjectN.end === subjectN.valueStart,
    notBefore: decodeTime(nb),
    notAfter: decodeTime(na),
    spki: spkiN.raw,
    extensions,
    duplicateExtensions: duplicates,
  };
}

export interface SubjectAltNames {
  readonly uris: string[];
  readonly dnsNames: string[];
  readonly ipAddresses: string[];
  readonly emails: string[];
  readonly other: number;
}

/** Decodes a GeneralNames SEQUENCE (the SAN extension value). */
export function parseGeneralNames(value: Buffer): SubjectAltNames {
  const top = readWhole(value, TAG.SEQUENCE, 'GeneralNames');
  const out: SubjectAltNames = { uris: [], dnsNames: [], ipAddresses: [], emails: [], other: 0 };
  let other = 0;
  for (const n of children(top.value)) {
    switch (n.tag) {
      case 0x86:
        out.uris.push(n.value.toString('latin1'));
        break;
      case 0x82:
        out.dnsNames.push(n.value.toString('latin1'));
        break;
      case 0x87:
        out.ipAddresses.push(ipFromBytes(n.value));
        break;
      case 0x81:
        out.emails.push(n.value.toString('latin1'));
        break;
      default:
        other++;
    }
  }
  return { ...out, other };
}

export function sanOf(c: ParsedCertificate): SubjectAltNames | undefined {
  const e = c.extensions.get(EXT.subjectAltName);
  return e ? parseGeneralNames(e.value) : undefined;
}

export interface BasicConstraints {
  readonly ca: boolean;
  readonly pathLen?: number;
}

export function parseBasicConstraints(value: Buffer): BasicConstraints {
  const top = readWhole(value, TAG.SEQUENCE, 'basicConstraints');
  const f = children(top.value);
  let ca = false;
  let k = 0;
  if (f[0]?.tag === TAG.BOOLEAN) {
    ca = f[0].value[0] !== 0;
    k = 1;
  }
  const pl = f[k];
  if (pl && pl.tag === TAG.INTEGER) return { ca, pathLen: pl.value.readUIntBE(0, Math.min(pl.value.length, 6)) };
  return { ca };
}

/** Set bit numbers of a keyUsage extension value. */
export function parseKeyUsage(value: Buffer): Set<number> {
  const n = readWhole(value, TAG.BIT_STRING, 'keyUsage');
  const bits = new Set<number>();
  for (let i = 1; i < n.value.length; i++) {
    for (let b = 0; b < 8; b++) if (n.value[i]! & (0x80 >> b)) bits.add((i - 1) * 8 + b);
  }
  return bits;
}

export function parseExtKeyUsage(value: Buffer): string[] {
  const n = readWhole(value, TAG.SEQUENCE, 'extKeyUsage');
  return children(n.value).map((c) => oidToString(c.value));
}

/** keyIdentifier of an authorityKeyIdentifier value, if present. */
export function parseAuthorityKeyId(value: Buffer): Buffer | undefined {
  const n = readWhole(value, TAG.SEQUENCE, 'authorityKeyIdentifier');
  const f = children(n.value).find((c) => c.tag === 0x80);
  return f?.value;
}

export function parseSubjectKeyId(value: Buffer): Buffer {
  return readWhole(value, TAG.OCTET_STRING, 'subjectKeyIdentifier').value;
}

/** First CN of a Name, if any (UTF8String, PrintableString or IA5String). */
export function commonNameOf(name: Buffer): string | undefined {
  const top = expectNode(name, 0, TAG.SEQUENCE, 'Name');
  for (const rdn of children(top.value)) {
    for (const atv of children(rdn.value)) {
      const [type, val] = children(atv.value);
      if (type && val && oidToString(type.value) === '2.5.4.3') return val.value.toString('utf8');
    }
  }
  return undefined;
}

/**
 * Upper-case hex serial of a certificate as Node's X509Certificate.serialNumber prints it, from a DER parse of the
 * serial only (~1 µs instead of ~100 µs for constructing an X509Certificate through OpenSSL).
 */
export function certSerialHex(der: Buffer): string {
  const top = readNode(der, 0);
  const tbs = readNode(top.value, 0);
  let n = readNode(tbs.value, 0);
  if (n.tag === 0xa0) n = readNode(tbs.value, n.end);
  if (n.tag !== TAG.INTEGER) throw new DerError('certificate serialNumber missing');
  return n.value.toString('hex').toUpperCase();
}

export { EXT };

/** notAfter of a DER certificate, in ms since the epoch. */
export function certNotAfterMs(der: Buffer): number {
  return new Date(new X509Certificate(der).validTo).getTime();
}
