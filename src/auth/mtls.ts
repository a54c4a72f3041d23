import { X509Certificate, createHash } from 'node:crypto';
import { dnLine } from '../x509/cert-parse.js';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { registered } from '../telemetry/metrics.js';
import type { Authenticator, AuthInput, Caller } from './types.js';
import type { TrustBundle } from '../authority/types.js';
import { SystemClock, type Clock } from '../util/clock.js';
import { CaError, unauthenticated } from '../util/errors.js';
import { parseSpiffeId } from '../identity/spiffe-id.js';

/** Why a TLS peer was refused (metric label `reason`). */
export type MtlsFailure = 'no-certificate' | 'untrusted' | 'expired' | 'not-yet-valid' | 'no-spiffe-id' | 'not-a-leaf';
const MTLS_FAILURES: readonly MtlsFailure[] = ['no-certificate', 'untrusted', 'expired', 'not-yet-valid', 'no-spiffe-id', 'not-a-leaf'];

export interface MtlsAuthenticatorOptions {
  readonly trustDomain: string;
  /** Current trust bundle of our domain (the authority's bundle(); re-read on every verification). */
  readonly bundle: () => TrustBundle;
  /** Extra anchors trusted for client certificates only (server.grpc.clientCaFile), DER. */
  readonly bootstrapCasDer?: readonly Buffer[];
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Registry;
  /** Longest accepted chain (leaf + intermediates), default 8. */
  readonly maxDepth?: number;
}

const MAX_CACHE = 20_000;

/** Counter shared by every authenticator (mTLS, token, UDS): meshca_auth_failures_total{reason}. */
export function authFailuresCounter(registry: Registry): Counter<'reason'> {
  return registered(registry, 'meshca_auth_failures_total', () =>
    new Counter({ name: 'meshca_auth_failures_total', help: 'Callers refused at authentication, by reason', labelNames: ['reason'], registers: [registry] }),
  );
}

/**
 * Authenticates a TLS peer by its client certificate: the presented chain must lead (RFC 5280 signature + issuer
 * checks, CA flag on every issuer) to an anchor of our current trust bundle or of the bootstrap CA bundle, every
 * certificate on the path must be valid at Clock time, and the leaf must carry exactly one URI SAN, a valid workload
 * SPIFFE ID in our trust domain, which becomes the Caller. Anything else is CaError UNAUTHENTICATED naming the reason,
 * logged and counted. Positive results are cached per leaf until the earliest notAfter on the path or a bundle change.
 * When the TLS layer reports that OpenSSL already validated the chain against the same anchors (AuthInput.tlsVerified),
 * only the leaf is checked (validity at Clock time, CA flag, SPIFFE ID). A chain OpenSSL refused is refused here too
 * (see refusedByTls), after the full check has named the most precise reason.
 */
export class MtlsAuthenticator implements Authenticator {
  private readonly failures: Counter<'reason'>;
  private readonly bootstrap: X509Certificate[];
  private anchorsSeq = -1;
  private anchors: X509Certificate[] = [];
  private readonly cache = new Map<string, { caller: Caller; validUntilMs: number; validFromMs: number; seq: number }>();

  constructor(private readonly opts: MtlsAuthenticatorOptions) {
    this.failures = authFailuresCounter(opts.metrics);
    // Listed at 0 from the start (inc by 0 leaves an existing series of a shared registry unchanged).
    for (const reason of MTLS_FAILURES) this.failures.inc({ reason }, 0);
    this.bootstrap = (opts.bootstrapCasDer ?? []).map((d) => new X509Certificate(d));
  }

  async authenticate(input: AuthInput): Promise<Caller> {
    if (input.peerLeafDer && input.tlsVerified) return this.verifyLeafOnly(input.peerLeafDer, () => input.peerCertChainDer);
    if (input.peerLeafDer && input.tlsVerified === false) return this.refusedByTls(input.peerCertChainDer, input.tlsError);
    return this.verify(input.peerCertChainDer);
  }

