import { Buffer } from 'node:buffer';
import type { Logger } from 'pino';
import { CaError } from '../../util/errors.js';
import { grpcCode } from '../status.js';
import type { PreparedIssue, ProtoIssueBatchResult, ProtoIssueRequest, ProtoIssueResponse } from './identity-service.js';

/**
 * Margin on a predicted certificate result, bytes: otherwise equal leaves differ by a few bytes (ECDSA signature and
 * serial number DER integers, varints of ttl and timestamps), and again by 4/3 of that in the chain's PEM.
 */
const SLACK_BYTES = 32;
/** A byte more of SPIFFE ID is in result.spiffe_id, certificate.spiffe_id, the leaf's DER and its PEM (4/3): ~4.4. */
const BYTES_PER_NAME_BYTE = 5;
/** DER overhead of one more DNS SAN (tag and length), counted as name bytes. */
const DNS_NAME_OVERHEAD = 4;

export interface BatchOptions {
  readonly requests: readonly ProtoIssueRequest[];
  /** Validates and authorises one entry (cheap: nothing is signed). Throws CaError. */
  readonly prepare: (r: ProtoIssueRequest) => Promise<PreparedIssue>;
  /** Signs a prepared entry. Throws CaError. */
  readonly mint: (p: PreparedIssue) => Promise<ProtoIssueResponse>;
  /** The result of an entry that failed with `e` (logging is the caller's). */
  readonly entryError: (r: ProtoIssueRequest, e: unknown) => ProtoIssueBatchResult;
  /** Bytes one result adds to the encoded IssueBatchResponse; the sizes of its results add up to its size. */
  readonly encodedSize: (r: ProtoIssueBatchResult) => number;
  /** server.grpc.maxMessageBytes: the largest response the gRPC server sends. */
  readonly maxMessageBytes: number;
  readonly log: Logger;
}

/** The message of an entry left out of an IssueBatch response that would otherwise have been too large. */
export function responseTooLarge(maxMessageBytes: number): string {
  return `the response would exceed server.grpc.maxMessageBytes (${maxMessageBytes} bytes); send fewer entries per batch`;
}

/** The result of an entry that failed with `e`: its CaError code and message, or INTERNAL without detail. */
export function batchEntryError(r: ProtoIssueRequest, e: unknown): ProtoIssueBatchResult {
  const ce = e instanceof CaError ? e : undefined;
  return {
    spiffe_id: r.spiffe_id ?? '',
    error: { code: grpcCode(ce ? ce.code : 'INTERNAL'), message: ce ? ce.message : 'internal error', details: [] },
  };
}

type Entry =
  /** Failed validation or authorisation: its result, of known size. */
  | { readonly answer: ProtoIssueBatchResult }
  /** To be minted: `kind` groups entries whose certificates differ only in names; `names` counts those bytes. */
  | { readonly prepared: PreparedIssue; readonly kind: string; readonly names: number };

/** Certificates of one kind have the same key, so the same size but for their names (and a few varying bytes). */
function kindOf(p: PreparedIssue): string {
  return p.csr ? `csr:${p.csr.publicKey.export({ type: 'spki', format: 'der' }).length}` : `key:${p.keyType ?? 'default'}`;
}

function nameBytes(p: PreparedIssue): number {
  return Buffer.byteLength(p.target) + p.dnsNames.reduce((n, d) => n + Buffer.byteLength(d) + DNS_NAME_OVERHEAD, 0);
}

/**
 * Answers an IssueBatch within maxMessageBytes. grpc-js refuses to send a larger response and fails the whole call
 * with RESOURCE_EXHAUSTED, after every certificate in it was minted; the API promises that the call fails only when
 * it cannot be processed at all.
 *
 * Contract (proto/meshca/v1/identity.proto, README): entries are answered in request order while the encoded response
 * fits. From the first entry that would not fit, that entry and every later one get RESOURCE_EXHAUSTED
 * (responseTooLarge) and are not minted, so a client sends exactly those again, in a later batch. Room for those
 * RESOURCE_EXHAUSTED results is kept free from the start; when they alone would not fit, the call fails with
 * RESOURCE_EXHAUSTED before any entry is authorised or minted.
 *
 * Why waves: a certificate result's size is known exactly only after minting (leaf and chain in DER and PEM, a
 * generated key, the bundle), and a bound computed beforehand would need the signing CA's chain and every key type's
 * encoding. Minting one entry at a time and measuring it would waste nothing but would give up signing a batch in
 * parallel (signing.workers), which is what batches are for. So: every entry is validated and authorised first
 * (cheap); then entries are minted in parallel waves, in request order, each wave as long as the sizes measured so far
 * predict will fit, and each result is measured exactly before it is added. The first entry of each kind of key is
 * minted before any other of its kind, to learn its size; later ones are predicted from the largest of their kind plus
 * margins for longer names and varying DER lengths. A prediction can still be short (a kind first seen when the
 * response is nearly full): that certificate is minted but not sent, which is logged as a warning.
 */
