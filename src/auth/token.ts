import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { Counter, Histogram, type Registry } from 'prom-client';
import { registered } from '../telemetry/metrics.js';
import type { Authenticator, AuthInput, Caller } from './types.js';
import { DEFAULT_MAX_CONCURRENT_REVIEWS, type KubernetesTokensConfig } from './config.js';
import { authFailuresCounter } from './mtls.js';
import type { Clock } from '../util/clock.js';
import { CaError } from '../util/errors.js';
import { parseWorkloadId } from '../identity/spiffe-id.js';
import { connectKube, requestWithSignal, type Kube, type KubeConfig } from '../kube/client.js';
import { kubeErrorInfo } from '../kube/errors.js';
import { ConcurrencyLimit, QueueFullError } from '../util/concurrency-limit.js';

/**
 * Kubernetes ServiceAccount-token callers: `authorization: Bearer <projected SA token>` is checked with a
 * TokenReview (authentication.k8s.io/v1) for our audience, as istiod does. The identity is
 * `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`, taken from the reviewed username; anything that is not a
 * service account is refused.
 *
 * The raw token is never stored, logged or put into an error: the cache is keyed by its SHA-256, log lines carry a
 * short prefix of that hash for correlation, and the API server's status.error is scrubbed before it is logged.
 */

/** Why a token was refused (metric label and log field `reason`). */
export type TokenFailure = 'malformed' | 'invalid' | 'expired' | 'wrong-audience' | 'not-service-account' | 'review-failed';

/** The fields of TokenReview.status that matter here (JSON names as the API serves them). */
export interface TokenReviewStatus {
  authenticated?: boolean;
  user?: { username?: string; uid?: string; groups?: string[] };
  audiences?: string[];
  error?: string;
}

/** Sends one TokenReview. A seam so the authenticator can be unit-tested without an API server. */
export interface TokenReviewer {
  /** `signal` aborts the request when meshca stops waiting for it (the review timeout). */
  review(token: string, audiences: readonly string[], signal?: AbortSignal): Promise<TokenReviewStatus>;
}

export type ReviewOutcome =
  | { readonly ok: true; readonly namespace: string; readonly serviceAccount: string }
  | { readonly ok: false; readonly reason: Exclude<TokenFailure, 'malformed' | 'review-failed'>; readonly message: string; readonly logDetail?: string };

const SA_PREFIX = 'system:serviceaccount:';
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** `system:serviceaccount:<ns>:<name>` → {namespace, name}; undefined for anything else (users, nodes, malformed). */
export function parseServiceAccountUsername(username: string): { namespace: string; name: string } | undefined {
  if (!username.startsWith(SA_PREFIX)) return undefined;
  const parts = username.slice(SA_PREFIX.length).split(':');
  if (parts.length !== 2) return undefined;
  const [namespace, name] = parts as [string, string];
  if (namespace.length > 63 || !DNS_LABEL.test(namespace)) return undefined;
  if (name.length > 253 || !DNS_SUBDOMAIN.test(name)) return undefined;
  return { namespace, name };
}

/**
 * Decides what a TokenReview status means for us. Pure. A review must be authenticated, must list our audience in
 * status.audiences (an authenticated review without audiences means the token was only checked for the API server's
 * own audience, which is not ours), and must name a service account.
 */
export function interpretTokenReview(status: TokenReviewStatus | undefined, audience: string): ReviewOutcome {
  const s = status ?? {};
  if (s.authenticated !== true) {
    const err = typeof s.error === 'string' ? s.error : '';
    if (/expired/i.test(err)) {
      return { ok: false, reason: 'expired', message: 'the bearer token has expired (the kubelet refreshes projected tokens: re-read the token file)', logDetail: err };
    }
    if (/audience/i.test(err)) {
      return {
        ok: false,
        reason: 'wrong-audience',
        message: `the bearer token was not issued for audience "${audience}" (set audience: ${audience} on the projected serviceAccountToken volume)`,
        logDetail: err,
      };
    }
    return { ok: false, reason: 'invalid', message: 'the bearer token was rejected by the Kubernetes API server (invalid or revoked token)', logDetail: err || 'not authenticated' };
  }
  const auds = Array.isArray(s.audiences) ? s.audiences : [];
  if (!auds.includes(audience)) {
    return {
      ok: false,
      reason: 'wrong-audience',
      message: `the bearer token was not issued for audience "${audience}" (set audience: ${audience} on the projected serviceAccountToken volume)`,
      logDetail: `TokenReview authenticated the token for audiences ${JSON.stringify(auds)}`,
    };
  }
  const username = typeof s.user?.username === 'string' ? s.user.username : '';
  const sa = parseServiceAccountUsername(username);
  if (!sa) {
    const shown = username.length > 100 ? `${username.slice(0, 97)}...` : username;
    return {
      ok: false,
      reason: 'not-service-account',
      message: `the bearer token belongs to "${shown}", not to a Kubernetes service account (system:serviceaccount:<namespace>:<name>)`,
    };
  }
  return { ok: true, namespace: sa.namespace, serviceAccount: sa.name };
}

