import { isIPv4, isIPv6 } from 'node:net';
import { randomFillSync } from 'node:crypto';
import { invalidArgument } from '../util/errors.js';
import { DER_TRUE, TAG, bitString, octetString, oid, seq, set, smallInteger, tlv } from './der.js';

/**
 * DER building blocks of the meshca certificate profiles (protocols.md §6): extensions, names, serials. Shared by
 * the fast leaf signer (which precomputes most of them per CA) and the CA certificate builder.
 */

const DNS_NAME = /^(\*\.)?([a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?)(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?)*$/;

/** A DNS name meshca puts in a dNSName SAN: labels of letters, digits, "-" and "_", optionally "*." first. */
export function isDnsName(d: string): boolean {
  return d.length <= 253 && DNS_NAME.test(d);
}

export const EXT = {
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  nameConstraints: '2.5.29.30',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
} as const;

export const EKU = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2' } as const;
export const ATTR = { commonName: '2.5.4.3', organization: '2.5.4.10', extensionRequest: '1.2.840.113549.1.9.14' } as const;

/** keyUsage bit numbers (RFC 5280 4.2.1.3). */
export const KU = { digitalSignature: 0, nonRepudiation: 1, keyEncipherment: 2, dataEncipherment: 3, keyAgreement: 4, keyCertSign: 5, cRLSign: 6 } as const;

export function extension(extnId: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(extnId), DER_TRUE, octetString(value)) : seq(oid(extnId), octetString(value));
}

export function basicConstraintsExt(ca: boolean, pathLen?: number): Buffer {
  const inner = ca ? seq(DER_TRUE, ...(pathLen !== undefined ? [smallInteger(pathLen)] : [])) : seq();
  return extension(EXT.basicConstraints, true, inner);
}

/** keyUsage as a DER BIT STRING with the minimal number of bytes and the unused-bit count DER requires. */
export function keyUsageExt(bits: readonly number[]): Buffer {
  const max = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(max / 8) + 1);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  const unused = 7 - (max & 7);
  return extension(EXT.keyUsage, true, bitString(bytes, unused));
}

export function extKeyUsageExt(oids: readonly string[]): Buffer {
  return extension(EXT.extKeyUsage, false, seq(...oids.map((o) => oid(o))));
}

export function subjectKeyIdExt(keyId: Buffer): Buffer {
  return extension(EXT.subjectKeyIdentifier, false, octetString(keyId));
}

export function authorityKeyIdExt(keyId: Buffer): Buffer {
  return extension(EXT.authorityKeyIdentifier, false, seq(tlv(0x80, keyId)));
}

/** GeneralNames: the URIs first, then DNS names, then IP addresses (RFC 5280 4.2.1.6 encodings). */
export function generalNames(uris: readonly string[], dnsNames: readonly string[] = [], ips: readonly string[] = []): Buffer {
  const parts: Buffer[] = [];
  for (const u of uris) parts.push(tlv(0x86, ia5(u, 'URI')));
  for (const d of dnsNames) parts.push(tlv(0x82, ia5(d, 'DNS name')));
  for (const ip of ips) parts.push(tlv(0x87, ipToBytes(ip)));
  return seq(...parts);
}

export function subjectAltNameExt(critical: boolean, uris: readonly string[], dnsNames: readonly string[] = [], ips: readonly string[] = []): Buffer {
  return extension(EXT.subjectAltName, critical, generalNames(uris, dnsNames, ips));
}

function ia5(s: string, what: string): Buffer {
  // IA5String is 7-bit ASCII; reject anything else rather than emit an invalid certificate.
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7e || c < 0x20) throw invalidArgument(`${what} "${s.slice(0, 80)}" contains a non-printable or non-ASCII character`);
  }
  if (s.length === 0) throw invalidArgument(`${what} is empty`);
  return Buffer.from(s, 'latin1');
}

/** 4 bytes for IPv4, 16 for IPv6. Throws INVALID_ARGUMENT for anything else. */
export function ipToBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (!isIPv6(ip) || ip.includes('%')) throw invalidArgument(`"${ip}" is not an IP address`);
  let s = ip;
  const words: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const b = v4[1]!.split('.').map(Number);
    s = `${s.slice(0, -v4[1]!.length)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const fill = tail !== undefined ? 8 - h.length - t.length : 0;
  for (const x of h) words.push(parseInt(x, 16));
  for (let i = 0; i < fill; i++) words.push(0);
  for (const x of t) words.push(parseInt(x, 16));
  const out = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) out.writeUInt16BE(words[i]!, i * 2);
  return out;
}

/** Canonical text of a 4- or 16-byte iPAddress (IPv6 in RFC 5952 form). */
export function ipFromBytes(b: Buffer): string {
  if (b.length === 4) return Array.from(b).join('.');
  if (b.length !== 16) throw invalidArgument(`iPAddress of ${b.length} bytes`);
  const w: number[] = [];
  for (let i = 0; i < 16; i += 2) w.push(b.readUInt16BE(i));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = w.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Name with O and CN (UTF8String), or the empty Name when both are absent. */
export function encodeName(attrs: { organization?: string; commonName?: string }): Buffer {
  const rdns: Buffer[] = [];
  if (attrs.organization) rdns.push(set(seq(oid(ATTR.organization), tlv(TAG.UTF8_STRING, Buffer.from(attrs.organization, 'utf8')))));
  if (attrs.commonName) rdns.push(set(seq(oid(ATTR.commonName), tlv(TAG.UTF8_STRING, Buffer.from(attrs.commonName, 'utf8')))));
  return seq(...rdns);
}

export const EMPTY_NAME = Buffer.from([0x30, 0x00]);

/**
 * Random serial numbers: 20 octets (the RFC 5280 maximum), first octet in 0x01..0x7f so the INTEGER is positive,
 * non-zero and minimally encoded in exactly 20 octets. 159 bits of entropy. Random bytes come from a pooled buffer
 * (one randomFillSync per 204 serials).
 */
export class SerialGenerator {
  private pool = Buffer.alloc(20 * 204);
  private offset = this.pool.length;

  /** Size of the INTEGER TLV next() returns. */
  static readonly SIZE = 22;

  /** The complete INTEGER TLV (22 bytes). */
  next(): Buffer {
    const out = Buffer.allocUnsafe(SerialGenerator.SIZE);
    this.writeNext(out, 0);
    return out;
  }

  /** Writes the next serial's INTEGER TLV at `at`; returns the offset just past it. */
  writeNext(out: Buffer, at: number): number {
    if (this.offset + 20 > this.pool.length) {
      randomFillSync(this.pool);
      this.offset = 0;
    }
    out[at] = TAG.INTEGER;
    out[at + 1] = 20;
    this.pool.copy(out, at + 2, this.offset, this.offset + 20);
    this.offset += 20;
    out[at + 2] = out[at + 2]! & 0x7f || 0x01;
    return at + SerialGenerator.SIZE;
  }
}