export async function answerBatch(o: BatchOptions): Promise<ProtoIssueBatchResult[]> {
  const { requests, encodedSize } = o;
  const max = o.maxMessageBytes;
  const n = requests.length;
  const leftOut = (j: number): ProtoIssueBatchResult => ({
    spiffe_id: requests[j]!.spiffe_id ?? '',
    error: { code: grpcCode('RESOURCE_EXHAUSTED'), message: responseTooLarge(max), details: [] },
  });
  // reserve[j]: the bytes that answering entries j.. with RESOURCE_EXHAUSTED takes, kept free while entries before j are added.
  const reserve = new Array<number>(n + 1).fill(0);
  for (let j = n - 1; j >= 0; j--) reserve[j] = reserve[j + 1]! + encodedSize(leftOut(j));
  if (reserve[0]! > max) {
    throw new CaError('RESOURCE_EXHAUSTED', `the response would exceed server.grpc.maxMessageBytes (${max} bytes) even without certificates; send fewer entries per batch`);
  }

  const entries: Entry[] = await Promise.all(
    requests.map(async (r): Promise<Entry> => {
      try {
        const prepared = await o.prepare(r);
        return { prepared, kind: kindOf(prepared), names: nameBytes(prepared) };
      } catch (e) {
        return { answer: o.entryError(r, e) };
      }
    }),
  );

  const results: ProtoIssueBatchResult[] = [];
  /** The largest certificate result of each kind so far, with its name bytes. */
  const largest = new Map<string, { size: number; names: number }>();
  let used = 0;
  let dropped = 0;
  waves: while (results.length < n) {
    const start = results.length;
    const smallestKnown = Math.min(...[...largest.values()].map((m) => m.size), Infinity);
    const learning = new Set<string>();
    let planned = used;
    let end = start;
    for (; end < n; end++) {
      const e = entries[end]!;
      let cost: number;
      if ('answer' in e) cost = encodedSize(e.answer);
      else {
        const m = largest.get(e.kind);
        if (m) cost = m.size + SLACK_BYTES + BYTES_PER_NAME_BYTE * Math.max(0, e.names - m.names);
        else if (learning.has(e.kind)) break;
        else {
          // Unknown until minted: assume the smallest certificate seen, so a response already full stops here.
          learning.add(e.kind);
          cost = Number.isFinite(smallestKnown) ? smallestKnown : 0;
        }
      }
      if (planned + cost + reserve[end + 1]! > max) break;
      planned += cost;
    }
    if (end === start) break;

    const answers = await Promise.all(
      entries.slice(start, end).map(async (e, k): Promise<ProtoIssueBatchResult> => {
        if ('answer' in e) return e.answer;
        try {
          const certificate = await o.mint(e.prepared);
          return { spiffe_id: certificate.spiffe_id, certificate };
        } catch (err) {
          return o.entryError(requests[start + k]!, err);
        }
      }),
    );
    for (let k = 0; k < answers.length; k++) {
      const j = start + k;
      const a = answers[k]!;
      const size = encodedSize(a);
      if (used + size + reserve[j + 1]! > max) {
        dropped = answers.slice(k).filter((x) => x.certificate).length;
        break waves;
      }
      results.push(a);
      used += size;
      const e = entries[j]!;
      if (a.certificate && 'kind' in e) {
        const m = largest.get(e.kind);
        if (!m || size > m.size) largest.set(e.kind, { size, names: e.names });
      }
    }
  }
  if (dropped > 0) {
    o.log.warn({ dropped, answered: results.length, entries: n, maxMessageBytes: max }, 'IssueBatch: certificates minted but left out of a response that would have been too large');
  }
  for (let j = results.length; j < n; j++) results.push(leftOut(j));
  return results;
}