/**
 * The `exp` claim of a JWT, in ms, or undefined. Read without verifying anything: it is only used to make a cached
 * positive review end no later than the token itself; the decision to trust the token is the API server's.
 */
export function jwtExpiryMs(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** TokenReviews through @kubernetes/client-node (`create` on `tokenreviews.authentication.k8s.io`). */
export function kubeTokenReviewer(kube: Kube): TokenReviewer {
  const api = kube.authentication();
  return {
    async review(token, audiences, signal) {
      const out = await api.createTokenReview(
        { body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [...audiences] } } },
        signal ? requestWithSignal(kube, signal) : undefined,
      );
      return (out.status ?? {}) as TokenReviewStatus;
    },
  };
}

export interface TokenReviewAuthenticatorOptions {
  readonly trustDomain: string;
  /** Audience the tokens must carry (default of auth.kubernetesTokens.audience: "meshca"). */
  readonly audience: string;
  readonly reviewer: TokenReviewer;
  /** Lifetime of a cached successful review, seconds (capped at the token's `exp`). */
  readonly cacheTtlSeconds: number;
  /** Lifetime of a cached refusal, seconds (0 = never cached). API failures are never cached. */
  readonly negativeCacheTtlSeconds: number;
  /** Most cached reviews; the oldest entry is dropped first. */
  readonly cacheSize: number;
  /** Longest wait for one TokenReview, queueing included, before the call fails (UNAUTHENTICATED, retryable). Default 10 s. */
  readonly reviewTimeoutMs?: number;
  /** TokenReviews in flight at once (default DEFAULT_MAX_CONCURRENT_REVIEWS); up to REVIEWS_QUEUED_PER_SLOT times as many wait. */
  readonly maxConcurrentReviews?: number;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Registry;
}

type CacheEntry =
  | { readonly ok: true; readonly caller: Caller; readonly expiresMs: number }
  | { readonly ok: false; readonly reason: TokenFailure; readonly message: string; readonly expiresMs: number };

const MAX_TOKEN_BYTES = 16 * 1024;
/** Distinct tokens that may wait for a TokenReview slot, per slot (32 slots: 1,024 waiting)... */
export const REVIEWS_QUEUED_PER_SLOT = 32;
/** ...and at most this many in all, whatever maxConcurrentReviews is (each waiter holds its token, up to 16 KiB). */
export const REVIEWS_QUEUED_MAX = 2048;
const TOKEN_CHARS = /^[A-Za-z0-9._~+/=-]+$/;

/** Results of a TokenReview that was answered or failed (metric label values, listed at 0 from the start). */
const REVIEW_RESULTS: readonly string[] = ['ok', 'error', 'invalid', 'expired', 'wrong-audience', 'not-service-account'] satisfies ReadonlyArray<'ok' | 'error' | TokenFailure>;

function metricsFor(r: Registry): { reviews: Counter<'result'>; cache: Counter<'result'>; latency: Histogram } {
  const m = {
    reviews: registered(r, 'meshca_token_reviews_total', () => new Counter({ name: 'meshca_token_reviews_total', help: 'TokenReviews sent to the Kubernetes API server, by result', labelNames: ['result'], registers: [r] })),
    cache: registered(r, 'meshca_token_review_cache_total', () => new Counter({ name: 'meshca_token_review_cache_total', help: 'Bearer-token authentications answered from the review cache (hit) or by a TokenReview (miss)', labelNames: ['result'], registers: [r] })),
    latency: registered(r, 'meshca_token_review_duration_seconds', () => new Histogram({ name: 'meshca_token_review_duration_seconds', help: 'Time for one TokenReview', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [r] })),
  };
  for (const result of REVIEW_RESULTS) m.reviews.inc({ result }, 0);
  for (const result of ['hit', 'miss']) m.cache.inc({ result }, 0);
  return m;
}

/**
 * Authenticates `authorization: Bearer <token>` callers with TokenReview. Reviews are cached by SHA-256 of the token
 * (positive for cacheTtl, at most until the token's `exp`; refusals for negativeCacheTtl), bounded in size, and
 * concurrent calls with the same token share one TokenReview. At most maxConcurrentReviews TokenReviews run at once;
 * other distinct tokens queue (bounded: past the bound they are refused as UNAVAILABLE, retryable). Every refusal is CaError UNAUTHENTICATED whose message
 * names the reason and never contains the token; an API server failure is retryable and not cached.
 */
