import { invalidArgument } from '../../util/errors.js';

/**
 * Request decoding that leaves `node` for later. Envoy sends its whole Node (metadata, ~200 extensions, build
 * version: 5-20 KB) in every xDS request unless `set_node_on_first_message_only` is set, and meshca needs only
 * node.id from a stream's first request (protocols.md §2: cache node from the first request). Decoding it in every
 * ACK measured ~80 µs per request with a realistic node against ~0.6 µs without: 0.8 s of one core for an ACK from
 * each of 10,000 streams after a bundle push.
 *
 * The request is decoded without its node field(s); `node` is a getter that decodes them (all occurrences, merged as
 * protobuf merges repeated message fields) on first access and throws INVALID_ARGUMENT naming the field when they
 * are malformed. Requests whose top level cannot be scanned are handed to the full decoder unchanged, so its errors
 * stay the same.
 */
export function lazyNodeDeserializer(
  full: (buf: Buffer) => unknown,
  nodeField: number,
  decodeNode: (buf: Buffer) => unknown,
  what: string,
): (buf: Buffer) => unknown {
  return (buf: Buffer) => {
    const split = splitField(buf, nodeField);
    if (!split || split.values.length === 0) return full(buf);
    const req = full(split.rest) as Record<string, unknown>;
    const nodeBytes = split.values.length === 1 ? split.values[0]! : Buffer.concat(split.values);
    let node: unknown;
    let decoded = false;
    Object.defineProperty(req, 'node', {
      enumerable: true,
      configurable: true,
      get() {
        if (!decoded) {
          try {
            node = decodeNode(nodeBytes);
          } catch (e) {
            throw invalidArgument(`${what}.node is not a valid envoy.config.core.v3.Node: ${(e as Error).message}`);
          }
          decoded = true;
        }
        return node;
      },
    });
    return req;
  };
}

/**
 * Splits a protobuf message into the payloads of top-level length-delimited field `field` and the bytes of every
 * other field (in order). undefined if the top level is malformed or uses wire types this scanner does not know.
 */
export function splitField(buf: Buffer, field: number): { rest: Buffer; values: Buffer[] } | undefined {
  const values: Buffer[] = [];
  const keep: Buffer[] = [];
  let keptFrom = 0;
  let i = 0;
  const varint = (): number | undefined => {
    let v = 0;
    let mul = 1;
    for (let n = 0; n < 10; n++) {
      if (i >= buf.length) return undefined;
      const b = buf[i++]!;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
    return undefined;
  };
  while (i < buf.length) {
    const start = i;
    const tag = varint();
    if (tag === undefined) return undefined;
    const wire = tag % 8;
    const no = Math.floor(tag / 8);
    if (wire === 0) {
      if (varint() === undefined) return undefined;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else if (wire === 2) {
      const len = varint();
      if (len === undefined || i + len > buf.length) return undefined;
      if (no === field) {
        values.push(buf.subarray(i, i + len));
        if (start > keptFrom) keep.push(buf.subarray(keptFrom, start));
        keptFrom = i + len;
      }
      i += len;
    } else return undefined;
    if (i > buf.length) return undefined;
  }
  if (values.length === 0) return { rest: buf, values };
  if (buf.length > keptFrom) keep.push(buf.subarray(keptFrom));
  return { rest: keep.length === 1 ? keep[0]! : Buffer.concat(keep), values };
}
