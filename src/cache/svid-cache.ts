import { X509Certificate, createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Authority, AuthorityEvent, IssuedSvid } from '../authority/types.js';
import type { Clock, Timer } from '../util/clock.js';
import { CaError, errorMessage } from '../util/errors.js';

/**
 * Live X.509-SVIDs for SDS clients: one key pair + SVID per (caller, node id, SPIFFE ID), shared by that node's
 * streams and never across nodes or callers. Contract:
 * - subscribe() registers a listener and returns the current SVID (issuing one if there is none, it expired, or it
 *   is due; concurrent first subscribers share one issuance).
 * - while an entry has subscribers a Clock timer renews it at svid.renewAt (the authority already jittered that) and
 *   every listener is called with the new SVID; a failed renewal retries with capped backoff while listeners keep
 *   the still-valid certificate.
 * - when the last subscriber leaves the entry (SVID, key, timer) is dropped at once.
 * - handleAuthorityEvent() is called by the owner AFTER it pushed new validation contexts (bundle first, leaves second):
 *   'reissue-all' re-issues every entry now; 'signing-ca' re-issues entries whose chain no longer leads to a trust
 *   anchor of the current bundle (other leaves move to the new CA at their normal renewAt); 'bundle' alone re-issues
 *   nothing (the new CA does not sign yet).
 */
export type RenewReason = 'renewal' | 'reissue';

export type SvidListener = (svid: IssuedSvid, reason: RenewReason) => void;

export interface SvidSubscription {
  /** The SVID to serve now (never expired at resolution time). Rejects with CaError when issuance failed. */
  readonly current: Promise<IssuedSvid>;
  /** Stops listening; idempotent. */
  close(): void;
}

export interface SvidCacheOptions {
  readonly authority: Authority;
  readonly clock: Clock;
  readonly log: Logger;
  /** Issuances started concurrently for reissue-all / CA change (spreads the load instead of a thundering herd). */
  readonly reissueConcurrency?: number;
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /** Called for each issuance attempt result (metrics hook). */
  readonly onIssued?: (svid: IssuedSvid, reason: 'initial' | RenewReason) => void;
}

interface Entry {
  readonly key: string;
  readonly nodeId: string;
  readonly spiffeId: string;
  svid: IssuedSvid | undefined;
  inflight: Promise<IssuedSvid> | undefined;
  readonly listeners: Set<Subscription>;
  timer: Timer | undefined;
  retryMs: number;
}

/**
 * One subscribe() call. A class rather than closures: the SDS server holds one per certificate stream, and the
 * wrapper, close function and their contexts cost ~200 bytes per stream.
 */
class Subscription implements SvidSubscription {
  /** Set by subscribe() right after the subscription joined its entry. */
  current!: Promise<IssuedSvid>;
  private closed = false;

  constructor(
    private readonly cache: SvidCache,
    readonly entry: Entry,
    readonly listener: SvidListener,
  ) {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.cache.unsubscribe(this);
  }
}

const SEP = '\u0000';

export class SvidCache {
  private readonly entries = new Map<string, Entry>();
  private readonly concurrency: number;
  private readonly retryMin: number;
  private readonly retryMax: number;

  constructor(private readonly opts: SvidCacheOptions) {
    this.concurrency = opts.reissueConcurrency ?? 256;
    this.retryMin = opts.retryMinMs ?? 1000;
    this.retryMax = opts.retryMaxMs ?? 60_000;
  }

  /** Number of live entries (for tests and the leak check). */
  get size(): number {
    return this.entries.size;
  }

  /** Total subscribers over all entries. */
  listenerCount(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.listeners.size;
    return n;
  }

  /** Earliest notAfter of any SVID currently served, or undefined. */
  nearestExpiry(): Date | undefined {
    let min: number | undefined;
    for (const e of this.entries.values()) {
      const t = e.svid?.notAfter.getTime();
      if (t !== undefined && (min === undefined || t < min)) min = t;
    }
    return min === undefined ? undefined : new Date(min);
  }