export class TokenReviewAuthenticator implements Authenticator {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inflight = new Map<string, Promise<CacheEntry>>();
  private readonly failures: Counter<'reason'>;
  private readonly m: ReturnType<typeof metricsFor>;
  private readonly limit: ConcurrencyLimit;

  constructor(private readonly opts: TokenReviewAuthenticatorOptions) {
    this.failures = authFailuresCounter(opts.metrics);
    this.m = metricsFor(opts.metrics);
    const slots = opts.maxConcurrentReviews ?? DEFAULT_MAX_CONCURRENT_REVIEWS;
    this.limit = new ConcurrencyLimit(slots, Math.min(slots * REVIEWS_QUEUED_PER_SLOT, REVIEWS_QUEUED_MAX));
  }

  async authenticate(input: AuthInput): Promise<Caller> {
    const header = input.authorization ?? '';
    const m = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
    if (!m) return this.refuse('malformed', 'the authorization header must be "Bearer <token>" with one token', undefined);
    const token = m[1]!;
    if (Buffer.byteLength(token) > MAX_TOKEN_BYTES || !TOKEN_CHARS.test(token)) {
      return this.refuse('malformed', 'the bearer token is not a well-formed Kubernetes token', undefined);
    }
    const key = createHash('sha256').update(token).digest('hex');
    const now = this.opts.clock.nowMs();
    const hit = this.cache.get(key);
    let entry: CacheEntry;
    if (hit && now < hit.expiresMs) {
      this.m.cache.inc({ result: 'hit' });
      entry = hit;
    } else {
      if (hit) this.cache.delete(key);
      this.m.cache.inc({ result: 'miss' });
      let p = this.inflight.get(key);
      if (!p) {
        p = this.review(token, key).finally(() => this.inflight.delete(key));
        this.inflight.set(key, p);
      }
      entry = await p;
    }
    if (entry.ok) return entry.caller;
    return this.refuse(entry.reason, entry.message, key);
  }

  /** Number of cached reviews (for tests and the status page). */
  cacheSize(): number {
    return this.cache.size;
  }

  private async review(token: string, key: string): Promise<CacheEntry> {
    const tokenSha256 = key.slice(0, 12);
    let ticket;
    try {
      ticket = this.limit.enter();
    } catch (e) {
      if (!(e instanceof QueueFullError)) throw e;
      throw this.overloaded(tokenSha256, 'too many bearer tokens are waiting for a TokenReview');
    }
    // One budget (reviewTimeoutMs) for waiting for a slot and for the review itself. When it runs out the HTTP
    // request is aborted and the slot freed, so an API server that stops answering cannot hold the slots for good.
    const abort = new AbortController();
    let sentAt: bigint | undefined;
    const run = ticket.ready.then(() => {
      if (ticket.released) return new Promise<never>(() => undefined); // gave up while queued
      sentAt = process.hrtime.bigint();
      const sent = this.opts.reviewer.review(token, [this.opts.audience], abort.signal);
      sent.then(
        () => ticket.release(),
        () => ticket.release(),
      );
      return sent;
    });
    let status: TokenReviewStatus;
    try {
      status = await this.withTimeout(run);
    } catch (e) {
      abort.abort();
      ticket.release();
      // Never sent: the wait for a slot used the whole budget. That is overload, not a failed review.
      if (sentAt === undefined) throw this.overloaded(tokenSha256, 'no TokenReview slot became free in time');
      this.m.reviews.inc({ result: 'error' });
      const info = e instanceof CaError ? { code: undefined, message: e.message } : kubeErrorInfo(e);
      const detail = scrub(`${info.code !== undefined ? `${info.code}: ` : ''}${info.message}`, token);
      const hint = info.code === 403 ? ' (meshca needs "create" on tokenreviews.authentication.k8s.io)' : '';
      this.opts.log.error({ reason: 'review-failed', tokenSha256, err: detail + hint }, 'auth: TokenReview failed');
      this.failures.inc({ reason: 'token-review-failed' });
      // Not cached: the next call asks again. Retryable: the token may well be fine.
      throw new CaError('UNAUTHENTICATED', 'cannot verify the bearer token: TokenReview failed; retry later', { retryable: true, detail: detail + hint });
    } finally {
      if (sentAt !== undefined) this.m.latency.observe(Number(process.hrtime.bigint() - sentAt) / 1e9);
    }
    const out = interpretTokenReview(status, this.opts.audience);
    const now = this.opts.clock.nowMs();
    let entry: CacheEntry;
    if (out.ok) {
      this.m.reviews.inc({ result: 'ok' });
      const spiffeId = parseWorkloadId(`spiffe://${this.opts.trustDomain}/ns/${out.namespace}/sa/${out.serviceAccount}`, this.opts.trustDomain).uri;
      const exp = jwtExpiryMs(token);
      const expiresMs = Math.min(now + this.opts.cacheTtlSeconds * 1000, exp ?? Infinity);
      entry = { ok: true, caller: { spiffeId, via: 'k8s-token' }, expiresMs };
      this.opts.log.debug({ caller: spiffeId, tokenSha256: key.slice(0, 12) }, 'auth: bearer token accepted');
    } else {
      this.m.reviews.inc({ result: out.reason });
      if (out.logDetail) this.opts.log.warn({ reason: out.reason, tokenSha256: key.slice(0, 12), err: scrub(out.logDetail, token) }, 'auth: TokenReview refused the token');
      entry = { ok: false, reason: out.reason, message: out.message, expiresMs: now + this.opts.negativeCacheTtlSeconds * 1000 };
    }
    if (entry.expiresMs > now) this.remember(key, entry, now);
    return entry;
  }

