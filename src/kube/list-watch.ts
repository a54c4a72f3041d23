import type { Logger } from 'pino';
import type { Clock, Timer } from '../util/clock.js';
import { CaError, errorMessage } from '../util/errors.js';
import type { Kube } from './client.js';
import { isRetryableKubeError, kubeCaError, kubeErrorInfo } from './errors.js';

/** A Kubernetes object as JSON. Only metadata is interpreted here. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
}

export interface ListResult<T> {
  readonly items: T[];
  readonly resourceVersion: string;
}

export interface ListWatchOptions<T extends KubeObject> {
  readonly kube: Kube;
  /** Collection path for the watch, e.g. `/apis/cert-manager.io/v1/namespaces/meshca/certificaterequests`. */
  readonly path: string;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** Lists the same collection with the same selectors (the caller picks the typed or custom-object call). */
  list(): Promise<ListResult<T>>;
  readonly clock: Clock;
  readonly log?: Logger;
  /** Called after every (re-)list and after every event, with the current objects by `namespace/name`. */
  onChange(items: ReadonlyMap<string, T>): void;
  /** Called on every failed list or watch; `attempt` counts consecutive failures from 1. */
  onError?(err: unknown, attempt: number): void;
  /** Backoff between failed attempts: initial delay, doubled up to max. Defaults 500 ms, 30 s. */
  readonly backoffMs?: { readonly initial: number; readonly max: number };
  /** Server-side watch timeout; the watch is then resumed from the last resourceVersion. Default 300 s. */
  readonly watchTimeoutSeconds?: number;
}

/** A watch that ends cleanly sooner than this (Clock time) without any event counts as a failure. */
const SHORT_WATCH_MS = 1000;

const key = (o: KubeObject): string => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

/**
 * List, then watch from the list's resourceVersion, keeping a cache of the objects and calling onChange on every
 * change. A watch that ends (server timeout, dropped connection) is resumed from the last resourceVersion seen
 * (bookmarks included); a 410 Gone / Expired (an ERROR event or the watch request's HTTP status) means our
 * resourceVersion is too old, so we re-list at once. If the watch after that re-list is refused with 410 again
 * before it delivered anything, the next re-lists back off (and are reported through onError) instead of looping;
 * a watch that ends cleanly within a second without any event is a failure too (backoff, onError).
 * Failures back off with the Clock. Runs until stop().
 */
export class ListWatch<T extends KubeObject> {
  private stopped = false;
  private cache = new Map<string, T>();
  private controller: AbortController | undefined;
  private sleepTimer: { timer: Timer; wake: () => void } | undefined;
  private failures = 0;
  /** 410s in a row from watches that delivered nothing; from the second on, re-lists back off. */
  private goneInARow = 0;
  private running: Promise<void> | undefined;

  constructor(private readonly o: ListWatchOptions<T>) {}

  start(): void {
    this.running ??= this.run().catch((e) => this.o.log?.error({ err: errorMessage(e) }, 'kube list-watch loop crashed'));
  }

  /** Stops listing and watching; no callback runs after this returns. */
  stop(): void {
    this.stopped = true;
    this.controller?.abort();
    if (this.sleepTimer) {
      this.sleepTimer.timer.cancel();
      this.sleepTimer.wake();
    }
  }

