/**
 * Minimal DER encoding and reading for the certificate hot path. Only what X.509 certificates and PKCS#10 requests
 * need: definite lengths, single-byte tags, INTEGER/OID/strings/times. Readers are strict (no indefinite lengths,
 * no trailing garbage where a caller asks for a whole structure) and throw DerError, which callers turn into a
 * CaError naming what they were parsing.
 */

export class DerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DerError';
  }
}

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Number of bytes tag+length take for a value of `len` bytes (at most 3 length octets, as readNode accepts). */
export function headerSize(len: number): number {
  if (len >= 0x1000000) throw new DerError(`DER length ${len} too large`);
  return len < 0x80 ? 2 : len < 0x100 ? 3 : len < 0x10000 ? 4 : 5;
}

/** Encodes one TLV whose value is the concatenation of `parts`. */
export function tlv(tag: number, ...parts: readonly Buffer[]): Buffer {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = Buffer.allocUnsafe(headerSize(len) + len);
  let o = writeHeader(out, 0, tag, len);
  for (const p of parts) {
    p.copy(out, o);
    o += p.length;
  }
  return out;
}

/** Writes a tag and a definite length at `at`; returns the offset just past them (see headerSize). */
export function writeHeader(out: Buffer, at: number, tag: number, len: number): number {
  let o = at;
  out[o++] = tag;
  if (len < 0x80) out[o++] = len;
  else if (len < 0x100) {
    out[o++] = 0x81;
    out[o++] = len;
  } else if (len < 0x10000) {
    out[o++] = 0x82;
    out[o++] = len >> 8;
    out[o++] = len & 0xff;
  } else {
    out[o++] = 0x83;
    out[o++] = len >> 16;
    out[o++] = (len >> 8) & 0xff;
    out[o++] = len & 0xff;
  }
  return o;
}

export const seq = (...parts: readonly Buffer[]): Buffer => tlv(TAG.SEQUENCE, ...parts);
export const set = (...parts: readonly Buffer[]): Buffer => tlv(TAG.SET, ...parts);
export const octetString = (b: Buffer): Buffer => tlv(TAG.OCTET_STRING, b);
export const bitString = (b: Buffer, unusedBits = 0): Buffer => tlv(TAG.BIT_STRING, Buffer.from([unusedBits]), b);
export const DER_NULL = Buffer.from([0x05, 0x00]);
export const DER_TRUE = Buffer.from([0x01, 0x01, 0xff]);

/** Encodes a non-negative integer given as unsigned big-endian bytes, minimally. */
export function integerFromUnsigned(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const b = bytes.subarray(i);
  return b[0]! & 0x80 ? tlv(TAG.INTEGER, Buffer.from([0]), b) : tlv(TAG.INTEGER, b);
}

export function smallInteger(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) throw new DerError(`integer ${n} out of range`);
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  return integerFromUnsigned(Buffer.from(bytes));
}

const oidCache = new Map<string, Buffer>();

/** Encodes a dotted OID ("1.2.840.10045.4.3.2") as a full TLV. Cached: OIDs are constants. */
export function oid(dotted: string): Buffer {
  const hit = oidCache.get(dotted);
  if (hit) return hit;
  const arcs = dotted.split('.').map((s) => {
    if (!/^\d+$/.test(s)) throw new DerError(`bad OID ${dotted}`);
    return Number(s);
  });
  if (arcs.length < 2) throw new DerError(`bad OID ${dotted}`);
  const body: number[] = [arcs[0]! * 40 + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const chunk: number[] = [arc & 0x7f];
    let v = Math.floor(arc / 128);
    while (v > 0) {
      chunk.unshift((v & 0x7f) | 0x80);
      v = Math.floor(v / 128);
    }
    body.push(...chunk);
  }
  const out = tlv(TAG.OID, Buffer.from(body));
  oidCache.set(dotted, out);
  return out;
}

/** Memo of decoded OIDs, bucketed by a cheap hash of their bytes (no string is built to look one up). */
const oidNames = new Map<number, Array<{ readonly bytes: Buffer; readonly dotted: string }>>();
let oidNamesSize = 0;

/** Decodes an OID value (without tag/length) to dotted form. Memoised: certificates repeat the same few OIDs. */
export function oidToString(value: Buffer): string {
  return oidAt(value, 0, value.length);
}