  /**
   * OpenSSL refused the chain during the handshake. Its verdict stands: this class re-checks issuer names,
   * signatures, CA flags and validity, but not what only OpenSSL applies (name constraints, path length, key
   * usage, policies), so accepting a chain OpenSSL refused would let a name-constrained sub-CA of the bootstrap CA
   * mint any identity. Node reports only OpenSSL's last error, and OpenSSL checks purpose, path length and critical
   * extensions before validity times, so a time error may hide any of them (a leaf made to become valid a few seconds
   * after the handshake would otherwise slip past them): a time refusal is final too. The one exception is a Clock
   * that is not the wall clock (tests move it): then a chain refused for time alone gets the Clock-time check, never
   * from the cache. Every refusal runs the full check first only to log the most precise reason.
   */
  private refusedByTls(chainDer: readonly Buffer[], tlsError: string | undefined): Caller {
    const timeError = tlsError === 'CERT_HAS_EXPIRED' || tlsError === 'CERT_NOT_YET_VALID';
    if (timeError && !(this.opts.clock instanceof SystemClock)) return this.verify(chainDer, true, false);
    this.verify(chainDer, false, false);
    const reconnect = tlsError === 'CERT_NOT_YET_VALID' ? '; a certificate that has become valid since must be presented on a new connection' : '';
    return this.refuse(timeError ? (tlsError === 'CERT_HAS_EXPIRED' ? 'expired' : 'not-yet-valid') : 'untrusted', `the client certificate chain failed TLS verification (${tlsError ?? 'unknown error'})${reconnect}`);
  }