  /** Objects seen so far, by `namespace/name`. */
  items(): ReadonlyMap<string, T> {
    return this.cache;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      let rv: string;
      try {
        const l = await this.o.list();
        if (this.stopped) return;
        this.cache = new Map(l.items.map((i) => [key(i), i]));
        rv = l.resourceVersion;
        this.failures = 0;
        this.o.onChange(this.cache);
      } catch (e) {
        if (this.stopped) return;
        await this.fail(e);
        continue;
      }
      for (;;) {
        if (this.stopped) return;
        const r = await this.watchOnce(rv);
        if (this.stopped) return;
        if (r.rv) rv = r.rv;
        if (r.progress) this.goneInARow = 0;
        if (r.relist) {
          if (++this.goneInARow > 1) {
            this.o.onError?.(r.gone, this.goneInARow - 1);
            await this.sleep(this.backoff(this.goneInARow - 1));
          }
          break;
        }
        if (r.error !== undefined) await this.fail(r.error);
      }
    }
  }

  private async fail(e: unknown): Promise<void> {
    this.failures++;
    this.o.onError?.(e, this.failures);
    await this.sleep(this.backoff(this.failures));
  }

  /** Delay before attempt `n + 1` after `n` consecutive failures. */
  private backoff(n: number): number {
    const b = this.o.backoffMs ?? { initial: 500, max: 30_000 };
    return Math.min(b.max, b.initial * 2 ** Math.min(n - 1, 20));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopped) return resolve();
      const wake = (): void => {
        this.sleepTimer = undefined;
        resolve();
      };
      this.sleepTimer = { timer: this.o.clock.setTimer(wake, ms), wake };
    });
  }

  /**
   * One watch request. Resolves when it ends: relist (with the 410 as `gone`) on 410, error on failure, neither on a
   * clean end; `progress` when it delivered an object or bookmark.
   */
  private watchOnce(fromRv: string): Promise<{ rv?: string; relist?: boolean; gone?: unknown; error?: unknown; progress: boolean }> {
    const timeoutSeconds = this.o.watchTimeoutSeconds ?? 300;
    return new Promise((resolve) => {
      let rv = fromRv;
      let settled = false;
      let relist = false;
      let eventError: unknown;
      let gone: unknown;
      let gotData = false;
      let progress = false;
      const openedMs = this.o.clock.nowMs();
      // A watch over a half-open connection never ends by itself; give up a little after the server should have.
      const guard = this.o.clock.setTimer(() => this.controller?.abort(), (timeoutSeconds + 30) * 1000);
      const finish = (error?: unknown): void => {
        if (settled) return;
        settled = true;
        guard.cancel();
        if (gotData) this.failures = 0;
        // A watch that ends cleanly at once without delivering anything (a proxy or server cutting streams) is a
        // failure, so it is retried with backoff instead of being re-opened in a loop.
        if (!relist && error === undefined && eventError === undefined && !gotData && !this.stopped && this.o.clock.nowMs() - openedMs < SHORT_WATCH_MS) {
          error = new CaError('UNAVAILABLE', `watch of ${this.o.path} ended at once without delivering anything (is a proxy or the API server closing watches?)`, { retryable: true });
        }
        resolve({ rv, relist, progress, ...(relist ? { gone } : eventError !== undefined ? { error: eventError } : error ? { error } : {}) });
      };
      const query: Record<string, string | number | boolean> = { resourceVersion: rv, allowWatchBookmarks: true, timeoutSeconds };
      if (this.o.labelSelector) query.labelSelector = this.o.labelSelector;
      if (this.o.fieldSelector) query.fieldSelector = this.o.fieldSelector;
      this.o.kube
        .watcher()
        .watch(
          this.o.path,
          query,
          (type: string, obj: T & { code?: number }) => {
            if (settled || this.stopped) return;
            gotData = true;
            if (type !== 'ERROR') progress = true;
            const objRv = obj?.metadata?.resourceVersion;
            switch (type) {
              case 'ADDED':
              case 'MODIFIED':
                this.cache.set(key(obj), obj);
                if (objRv) rv = objRv;
                this.o.onChange(this.cache);
                return;
              case 'DELETED':
                this.cache.delete(key(obj));
                if (objRv) rv = objRv;
                this.o.onChange(this.cache);
                return;
              case 'BOOKMARK':
                if (objRv) rv = objRv;
                return;
              case 'ERROR': {
                const info = kubeErrorInfo(obj);
                if (info.code === 410) {
                  relist = true;
                  gone = obj;
                } else eventError = obj;
                this.controller?.abort();
                finish();
                return;
              }
            }
          },
          (err: unknown) => {
            const aborted = err && typeof err === 'object' && (err as { name?: string }).name === 'AbortError';
            // A too-old resourceVersion may also be refused with an HTTP 410 answer instead of an ERROR event.
            if (!aborted && err && kubeErrorInfo(err).code === 410) {
              relist = true;
              gone = err;
            }
            finish(aborted ? undefined : err ?? undefined);
          },
        )
        .then(
          (c) => {
            this.controller = c;
            if (this.stopped || settled) c.abort();
          },
          (e) => finish(e),
        );
    });
  }
}