/** oidToString of an OID node's value, read in place. */
export function oidOf(n: DerNode): string {
  return oidAt(n.buf, n.valueStart, n.end);
}

function oidAt(buf: Buffer, start: number, end: number): string {
  let h = end - start;
  for (let i = start; i < end; i++) h = (h * 31 + buf[i]!) | 0;
  const bucket = oidNames.get(h);
  if (bucket) for (const e of bucket) if (sameBytes(e.bytes, buf, start, end)) return e.dotted;
  const value = buf.subarray(start, end);
  const dotted = decodeOid(value);
  if (oidNamesSize < 4096) {
    const entry = { bytes: Buffer.from(value), dotted };
    if (bucket) bucket.push(entry);
    else oidNames.set(h, [entry]);
    oidNamesSize++;
  }
  return dotted;
}

/** a equals b[start..end) (a JS loop beats a native call for a few bytes). */
function sameBytes(a: Buffer, b: Buffer, start: number, end: number): boolean {
  if (a.length !== end - start) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[start + i]) return false;
  return true;
}

function decodeOid(value: Buffer): string {
  if (value.length === 0) throw new DerError('empty OID');
  const first = value[0]!;
  const arcs: number[] = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  let v = 0;
  for (let i = 1; i < value.length; i++) {
    const b = value[i]!;
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      arcs.push(v);
      v = 0;
    } else if (i === value.length - 1) throw new DerError('truncated OID');
  }
  return arcs.join('.');
}

/**
 * RFC 5280 4.1.2.5: UTCTime for years 1950–2049, GeneralizedTime from 2050; always UTC "Z", whole seconds
 * (milliseconds are truncated).
 */
export function encodeTime(d: Date): Buffer {
  const out = Buffer.allocUnsafe(timeSize(d));
  writeTime(out, 0, d);
  return out;
}

/** Encoded size of encodeTime(d): 15 bytes (UTCTime) or 17 (GeneralizedTime). Throws DerError for unencodable dates. */
export function timeSize(d: Date): number {
  if (!Number.isFinite(d.getTime())) throw new DerError('invalid date');
  const y = d.getUTCFullYear();
  if (y < 1950 || y > 9999) throw new DerError(`year ${y} cannot be encoded in a certificate`);
  return y < 2050 ? 15 : 17;
}

/** Writes encodeTime(d) at `at` (digits straight into the buffer: this runs twice per issued leaf). */
export function writeTime(out: Buffer, at: number, d: Date): number {
  const size = timeSize(d);
  const y = d.getUTCFullYear();
  let o = at;
  out[o++] = size === 15 ? TAG.UTC_TIME : TAG.GENERALIZED_TIME;
  out[o++] = size - 2;
  const digits = (v: number, n: number): void => {
    for (let i = n - 1; i >= 0; i--) {
      out[o + i] = 0x30 + (v % 10);
      v = Math.floor(v / 10);
    }
    o += n;
  };
  if (size === 15) digits(y % 100, 2);
  else digits(y, 4);
  digits(d.getUTCMonth() + 1, 2);
  digits(d.getUTCDate(), 2);
  digits(d.getUTCHours(), 2);
  digits(d.getUTCMinutes(), 2);
  digits(d.getUTCSeconds(), 2);
  out[o++] = 0x5a; // 'Z'
  return o;
}

/** Decodes a UTCTime/GeneralizedTime node in the strict RFC 5280 forms (YYMMDDHHMMSSZ / YYYYMMDDHHMMSSZ). */
export function decodeTime(n: DerNode): Date {
  // Read in place (n.buf from n.valueStart): no view unless the value is bad.
  const v = n.buf;
  const at = n.valueStart;
  const len = n.end - at;
  let yearDigits: number;
  let what: string;
  if (n.tag === TAG.UTC_TIME) {
    yearDigits = 2;
    what = 'UTCTime';
  } else if (n.tag === TAG.GENERALIZED_TIME) {
    yearDigits = 4;
    what = 'GeneralizedTime';
  } else throw new DerError(`expected a time, got tag 0x${n.tag.toString(16)}`);
  const bad = (): never => {
    throw new DerError(`bad ${what} "${n.value.toString('latin1')}"`);
  };
  if (len !== yearDigits + 11 || v[n.end - 1] !== 0x5a) bad();
  // Digits only, read as fixed-width numbers (this runs on every issued certificate).
  const num = (off: number, digits: number): number => {
    let x = 0;
    for (let i = at + off; i < at + off + digits; i++) {
      const d = v[i]! - 0x30;
      if (d < 0 || d > 9) bad();
      x = x * 10 + d;
    }
    return x;
  };
  let year = num(0, yearDigits);
  if (yearDigits === 2) year = year >= 50 ? 1900 + year : 2000 + year;
  const o = yearDigits;
  return new Date(Date.UTC(year, num(o, 2) - 1, num(o + 2, 2), num(o + 4, 2), num(o + 6, 2), num(o + 8, 2)));
}