  private remember(key: string, entry: CacheEntry, now: number): void {
    this.cache.delete(key);
    this.cache.set(key, entry);
    if (this.cache.size <= this.opts.cacheSize) return;
    for (const [k, v] of this.cache) {
      if (v.expiresMs <= now) this.cache.delete(k);
    }
    while (this.cache.size > this.opts.cacheSize) {
      const oldest = this.cache.keys().next().value as string;
      this.cache.delete(oldest);
    }
  }

  /** Counts and logs a token refused for lack of TokenReview capacity; the caller sees UNAVAILABLE (retryable). */
  private overloaded(tokenSha256: string, why: string): CaError {
    this.failures.inc({ reason: 'token-review-overloaded' });
    this.opts.log.warn({ reason: 'review-overloaded', tokenSha256, running: this.limit.active, waiting: this.limit.waiting }, `auth: ${why}; token refused for now`);
    return new CaError('UNAVAILABLE', 'cannot verify the bearer token now: too many TokenReviews pending; retry', { retryable: true });
  }

  private withTimeout<T>(p: Promise<T>): Promise<T> {
    const ms = this.opts.reviewTimeoutMs ?? 10_000;
    return new Promise<T>((resolve, reject) => {
      const t = this.opts.clock.setTimer(() => reject(new CaError('UNAVAILABLE', `TokenReview took longer than ${ms} ms`)), ms);
      p.then(
        (v) => {
          t.cancel();
          resolve(v);
        },
        (e) => {
          t.cancel();
          reject(e);
        },
      );
    });
  }

  private refuse(reason: TokenFailure, message: string, key: string | undefined): never {
    this.failures.inc({ reason: `token-${reason}` });
    this.opts.log.warn({ reason, ...(key ? { tokenSha256: key.slice(0, 12) } : {}), err: message }, 'auth: bearer token refused');
    throw new CaError('UNAUTHENTICATED', message);
  }
}

/** Removes the token (and anything JWT-shaped) from text that is about to be logged. */
function scrub(text: string, token: string): string {
  let out = token ? text.split(token).join('[token]') : text;
  out = out.replace(/eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g, '[jwt]');
  return out;
}

export interface TokenAuthenticatorDeps {
  readonly trustDomain: string;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Registry;
  /** A ready KubeConfig (tests); wins over cfg.kubeconfig. */
  readonly kubeConfig?: KubeConfig;
}

/**
 * Builds the authenticator from `auth.kubernetesTokens`, or returns undefined when it is disabled. Connects to the
 * API server configured by `kubeconfig` (empty = in-cluster).
 */
export async function createTokenAuthenticator(cfg: KubernetesTokensConfig, deps: TokenAuthenticatorDeps): Promise<TokenReviewAuthenticator | undefined> {
  if (!cfg.enabled) return undefined;
  const kube = await connectKube({
    component: 'auth.kubernetesTokens',
    configKey: 'auth.kubernetesTokens.kubeconfig',
    ...(cfg.kubeconfig ? { kubeconfig: cfg.kubeconfig } : {}),
    ...(deps.kubeConfig ? { kubeConfig: deps.kubeConfig } : {}),
  });
  deps.log.info({ audience: cfg.audience, server: kube.server }, 'auth: Kubernetes ServiceAccount tokens accepted (TokenReview)');
  return new TokenReviewAuthenticator({
    trustDomain: deps.trustDomain,
    audience: cfg.audience,
    reviewer: kubeTokenReviewer(kube),
    maxConcurrentReviews: cfg.maxConcurrentReviews,
    cacheTtlSeconds: cfg.cacheTtl,
    negativeCacheTtlSeconds: cfg.negativeCacheTtl,
    cacheSize: cfg.cacheSize,
    clock: deps.clock,
    log: deps.log,
    metrics: deps.metrics,
  });
}
