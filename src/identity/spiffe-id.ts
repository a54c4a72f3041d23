import { invalidArgument } from '../util/errors.js';

/**
 * A parsed, validated SPIFFE ID (SPIFFE-ID.md). The scheme and trust domain are case-insensitive on input and
 * always lower-case here: trust domains must be lower-case, so an upper-case one is rejected rather than folded.
 */
export interface SpiffeId {
  readonly trustDomain: string;
  /** "" for a trust domain ID, else "/seg/seg". */
  readonly path: string;
  /** Canonical string form "spiffe://td/path". */
  readonly uri: string;
}

const MAX_ID_BYTES = 2048;
const MAX_TD_BYTES = 255;
const TD_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;

function reject(input: string, rule: string): never {
  const shown = input.length > 120 ? `${input.slice(0, 117)}...` : input;
  throw invalidArgument(`invalid SPIFFE ID "${shown}": ${rule}`);
}

/** Validates a bare trust domain name ("example.org"). Throws INVALID_ARGUMENT naming the broken rule. */
export function validateTrustDomain(td: string): string {
  if (td.length === 0) throw invalidArgument('invalid trust domain "": trust domain is empty');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(td)) {
    throw invalidArgument(`invalid trust domain "${td.slice(0, 60)}": give the bare name without the "${td.slice(0, td.indexOf(':'))}://" scheme (e.g. example.org)`);
  }
  if (td.startsWith('[') || td.includes(':')) {
    throw invalidArgument(`invalid trust domain "${td.slice(0, 60)}": no port, and an IPv6 address is not allowed (IPv4 is)`);
  }
  if (Buffer.byteLength(td) > MAX_TD_BYTES) throw invalidArgument(`invalid trust domain "${td.slice(0, 40)}...": longer than 255 bytes`);
  if (!TD_CHARS.test(td)) {
    throw invalidArgument(
      `invalid trust domain "${td}": only lower-case letters, digits, ".", "-" and "_" are allowed (no port, userinfo, upper case or percent-encoding)`,
    );
  }
  return td;
}

/** Recently parsed valid IDs (parsing is pure; the same few identities are checked on every issuance). */
const recent = new Map<string, SpiffeId>();
const RECENT_MAX = 256;

/** Parses a SPIFFE ID string. Throws INVALID_ARGUMENT naming the rule it broke. */
export function parseSpiffeId(input: string): SpiffeId {
  const hit = typeof input === 'string' ? recent.get(input) : undefined;
  if (hit) return hit;
  const id = parseSpiffeIdUncached(input);
  if (recent.size >= RECENT_MAX) recent.delete(recent.keys().next().value!);
  recent.set(input, id);
  return id;
}

function parseSpiffeIdUncached(input: string): SpiffeId {
  if (typeof input !== 'string' || input.length === 0) reject(String(input ?? ''), 'empty');
  if (Buffer.byteLength(input) > MAX_ID_BYTES) reject(input, 'longer than 2048 bytes');
  const schemeEnd = input.indexOf('://');
  if (schemeEnd < 0 || input.slice(0, schemeEnd).toLowerCase() !== 'spiffe') reject(input, 'scheme must be "spiffe://"');
  const rest = input.slice(schemeEnd + 3);
  if (rest.includes('?')) reject(input, 'query is not allowed');
  if (rest.includes('#')) reject(input, 'fragment is not allowed');
  if (rest.includes('%')) reject(input, 'percent-encoding is not allowed');
  const slash = rest.indexOf('/');
  const td = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash);
  if (td.length === 0) reject(input, 'trust domain is empty');
  if (td.includes('@')) reject(input, 'userinfo is not allowed in the trust domain');
  if (td.startsWith('[')) reject(input, 'an IPv6 address is not allowed as the trust domain (IPv4 is)');
  if (td.includes(':')) reject(input, 'port is not allowed in the trust domain');
  if (td !== td.toLowerCase()) reject(input, 'trust domain must be lower-case');
  if (Buffer.byteLength(td) > MAX_TD_BYTES) reject(input, 'trust domain is longer than 255 bytes');
  if (!TD_CHARS.test(td)) reject(input, 'trust domain may only contain a-z, 0-9, ".", "-" and "_"');
  if (path.length > 0) {
    if (path.endsWith('/')) reject(input, 'path must not end with "/"');
    const segments = path.slice(1).split('/');
    for (const seg of segments) {
      if (seg.length === 0) reject(input, 'path segments must not be empty');
      if (seg === '.' || seg === '..') reject(input, 'path segments must not be "." or ".."');
      if (!SEGMENT_CHARS.test(seg)) reject(input, `path segment "${seg}" may only contain a-z, A-Z, 0-9, ".", "-" and "_"`);
    }
  }
  return Object.freeze({ trustDomain: td, path, uri: `spiffe://${td}${path}` });
}

/** Parses a workload SPIFFE ID: valid, in the given trust domain, with a non-root path. */
export function parseWorkloadId(input: string, trustDomain: string): SpiffeId {
  const id = parseSpiffeId(input);
  if (id.trustDomain !== trustDomain) {
    reject(input, `trust domain "${id.trustDomain}" is not this CA's trust domain "${trustDomain}"`);
  }
  if (id.path === '') reject(input, 'a workload SPIFFE ID must have a path (a trust domain ID names no workload)');
  return id;
}

export function trustDomainId(trustDomain: string): string {
  return `spiffe://${trustDomain}`;
}

/**
 * True when `id` matches `pattern`: an exact SPIFFE ID, or a prefix ending in "/*" or "/" that matches
 * everything below it on segment boundaries ("spiffe://td/ns/a/*" matches "spiffe://td/ns/a/sa/b", not
 * "spiffe://td/ns/ab").
 */
export function matchesIdPattern(id: string, pattern: string): boolean {
  if (pattern.endsWith('/*')) return id.startsWith(pattern.slice(0, -1));
  if (pattern.endsWith('/')) return id.startsWith(pattern);
  return id === pattern;
}