  /**
   * The TLS layer already validated the chain against the same anchors at wall-clock time: check the leaf at Clock
   * time and its SPIFFE ID, without extracting the whole chain. Anything unexpected falls back to the full check.
   */
  private verifyLeafOnly(leafDer: Buffer, chain: () => readonly Buffer[]): Caller {
    const seq = this.refreshAnchors();
    const key = createHash('sha256').update(leafDer).digest('base64');
    const now = this.opts.clock.nowMs();
    const hit = this.cache.get(key);
    if (hit && hit.seq === seq && now < hit.validUntilMs && now >= hit.validFromMs) return hit.caller;
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(leafDer);
    } catch {
      return this.verify(chain());
    }
    const window = { from: -Infinity, until: Infinity };
    this.checkTime(leaf, now, 'client certificate', window);
    if (leaf.ca) return this.refuse('not-a-leaf', 'the client certificate is a CA certificate, not an X.509-SVID leaf');
    const caller: Caller = { spiffeId: this.spiffeIdOf(leaf), via: 'mtls' };
    this.remember(key, { caller, validUntilMs: window.until, validFromMs: window.from, seq });
    return caller;
  }

  private remember(key: string, v: { caller: Caller; validUntilMs: number; validFromMs: number; seq: number }): void {
    if (this.cache.size >= MAX_CACHE) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, v);
  }

  /** Synchronous core of authenticate(); `remember` = cache a positive result, `cached` = answer from the cache. */
  verify(chainDer: readonly Buffer[], remember = true, cached = true): Caller {
    if (chainDer.length === 0) return this.refuse('no-certificate', 'no client certificate was presented (meshca requires mTLS with a SPIFFE X.509-SVID)');
    const seq = this.refreshAnchors();
    // Keyed by the leaf alone: once a leaf's signature chained to the current anchors, other intermediates presented
    // with it later cannot make it less trustworthy (the window covers the whole verified path).
    const key = createHash('sha256').update(chainDer[0]!).digest('base64');
    const now = this.opts.clock.nowMs();
    const hit = cached ? this.cache.get(key) : undefined;
    if (hit && hit.seq === seq && now < hit.validUntilMs && now >= hit.validFromMs) return hit.caller;
    if (hit) this.cache.delete(key);

    let certs: X509Certificate[];
    try {
      certs = chainDer.map((d) => new X509Certificate(d));
    } catch {
      return this.refuse('untrusted', 'the client certificate could not be parsed');
    }
    const leaf = certs[0]!;
    const window = { from: -Infinity, until: Infinity };
    this.checkTime(leaf, now, 'client certificate', window);
    if (leaf.ca) return this.refuse('not-a-leaf', 'the client certificate is a CA certificate, not an X.509-SVID leaf');
    this.buildPath(certs, now, window);
    const id = this.spiffeIdOf(leaf);
    const caller: Caller = { spiffeId: id, via: 'mtls' };
    if (remember) this.remember(key, { caller, validUntilMs: window.until, validFromMs: window.from, seq });
    return caller;
  }

  private refreshAnchors(): number {
    const b = this.opts.bundle();
    if (b.sequence !== this.anchorsSeq) {
      this.anchors = [...b.rootsDer.map((d) => new X509Certificate(d)), ...this.bootstrap];
      this.anchorsSeq = b.sequence;
      this.cache.clear();
    }
    return this.anchorsSeq;
  }

  private checkTime(c: X509Certificate, now: number, what: string, window: { from: number; until: number }): void {
    const nb = Date.parse(c.validFrom);
    const na = Date.parse(c.validTo);
    if (now >= na) this.refuse('expired', `${what} (${dnLine(c.subject) || 'no subject'}) expired at ${new Date(na).toISOString()}`);
    if (now < nb) this.refuse('not-yet-valid', `${what} is not valid before ${new Date(nb).toISOString()}`);
    window.from = Math.max(window.from, nb);
    window.until = Math.min(window.until, na);
  }

  /** Checks that the chain leads to a current anchor and that every certificate on the path is valid now. */
  private buildPath(certs: X509Certificate[], now: number, window: { from: number; until: number }): void {
    const path = this.pathOf(certs);
    if (!path) this.refuse('untrusted', `the client certificate does not chain to the trust bundle of ${this.opts.trustDomain} or the bootstrap CA`);
    for (const c of path.intermediates) this.checkTime(c, now, 'intermediate certificate', window);
    if (path.anchor) this.checkTime(path.anchor, now, 'trust anchor', window);
  }

  /**
   * Walks issuer links (names, signatures, CA flags) from the leaf to a current anchor using only presented
   * intermediates; undefined when none is reached. `anchor` is null when the client presented the anchor itself.
   */
  private pathOf(certs: X509Certificate[]): { intermediates: X509Certificate[]; anchor: X509Certificate | null } | undefined {
    const maxDepth = this.opts.maxDepth ?? 8;
    let cur = certs[0]!;
    const pool = certs.slice(1);
    const intermediates: X509Certificate[] = [];
    for (let depth = 0; depth < maxDepth; depth++) {
      for (const a of this.anchors) {
        if (a.raw.equals(cur.raw) && depth > 0) return { intermediates, anchor: null };
        if (cur.checkIssued(a) && cur.verify(a.publicKey)) return { intermediates, anchor: a };
      }
      const next = pool.find((p) => p.ca && cur.checkIssued(p) && cur.verify(p.publicKey));
      if (!next) return undefined;
      intermediates.push(next);
      cur = next;
    }
    return undefined;
  }

  /**
   * Whether a client chain still leads to an anchor of the current bundle or the bootstrap CA, whatever the times:
   * after an anchor leaves the bundle (a withdrawn, compromised root), connections it authenticated are cut.
   */
  reachesAnchor(chainDer: readonly Buffer[]): boolean {
    if (chainDer.length === 0) return true;
    this.refreshAnchors();
    try {
      return this.pathOf(chainDer.map((d) => new X509Certificate(d))) !== undefined;
    } catch {
      return false;
    }
  }

  private spiffeIdOf(leaf: X509Certificate): string {
    const uris = splitSans(leaf.subjectAltName ?? '').filter((s) => s.startsWith('URI:'));
    if (uris.length !== 1) {
      this.refuse('no-spiffe-id', `the client certificate must carry exactly one URI SAN (a SPIFFE ID); it has ${uris.length}`);
    }
    const uri = uris[0]!.slice(4);
    try {
      const id = parseSpiffeId(uri);
      if (id.trustDomain !== this.opts.trustDomain) {
        this.refuse('no-spiffe-id', `the client certificate's SPIFFE ID ${uri} is not in trust domain ${this.opts.trustDomain}`);
      }
      if (id.path === '') this.refuse('no-spiffe-id', `the client certificate's SPIFFE ID ${uri} names no workload`);
      return id.uri;
    } catch (e) {
      if (e instanceof CaError && e.code === 'UNAUTHENTICATED') throw e;
      return this.refuse('no-spiffe-id', `the client certificate's URI SAN is not a valid SPIFFE ID: ${(e as Error).message}`);
    }
  }

  private refuse(reason: MtlsFailure, message: string): never {
    this.failures.inc({ reason });
    this.opts.log.warn({ reason, err: message }, 'mtls: caller refused');
    throw unauthenticated(message);
  }
}

/** Splits Node's X509Certificate.subjectAltName ("DNS:a, URI:b", values with ", " are JSON-quoted). */
export function splitSans(s: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < s.length) {
    const colon = s.indexOf(':', i);
    if (colon < 0) break;
    const type = s.slice(i, colon);
    let j = colon + 1;
    let value: string;
    if (s[j] === '"') {
      let k = j + 1;
      while (k < s.length && s[k] !== '"') k += s[k] === '\\' ? 2 : 1;
      value = JSON.parse(s.slice(j, k + 1)) as string;
      j = k + 1;
    } else {
      const end = s.indexOf(', ', j);
      value = end < 0 ? s.slice(j) : s.slice(j, end);
      j = end < 0 ? s.length : end;
    }
    out.push(`${type}:${value}`);
    i = s.startsWith(', ', j) ? j + 2 : j;
  }
  return out;
}