export interface WatchUntilOptions<T extends KubeObject, R> extends Omit<ListWatchOptions<T>, 'onChange' | 'onError'> {
  /**
   * Decides from the current objects: return a value to finish, undefined to keep waiting, or throw to fail
   * (the error is passed through as is).
   */
  until(items: T[]): R | undefined;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** Builds the timeout error; `lastError` is the most recent list/watch failure, if any. */
  onTimeout(lastError: unknown): Error;
  /** Prefix and action for errors that end the wait early (403, 404 of the collection, 401). */
  readonly component: string;
  readonly action: string;
}

/**
 * Watches (never polls) until `until` returns a value. API unavailability is retried with backoff until the
 * timeout (measured on the Clock); permission and configuration errors (401/403/404/400 from list or watch) end
 * the wait at once with a CaError naming them.
 */
export function watchUntil<T extends KubeObject, R>(o: WatchUntilOptions<T, R>): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    let done = false;
    let lastError: unknown;
    const finish = (f: () => void): void => {
      if (done) return;
      done = true;
      lw.stop();
      timer.cancel();
      o.signal?.removeEventListener('abort', onAbort);
      f();
    };
    const onAbort = (): void => finish(() => reject(new CaError('UNAVAILABLE', `${o.component}: ${o.action}: cancelled`, { retryable: true, cause: o.signal?.reason })));
    const lw = new ListWatch<T>({
      ...o,
      onChange: (items) => {
        if (done) return;
        let r: R | undefined;
        try {
          r = o.until([...items.values()]);
        } catch (e) {
          finish(() => reject(e));
          return;
        }
        if (r !== undefined) finish(() => resolve(r as R));
      },
      onError: (e, attempt) => {
        lastError = e;
        if (!isRetryableKubeError(e)) finish(() => reject(kubeCaError(o.component, o.action, e)));
        else o.log?.warn({ err: kubeErrorInfo(e).message, attempt }, `${o.component}: ${o.action}: API server error, retrying`);
      },
    });
    const timer = o.clock.setTimer(() => finish(() => reject(o.onTimeout(lastError))), o.timeoutMs);
    if (o.signal?.aborted) return onAbort();
    o.signal?.addEventListener('abort', onAbort, { once: true });
    lw.start();
  });
}

export interface WatchNamedOptions<T extends KubeObject, R>
  extends Omit<WatchUntilOptions<T, R>, 'fieldSelector' | 'list' | 'until' | 'onTimeout' | 'action'> {
  /** metadata.name of the one object watched. */
  readonly name: string;
  /** How errors name it, e.g. "CertificateRequest ns/meshca-abc". */
  readonly what: string;
  /** Lists the collection with this field selector (metadata.name=<name>). */
  listBySelector(fieldSelector: string): Promise<{ items?: T[]; metadata?: { resourceVersion?: string } }>;
  /** The object's outcome: a value when done, undefined while pending; throw for a terminal failure. */
  outcome(obj: T): R | undefined;
  /** Builds the timeout error from the object as last seen and the most recent list/watch failure. */
  onTimeout(last: T | undefined, lastError: unknown): Error;
}

/**
 * watchUntil for one named object (a CertificateRequest, a CertificateSigningRequest): lists and watches it by
 * `metadata.name`, and fails retryably when it disappears after having been seen (someone else deleted it).
 */
export function watchNamedUntil<T extends KubeObject, R>(o: WatchNamedOptions<T, R>): Promise<R> {
  const fieldSelector = `metadata.name=${o.name}`;
  let last: T | undefined;
  const { name, what, listBySelector, outcome, onTimeout, ...rest } = o;
  return watchUntil<T, R>({
    ...rest,
    fieldSelector,
    action: `wait for ${what}`,
    list: async () => {
      const l = await listBySelector(fieldSelector);
      return { items: l.items ?? [], resourceVersion: l.metadata?.resourceVersion ?? '' };
    },
    until: (items) => {
      const obj = items.find((i) => i.metadata?.name === name);
      if (!obj) {
        if (last) throw new CaError('UNAVAILABLE', `${o.component}: ${what} was deleted by someone else before it was issued`, { retryable: true });
        return undefined;
      }
      last = obj;
      return outcome(obj);
    },
    onTimeout: (lastError) => onTimeout(last, lastError),
  });
}