  /**
   * `caller` is the authenticated SPIFFE ID of the client: node.id is the client's own claim, so an entry is keyed
   * by caller too and another caller naming the same node.id (a controller allowed the identity) never gets the key.
   */
  subscribe(caller: string, nodeId: string, spiffeId: string, listener: SvidListener): SvidSubscription {
    const key = caller + SEP + nodeId + SEP + spiffeId;
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { key, nodeId, spiffeId, svid: undefined, inflight: undefined, listeners: new Set(), timer: undefined, retryMs: this.retryMin };
      this.entries.set(key, entry);
    }
    // Each subscription is its own object in the set, so the same function can subscribe twice.
    const sub = new Subscription(this, entry, listener);
    entry.listeners.add(sub);
    sub.current = this.currentOf(entry);
    // A rejected `current` must not become an unhandled rejection when the caller closes before awaiting it.
    sub.current.catch(() => undefined);
    return sub;
  }

  /** For Subscription.close() only: the entry is dropped with its last subscriber. */
  unsubscribe(sub: Subscription): void {
    const e = sub.entry;
    e.listeners.delete(sub);
    if (e.listeners.size === 0) this.release(e);
  }

  /** See the class comment for the ordering contract. */
  handleAuthorityEvent(ev: AuthorityEvent): void {
    if (ev.type === 'reissue-all') {
      void this.reissue([...this.entries.values()], 'reissue');
      return;
    }
    // A 'bundle' event comes BEFORE the new CA signs (a root is trusted before it is used), so re-issuing then would
    // mint leaves from the outgoing CA; stale leaves are replaced on the 'signing-ca' event that follows.
    if (ev.type !== 'signing-ca') return;
    const anchors = this.opts.authority.bundle().rootsDer.map((d) => new X509Certificate(d));
    const verdict = new Map<string, boolean>();
    const trusted = (svid: IssuedSvid): boolean => {
      const top = svid.chainDer[svid.chainDer.length - 1]!;
      const fp = createHash('sha256').update(top).digest('hex');
      let ok = verdict.get(fp);
      if (ok === undefined) {
        ok = chainsTo(top, anchors);
        verdict.set(fp, ok);
      }
      return ok;
    };
    const stale: Entry[] = [];
    for (const e of this.entries.values()) {
      // An issuance in flight (first one included) may have started with the outgoing CA: judge its result.
      if (e.inflight || (e.svid && !trusted(e.svid))) stale.push(e);
    }
    if (stale.length > 0) {
      this.opts.log.info({ event: ev.type, entries: stale.length }, 'sds cache: re-issuing leaves whose CA left the trust bundle');
      void this.reissue(stale, 'reissue', (svid) => !trusted(svid));
    }
  }

  /** Drops every entry and timer (server shutdown). */
  close(): void {
    for (const e of this.entries.values()) e.timer?.cancel();
    this.entries.clear();
  }

  private release(e: Entry): void {
    e.timer?.cancel();
    e.timer = undefined;
    if (this.entries.get(e.key) === e) this.entries.delete(e.key);
  }

  private live(e: Entry): boolean {
    return this.entries.get(e.key) === e;
  }

  private currentOf(e: Entry): Promise<IssuedSvid> {
    const now = this.opts.clock.nowMs();
    const s = e.svid;
    if (s && s.notAfter.getTime() > now) {
      // Due but not renewed yet (the timer is about to fire or a retry is pending): serve it, renewal will push.
      return Promise.resolve(s);
    }
    return this.issue(e, s ? 'renewal' : 'initial');
  }

  /** One issuance per entry at a time; later callers share it. */
  private issue(e: Entry, reason: 'initial' | RenewReason): Promise<IssuedSvid> {
    if (e.inflight) return e.inflight;
    const started = this.opts.authority.issue({ spiffeId: e.spiffeId, source: 'sds' });
    const p = started.then(
      (svid) => {
        e.inflight = undefined;
        if (!this.live(e)) return svid;
        const previous = e.svid;
        e.svid = svid;
        e.retryMs = this.retryMin;
        this.opts.onIssued?.(svid, reason);
        this.schedule(e);
        if (previous && reason !== 'initial') {
          for (const l of [...e.listeners]) {
            try {
              l.listener(svid, reason);
            } catch (err) {
              this.opts.log.error({ err: errorMessage(err) }, 'sds cache: listener failed');
            }
          }
        }
        return svid;
      },
      (err: unknown) => {
        e.inflight = undefined;
        const still = e.svid && e.svid.notAfter.getTime() > this.opts.clock.nowMs();
        this.opts.log.warn(
          { spiffeId: e.spiffeId, node: e.nodeId, err: errorMessage(err), retryInMs: e.retryMs, servingOld: Boolean(still) },
          'sds cache: issuance failed',
        );
        if (this.live(e) && e.svid) this.retry(e);
        else if (this.live(e) && e.listeners.size === 0) this.release(e);
        throw err instanceof CaError ? err : new CaError('UNAVAILABLE', `could not issue a certificate for ${e.spiffeId}`, { cause: err });
      },
    );
    e.inflight = p;
    return p;
  }

  private schedule(e: Entry): void {
    e.timer?.cancel();
    const svid = e.svid!;
    const delay = Math.max(0, svid.renewAt.getTime() - this.opts.clock.nowMs());
    e.timer = this.opts.clock.setTimer(() => {
      e.timer = undefined;
      if (this.live(e)) void this.issue(e, 'renewal').catch(() => undefined);
    }, delay);
  }

  private retry(e: Entry): void {
    e.timer?.cancel();
    const delay = e.retryMs;
    e.retryMs = Math.min(this.retryMax, e.retryMs * 2);
    e.timer = this.opts.clock.setTimer(() => {
      e.timer = undefined;
      if (this.live(e)) void this.issue(e, 'renewal').catch(() => undefined);
    }, delay);
  }

  /** Re-issues entries with bounded concurrency; each success is pushed to its listeners by issue(). */
  private async reissue(list: Entry[], reason: RenewReason, needed?: (svid: IssuedSvid) => boolean): Promise<void> {
    let i = 0;
    const worker = async (): Promise<void> => {
      while (i < list.length) {
        const e = list[i++]!;
        if (!this.live(e) || (!e.svid && !e.inflight)) continue;
        // An issuance already in flight (a first one too) may have started before the event (old CA): wait, then
        // issue again.
        if (e.inflight) await e.inflight.catch(() => undefined);
        if (!this.live(e) || !e.svid || (needed && !needed(e.svid))) continue;
        await this.issue(e, reason).catch(() => undefined);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, list.length) }, worker));
  }
}

/** True when `certDer` is one of `anchors` or is signed by one of them. */
function chainsTo(certDer: Buffer, anchors: readonly X509Certificate[]): boolean {
  const cert = new X509Certificate(certDer);
  for (const a of anchors) {
    if (a.raw.equals(cert.raw)) return true;
    if (cert.checkIssued(a) && cert.verify(a.publicKey)) return true;
  }
  return false;
}
