import type { Clock } from '../../src/util/clock.js';
import { CaError } from '../../src/util/errors.js';

/**
 * What went wrong with one Vault HTTP call, reduced to what meshca decides on. Built from node-vault's
 * ApiResponseError (err.response.{statusCode, body.errors}) or from an axios transport error (err.code). Only
 * Vault's own `errors[]` text and transport error codes are kept: never the request, its headers (the token) or
 * its body (the CSR, secret_id, JWT).
 */
export interface VaultFailure {
  readonly kind: 'http' | 'timeout' | 'connection' | 'tls' | 'aborted';
  /** HTTP status for kind "http". */
  readonly status?: number;
  /** Vault's errors[] (http), or the transport error code (ECONNREFUSED, ...). */
  readonly errors: readonly string[];
}

const RETRYABLE_STATUS = new Set([412, 429, 472, 473, 500, 502, 503, 504]);
const TLS_CODES = /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME|DEPTH_ZERO/;

/** Reads a thrown value from node-vault into a VaultFailure without keeping any request data. */
export function toVaultFailure(e: unknown): VaultFailure {
  const err = e as { response?: { statusCode?: unknown; body?: unknown }; code?: unknown; name?: unknown; message?: unknown };
  if (err && typeof err === 'object' && err.response && typeof err.response.statusCode === 'number') {
    const body = err.response.body as { errors?: unknown } | undefined;
    const errors = Array.isArray(body?.errors) ? body!.errors.map((x) => cleanVaultText(String(x))).filter(Boolean) : [];
    return { kind: 'http', status: err.response.statusCode, errors };
  }
  const code = typeof err?.code === 'string' ? err.code : '';
  if (code === 'ERR_CANCELED' || err?.name === 'AbortError' || err?.name === 'CanceledError') return { kind: 'aborted', errors: ['request cancelled'] };
  if (code === 'ECONNABORTED' || code === 'ETIMEDOUT' || /timeout/i.test(String(err?.message ?? ''))) return { kind: 'timeout', errors: [code || 'timeout'] };
  if (TLS_CODES.test(code)) return { kind: 'tls', errors: [code] };
  return { kind: 'connection', errors: [code || 'connection failed'] };
}

/** Vault wraps multi-errors as "1 error occurred:\n\t* text\n\n"; keep the text. */
export function cleanVaultText(s: string): string {
  const m = /^\d+ errors? occurred:\s*([\s\S]*)$/.exec(s.trim());
  const body = m ? m[1]! : s;
  return body
    .split('\n')
    .map((l) => l.replace(/^\s*\*\s*/, '').trim())
    .filter(Boolean)
    .join('; ');
}

/** True for the failures the brief and Vault's docs call transient: 5xx, 429, 472/473, 412, timeouts, connection errors. */
export function isRetryable(f: VaultFailure): boolean {
  if (f.kind === 'timeout' || f.kind === 'connection') return true;
  if (f.kind === 'http') return RETRYABLE_STATUS.has(f.status!) || (f.status! >= 500 && f.status !== 501);
  return false;
}

/** The short reason /readyz shows while Vault is unavailable, e.g. "vault: sealed". */
export function unavailableReason(f: VaultFailure): string {
  const text = f.errors.join('; ');
  if (f.kind === 'http') {
    if (f.status === 503 && /sealed/i.test(text)) return 'vault: sealed';
    if (f.status === 429 || f.status === 472 || f.status === 473) return `vault: standby or rate limited (${f.status})${text ? `: ${text}` : ''}`;
    if (f.status === 412) return 'vault: eventual-consistency miss (412)';
    return `vault: server error ${f.status}${text ? `: ${text}` : ''}`;
  }
  if (f.kind === 'timeout') return 'vault: request timed out';
  if (f.kind === 'tls') return `vault: TLS verification failed (${text}); check authority.vault.tls`;
  return `vault: unreachable (${text})`;
}

export interface RetryPolicy {
  /** Total tries including the first. */
  readonly attempts: number;
  readonly baseMs: number;
  readonly maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseMs: 250, maxMs: 8000 };

/** Full-jitter capped exponential backoff: a random delay in [d/2, d] with d = min(max, base * 2^attempt). */
export function backoffMs(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const d = Math.min(policy.maxMs, policy.baseMs * 2 ** attempt);
  return Math.round(d / 2 + (random() * d) / 2);
}

/** Sleeps on the given clock; rejects with an aborted CaError when the signal fires. */
export function clockSleep(clock: Clock): (ms: number, signal?: AbortSignal) => Promise<void> {
  return (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new CaError('UNAVAILABLE', 'vault: request cancelled', { retryable: false }));
        return;
      }
      const onAbort = (): void => {
        timer.cancel();
        reject(new CaError('UNAVAILABLE', 'vault: request cancelled', { retryable: false }));
      };
      const timer = clock.setTimer(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
}

export interface RetryDeps {
  readonly policy: RetryPolicy;
  readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly random?: () => number;
  readonly signal?: AbortSignal;
  /** Called before each backoff sleep with the failure and the delay chosen. */
  readonly onRetry?: (f: VaultFailure, attempt: number, delayMs: number) => void;
}

/**
 * Runs fn, retrying transient Vault failures with backoff. fn throws raw node-vault errors (or a CaError, which is
 * passed through untouched). Resolves with fn's value, or rejects with the last VaultFailure wrapped in
 * RetryExhausted (transient) or NonRetryable (4xx, TLS), for the caller to turn into a CaError with context.
 */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, deps: RetryDeps): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (e instanceof CaError || e instanceof VaultCallError) throw e;
      const f = toVaultFailure(e);
      if (f.kind === 'aborted' || deps.signal?.aborted) throw new CaError('UNAVAILABLE', 'vault: request cancelled', { retryable: false });
      if (!isRetryable(f)) throw new VaultCallError(f, false);
      if (attempt + 1 >= deps.policy.attempts) throw new VaultCallError(f, true, attempt + 1);
      const delay = backoffMs(deps.policy, attempt, deps.random);
      deps.onRetry?.(f, attempt, delay);
      await deps.sleep(delay, deps.signal);
    }
  }
}

/** A failed Vault call after retry decisions; `exhausted` = transient failure that outlived the retries. */
export class VaultCallError extends Error {
  constructor(
    readonly failure: VaultFailure,
    readonly exhausted: boolean,
    /** Tries made, when known. */
    readonly attempts?: number,
  ) {
    super(`vault call failed (${failure.kind}${failure.status ? ` ${failure.status}` : ''})`);
    this.name = 'VaultCallError';
  }
}
