import { createHash, X509Certificate } from 'node:crypto';
import { dnLine } from '../x509/cert-parse.js';
import type { TrustBundle } from '../authority/types.js';
import { validateTrustDomain } from '../identity/spiffe-id.js';
import { invalidArgument } from '../util/errors.js';
import { parseJsonNoDuplicates } from './strict-json.js';

/** One JWK of a SPIFFE bundle (x509-svid use): public key parameters plus x5c with exactly one DER CA cert. */
export interface SpiffeJwk {
  kty: string;
  use: 'x509-svid' | 'jwt-svid';
  x5c?: string[];
  kid?: string;
  crv?: string;
  x?: string;
  y?: string;
  n?: string;
  e?: string;
}

export interface SpiffeBundleDoc {
  keys: SpiffeJwk[];
  spiffe_sequence?: number;
  spiffe_refresh_hint?: number;
}

/**
 * The SPIFFE bundle (JWK Set) of a trust bundle: one `use: x509-svid` key per CA certificate, with `x5c` holding
 * exactly that certificate and no `kid` (SPIFFE_Trust_Domain_and_Bundle.md).
 */
export function bundleToJwks(bundle: TrustBundle, refreshHintSeconds: number): SpiffeBundleDoc {
  const keys = bundle.rootsDer.map((der): SpiffeJwk => {
    // The key comes from a parsed certificate (not freshly generated), so JWK export is safe on Node 20.
    const jwk = new X509Certificate(der).publicKey.export({ format: 'jwk' }) as Record<string, string>;
    const out: SpiffeJwk = { kty: jwk.kty!, use: 'x509-svid', x5c: [der.toString('base64')] };
    for (const k of ['crv', 'x', 'y', 'n', 'e'] as const) if (jwk[k] !== undefined) out[k] = jwk[k];
    return out;
  });
  return { keys, spiffe_sequence: bundle.sequence, spiffe_refresh_hint: Math.max(1, Math.round(refreshHintSeconds)) };
}

/** A JWT authority of a foreign bundle, kept as its JWK so it can be served again unchanged. */
export interface JwtAuthority {
  readonly kid: string;
  readonly jwk: Readonly<Record<string, unknown>>;
}

/** A SPIFFE bundle after strict parsing. */
export interface ParsedSpiffeBundle {
  /** DER CA certificates of the x509-svid entries, in document order. Empty = every X509-SVID is untrusted. */
  readonly x509Authorities: readonly Buffer[];
  readonly jwtAuthorities: readonly JwtAuthority[];
  readonly sequence?: number;
  readonly refreshHintSeconds?: number;
  /** Why entries were ignored (unknown kty/use), for logs. */
  readonly skipped: readonly string[];
}

