import * as grpc from '@grpc/grpc-js';

/**
 * A protobuf encoder/decoder that knows only the wire format (varint, length-delimited), no .proto: requests are
 * written from the field numbers of protocols.md §1 and responses are read back field by field, so a test built on
 * it checks meshca's bytes, not what its own proto/ files say. Plus a raw gRPC stream that sends and receives those
 * bytes over a real channel (mTLS, HTTP/2) without any codec.
 */
export type Value = string | Buffer | number | boolean | Fields;
export type Fields = ReadonlyArray<readonly [number, Value]>;

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** Encodes fields in the given order: numbers/booleans as varints (wire type 0), the rest as wire type 2. */
export function encode(fields: Fields): Buffer {
  const parts: Buffer[] = [];
  for (const [no, v] of fields) {
    if (typeof v === 'number' || typeof v === 'boolean') {
      parts.push(varint(no * 8), varint(Number(v)));
      continue;
    }
    const bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.isBuffer(v) ? v : encode(v);
    parts.push(varint(no * 8 + 2), varint(bytes.length), bytes);
  }
  return Buffer.concat(parts);
}

export interface WireField {
  readonly no: number;
  readonly wire: number;
  /** The payload of a length-delimited field, or undefined. */
  readonly bytes: Buffer | undefined;
  /** The value of a varint field, or undefined. */
  readonly int: number | undefined;
}

/** Decodes the top level of a message; throws on anything malformed. */
export function decode(buf: Buffer): WireField[] {
  const out: WireField[] = [];
  let i = 0;
  const readVarint = (): number => {
    let v = 0;
    let mul = 1;
    for (;;) {
      if (i >= buf.length) throw new Error('truncated varint');
      const b = buf[i++]!;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
  };
  while (i < buf.length) {
    const tag = readVarint();
    const no = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) out.push({ no, wire, bytes: undefined, int: readVarint() });
    else if (wire === 2) {
      const len = readVarint();
      if (i + len > buf.length) throw new Error(`field ${no}: length ${len} past the end`);
      out.push({ no, wire, bytes: buf.subarray(i, i + len), int: undefined });
      i += len;
    } else throw new Error(`field ${no}: unexpected wire type ${wire}`);
  }
  return out;
}

/** Field numbers present, in order (to check a message carries exactly the fields it should). */
export function fieldNumbers(buf: Buffer): number[] {
  return decode(buf).map((f) => f.no);
}

/** Every payload of length-delimited field `no`. */
export function all(buf: Buffer, no: number): Buffer[] {
  return decode(buf)
    .filter((f) => f.no === no)
    .map((f) => {
      if (f.bytes === undefined) throw new Error(`field ${no} is not length-delimited`);
      return f.bytes;
    });
}

/** The single payload of field `no` (throws if absent or repeated). */
export function one(buf: Buffer, no: number): Buffer {
  const v = all(buf, no);
  if (v.length !== 1) throw new Error(`expected field ${no} once, found it ${v.length} times (fields: ${fieldNumbers(buf).join(',')})`);
  return v[0]!;
}

/** Field `no` as a UTF-8 string, '' when absent (proto3 default). */
export function str(buf: Buffer, no: number): string {
  const v = all(buf, no);
  if (v.length > 1) throw new Error(`string field ${no} repeated`);
  return v.length === 0 ? '' : v[0]!.toString('utf8');
}

export function strs(buf: Buffer, no: number): string[] {
  return all(buf, no).map((b) => b.toString('utf8'));
}

/** A bidi gRPC call carrying raw message bytes both ways. */
export class RawStream {
  readonly received: Buffer[] = [];
  readonly ended: Promise<grpc.StatusObject>;
  status: grpc.StatusObject | undefined;
  private waiters: Array<() => void> = [];
  private readonly call: grpc.ClientDuplexStream<Buffer, Buffer>;

  constructor(client: grpc.Client, path: string) {
    this.call = client.makeBidiStreamRequest(path, (b: Buffer) => b, (b: Buffer) => b);
    this.call.on('data', (d: Buffer) => {
      this.received.push(d);
      for (const w of this.waiters.splice(0)) w();
    });
    this.call.on('error', () => undefined);
    this.ended = new Promise((resolve) =>
      this.call.on('status', (s: grpc.StatusObject) => {
        this.status = s;
        resolve(s);
        for (const w of this.waiters.splice(0)) w();
      }),
    );
  }

  send(fields: Fields): void {
    this.call.write(encode(fields));
  }

  sendRaw(b: Buffer): void {
    this.call.write(b);
  }

  private read = 0;

  /** The next response (bytes), or rejects after timeoutMs / when the call ends first. */
  async next(timeoutMs = 5000): Promise<Buffer> {
    const until = Date.now() + timeoutMs;
    while (this.received.length <= this.read) {
      if (this.status) throw new Error(`stream ended (${this.status.code} ${this.status.details}) while waiting for a response`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for a response`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.received[this.read++]!;
  }

  /** Resolves if nothing arrives within ms (and the call is still open); rejects otherwise. */
  async expectSilence(ms: number): Promise<void> {
    const before = this.received.length;
    await new Promise((r) => setTimeout(r, ms));
    if (this.received.length > before) throw new Error(`expected no response, got ${this.received.length - before} (fields ${fieldNumbers(this.received[before]!).join(',')})`);
    if (this.status) throw new Error(`expected the stream to stay open, it ended: ${this.status.code} ${this.status.details}`);
  }

  cancel(): void {
    this.call.cancel();
  }
}