/** One parsed TLV: `value` and `raw` are views into the input buffer (no copies), made on first use. */
export interface DerNode {
  readonly tag: number;
  /** Whole TLV bytes. */
  readonly raw: Buffer;
  /** Value bytes. */
  readonly value: Buffer;
  /** Offset just past this node in `buf`. */
  readonly end: number;
  /** The buffer the node was read from, and where its value starts in it (for walks that avoid views). */
  readonly buf: Buffer;
  readonly valueStart: number;
}

/** Views are created lazily: a certificate walk touches ~30 nodes and needs `raw` of only a few (hot path). */
class Node implements DerNode {
  private v: Buffer | undefined;
  constructor(
    readonly buf: Buffer,
    readonly tag: number,
    private readonly start: number,
    readonly valueStart: number,
    readonly end: number,
  ) {}
  get raw(): Buffer {
    return this.buf.subarray(this.start, this.end);
  }
  get value(): Buffer {
    return (this.v ??= this.buf.subarray(this.valueStart, this.end));
  }
}

/** Reads one TLV at `offset`. Throws DerError on truncation, long-form tags, indefinite or non-minimal lengths. */
export function readNode(buf: Buffer, offset = 0): DerNode {
  return readNodeWithin(buf, offset, buf.length);
}

/** readNode for a TLV that must end by `limit` (inside a parent's value). */
function readNodeWithin(buf: Buffer, offset: number, limit: number): DerNode {
  if (offset + 2 > limit) throw new DerError('truncated DER');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError('multi-byte tags are not supported');
  let len = buf[offset + 1]!;
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new DerError('indefinite length is not DER');
    if (n > 3) throw new DerError('DER length too large');
    if (p + n > limit) throw new DerError('truncated DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    if (len < 0x80 || (n > 1 && buf[p] === 0)) throw new DerError('non-minimal DER length');
    p += n;
  }
  const end = p + len;
  if (end > limit) throw new DerError('truncated DER value');
  return new Node(buf, tag, offset, p, end);
}

/** The child nodes of a constructed node, read in place (same as children(n.value), without making views). */
export function childNodes(n: DerNode): DerNode[] {
  return nodesWithin(n.buf, n.valueStart, n.end);
}

/** The single node that must fill `n`'s value exactly, with the given tag (same as readWhole(n.value, ...)). */
export function onlyChild(n: DerNode, tag: number, what: string): DerNode {
  return wholeWithin(n.buf, n.valueStart, n.end, tag, what);
}

/** Every TLV in buf[start..end). */
function nodesWithin(buf: Buffer, start: number, end: number): DerNode[] {
  const out: DerNode[] = [];
  let o = start;
  while (o < end) {
    const c = readNodeWithin(buf, o, end);
    out.push(c);
    o = c.end;
  }
  return out;
}

/** The one TLV with tag `tag` that fills buf[start..end) exactly. */
function wholeWithin(buf: Buffer, start: number, end: number, tag: number, what: string): DerNode {
  const c = readNodeWithin(buf, start, end);
  if (c.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${c.tag.toString(16)}`);
  if (c.end !== end) throw new DerError(`${what}: ${end - c.end} trailing bytes`);
  return c;
}

/** Reads a node and checks its tag. */
export function expectNode(buf: Buffer, offset: number, tag: number, what: string): DerNode {
  const n = readNode(buf, offset);
  if (n.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${n.tag.toString(16)}`);
  return n;
}

/** All child nodes of a constructed node's value. */
export function children(value: Buffer): DerNode[] {
  return nodesWithin(value, 0, value.length);
}

/** Reads a buffer that must be exactly one TLV with the given tag. */
export function readWhole(buf: Buffer, tag: number, what: string): DerNode {
  return wholeWithin(buf, 0, buf.length, tag, what);
}