const KNOWN_KTY = new Set(['EC', 'RSA', 'OKP']);
const JWT_ALGS = new Set(['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512']);
const STD_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function bad(what: string, msg: string): never {
  throw invalidArgument(`${what}: ${msg}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Parses a SPIFFE bundle document (SPIFFE_Trust_Domain_and_Bundle.md) strictly. `what` names the source in errors
 * ("federated bundle of example.org from https://..."). Rules:
 * - the document is a JSON object with a `keys` array (required; empty is valid and means "all revoked");
 * - duplicate JSON keys anywhere are rejected;
 * - entries with a missing or unknown `use`, or a missing or unknown `kty`, are skipped (and reported in `skipped`);
 * - `x509-svid` entries without `x5c` (or with an empty one) are skipped; otherwise `x5c[0]` must be a standard-base64
 *   DER certificate that is a CA and any further `x5c` values are ignored (X509-SVID.md §6.2); no `kid`, and public
 *   key parameters (when present) matching that certificate;
 * - `jwt-svid` entries need a `kid` (unique in the bundle) and, when present, an RS/ES/PS 256/384/512 `alg`;
 * - `spiffe_sequence`, when present, is a non-negative safe integer; `spiffe_refresh_hint` a positive number.
 * Throws CaError INVALID_ARGUMENT naming the first problem.
 */
export function parseSpiffeBundle(input: string | Buffer | unknown, what = 'SPIFFE bundle'): ParsedSpiffeBundle {
  let doc: unknown = input;
  if (typeof input === 'string' || Buffer.isBuffer(input)) {
    const text = typeof input === 'string' ? input : input.toString('utf8');
    try {
      doc = parseJsonNoDuplicates(text);
    } catch (e) {
      bad(what, `not valid JSON (${(e as Error).message})`);
    }
  }
  if (!isObject(doc)) bad(what, 'must be a JSON object (a JWK Set)');
  if (!('keys' in doc)) bad(what, '"keys" is required');
  if (!Array.isArray(doc.keys)) bad(what, '"keys" must be an array');
  let sequence: number | undefined;
  if (doc.spiffe_sequence !== undefined) {
    const s = doc.spiffe_sequence;
    if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 0) bad(what, `"spiffe_sequence" must be a non-negative integer (got ${JSON.stringify(s)})`);
    sequence = s;
  }
  let refreshHintSeconds: number | undefined;
  if (doc.spiffe_refresh_hint !== undefined) {
    const h = doc.spiffe_refresh_hint;
    if (typeof h !== 'number' || !Number.isFinite(h) || h <= 0) bad(what, `"spiffe_refresh_hint" must be a positive number of seconds (got ${JSON.stringify(h)})`);
    refreshHintSeconds = h;
  }
  const x509: Buffer[] = [];
  const jwt: JwtAuthority[] = [];
  const skipped: string[] = [];
  const seenCerts = new Set<string>();
  const seenKids = new Set<string>();
  doc.keys.forEach((k: unknown, i: number) => {
    const at = `keys[${i}]`;
    if (!isObject(k)) bad(what, `${at} must be a JSON object`);
    const use = k.use;
    const kty = k.kty;
    if (typeof use !== 'string' || (use !== 'x509-svid' && use !== 'jwt-svid')) {
      skipped.push(`${at}: ${use === undefined ? 'no "use"' : `unknown use ${JSON.stringify(use)}`}`);
      return;
    }
    if (typeof kty !== 'string' || !KNOWN_KTY.has(kty)) {
      skipped.push(`${at}: ${kty === undefined ? 'no "kty"' : `unknown kty ${JSON.stringify(kty)}`}`);
      return;
    }
    if (use === 'x509-svid') {
      if (k.kid !== undefined) bad(what, `${at}: an x509-svid entry must not have a "kid"`);
      const x5c = k.x5c;
      if (x5c === undefined || (Array.isArray(x5c) && x5c.length === 0)) {
        skipped.push(`${at}: x509-svid entry without "x5c"`);
        return;
      }
      if (!Array.isArray(x5c)) bad(what, `${at}: "x5c" must be an array of base64 DER certificates`);
      // Only the first value is the CA certificate; consumers ignore the rest.
      const b64 = x5c[0];
      if (typeof b64 !== 'string' || b64.length === 0 || !STD_BASE64.test(b64)) bad(what, `${at}: x5c[0] is not standard base64`);
      const der = Buffer.from(b64, 'base64');
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(der);
      } catch (e) {
        bad(what, `${at}: x5c[0] is not a DER X.509 certificate (${(e as Error).message})`);
      }
      if (!cert.ca) bad(what, `${at}: x5c[0] (subject "${dnLine(cert.subject)}") is not a CA certificate`);
      checkKeyMatches(k, cert, what, at);
      const fp = createHash('sha256').update(der).digest('hex');
      if (seenCerts.has(fp)) bad(what, `${at}: the same certificate appears twice`);
      seenCerts.add(fp);
      x509.push(der);
    } else {
      const kid = k.kid;
      if (typeof kid !== 'string' || kid.length === 0) bad(what, `${at}: a jwt-svid entry needs a non-empty "kid"`);
      if (seenKids.has(kid)) bad(what, `${at}: duplicate jwt-svid kid "${kid}"`);
      if (k.alg !== undefined && (typeof k.alg !== 'string' || !JWT_ALGS.has(k.alg))) {
        bad(what, `${at}: jwt-svid alg ${JSON.stringify(k.alg)} is not one of ${[...JWT_ALGS].join(', ')}`);
      }
      seenKids.add(kid);
      jwt.push({ kid, jwk: { ...k } });
    }
  });
  return {
    x509Authorities: x509,
    jwtAuthorities: jwt,
    ...(sequence !== undefined ? { sequence } : {}),
    ...(refreshHintSeconds !== undefined ? { refreshHintSeconds } : {}),
    skipped,
  };
}

/** The JWK's key parameters, when given, must describe the key of its x5c certificate. */
function checkKeyMatches(k: Record<string, unknown>, cert: X509Certificate, what: string, at: string): void {
  // Exported from a parsed certificate's key (not a freshly generated one): safe on Node 20.
  const certJwk = cert.publicKey.export({ format: 'jwk' }) as Record<string, unknown>;
  if (certJwk.kty !== k.kty) bad(what, `${at}: kty ${String(k.kty)} does not match the certificate's ${String(certJwk.kty)} key`);
  for (const f of ['crv', 'x', 'y', 'n', 'e']) {
    if (k[f] !== undefined && k[f] !== certJwk[f]) bad(what, `${at}: "${f}" does not match the x5c certificate's public key`);
  }
}

/** Serialises a SPIFFE bundle document (keys, spiffe_sequence, spiffe_refresh_hint) from DER roots and JWT keys. */
export function spiffeBundleJson(opts: {
  rootsDer: readonly Buffer[];
  jwtAuthorities?: readonly JwtAuthority[];
  sequence?: number;
  refreshHintSeconds?: number;
}): string {
  const doc = bundleToJwks(
    { trustDomain: '', rootsDer: opts.rootsDer, pem: '', sequence: opts.sequence ?? 0 },
    opts.refreshHintSeconds ?? 300,
  ) as SpiffeBundleDoc & { keys: unknown[] };
  for (const j of opts.jwtAuthorities ?? []) doc.keys.push({ ...j.jwk });
  if (opts.sequence === undefined) delete doc.spiffe_sequence;
  if (opts.refreshHintSeconds === undefined) delete doc.spiffe_refresh_hint;
  return JSON.stringify(doc);
}

/** One trust domain of a bundle map. */
export interface BundleMapEntry {
  readonly trustDomain: string;
  readonly rootsDer: readonly Buffer[];
  readonly jwtAuthorities?: readonly JwtAuthority[];
  readonly sequence?: number;
}

/**
 * The SPIFFE bundle map `{"trust_domains":{"<bare td>":<bundle>}}` (used by Envoy's SPIFFE validator
 * `trust_bundles`). Per-bundle refresh hints are omitted; bundles are never merged; duplicate trust domains throw.
 */
export function bundleMapJson(entries: readonly BundleMapEntry[]): string {
  const out: Record<string, unknown> = {};
  for (const e of entries) {
    validateTrustDomain(e.trustDomain);
    if (Object.prototype.hasOwnProperty.call(out, e.trustDomain)) throw invalidArgument(`bundle map: trust domain "${e.trustDomain}" appears twice`);
    const doc = JSON.parse(spiffeBundleJson({ rootsDer: e.rootsDer, jwtAuthorities: e.jwtAuthorities ?? [], ...(e.sequence !== undefined ? { sequence: e.sequence } : {}) })) as unknown;
    Object.defineProperty(out, e.trustDomain, { value: doc, enumerable: true, writable: true, configurable: true });
  }
  return JSON.stringify({ trust_domains: out });
}

/** Parses a bundle map strictly: duplicate trust domains (or any duplicate JSON key) and invalid names throw. */
export function parseBundleMap(text: string | Buffer, what = 'bundle map'): Map<string, ParsedSpiffeBundle> {
  let doc: unknown;
  try {
    doc = parseJsonNoDuplicates(typeof text === 'string' ? text : text.toString('utf8'));
  } catch (e) {
    bad(what, `not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(doc) || !isObject(doc.trust_domains)) bad(what, 'must be an object with a "trust_domains" object');
  const out = new Map<string, ParsedSpiffeBundle>();
  for (const [td, b] of Object.entries(doc.trust_domains)) {
    try {
      validateTrustDomain(td);
    } catch (e) {
      bad(what, (e as Error).message);
    }
    out.set(td, parseSpiffeBundle(b, `${what}: trust domain ${td}`));
  }
  return out;
}
