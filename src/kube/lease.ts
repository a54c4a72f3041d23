import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type * as K8s from '@kubernetes/client-node';
import { Gauge, type Registry } from 'prom-client';
import { registered } from '../telemetry/metrics.js';
import type { Clock, Timer } from '../util/clock.js';
import { errorMessage } from '../util/errors.js';
import type { StateStore } from '../store/types.js';
import { requestWithSignal, type Kube } from './client.js';
import { isAlreadyExists, isConflict, isNotFound, kubeErrorInfo } from './errors.js';

/**
 * Leader election with a `coordination.k8s.io/v1` Lease, following client-go's leaderelection:
 * - a candidate takes the Lease only when it is free (no holder) or expired, and expiry is judged by OUR clock:
 *   the time we first saw the current record plus leaseDurationSeconds (never the holder's renewTime, so clock skew
 *   between nodes does not matter);
 * - the leader renews every retryPeriod (default 1/3 of the duration) and steps down when it could not renew for
 *   renewDeadline (default 2/3 of the duration), before any candidate may take over;
 * - every write is an update with the read resourceVersion, so two candidates never both win (409 for the loser);
 * - acquireTime/renewTime are sent as V1MicroTime (a plain Date is sent with 3 fractional digits and refused).
 *
 * Leadership is an efficiency device (one replica does rotation work and calls the backend), not the safety net:
 * the state store's conditional writes keep shared state consistent even if two replicas briefly both lead.
 */

export interface LeaseElectorOptions {
  readonly kube: Kube;
  readonly namespace: string;
  readonly name: string;
  /** holderIdentity; default `<hostname>_<random>`. */
  readonly identity?: string;
  readonly leaseDurationSeconds: number;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics?: Registry;
  /** Period of renewals (leader) and attempts (candidate), ms. Default 1/3 of the duration. */
  readonly retryPeriodMs?: number;
  /** A leader that could not renew for this long stops leading, ms. Default 2/3 of the duration. */
  readonly renewDeadlineMs?: number;
}

export class LeaseElector {
  readonly identity: string;
  private readonly api: K8s.CoordinationV1Api;
  private readonly durationMs: number;
  private readonly retryMs: number;
  private readonly deadlineMs: number;
  private readonly listeners = new Set<(leader: boolean) => void>();
  private leader = false;
  private running = false;
  private timer: Timer | undefined;
  private inflight: Promise<void> = Promise.resolve();
  /** The record last seen and when (our clock) we first saw it: the basis of expiry. */
  private observed: { key: string; atMs: number; holder: string } | undefined;
  private lastRenewMs = 0;
  private readonly gauge: Gauge | undefined;

  constructor(private readonly o: LeaseElectorOptions) {
    this.identity = o.identity || `${hostname()}_${randomBytes(4).toString('hex')}`;
    this.api = o.kube.coordination();
    this.durationMs = o.leaseDurationSeconds * 1000;
    this.retryMs = o.retryPeriodMs ?? this.durationMs / 3;
    this.deadlineMs = o.renewDeadlineMs ?? (this.durationMs * 2) / 3;
    if (!(this.deadlineMs < this.durationMs && this.retryMs < this.deadlineMs)) {
      throw new Error(`lease: retryPeriod (${this.retryMs} ms) < renewDeadline (${this.deadlineMs} ms) < duration (${this.durationMs} ms) is required`);
    }
    if (o.metrics) {
      const metrics = o.metrics;
      this.gauge = registered(metrics, 'meshca_rotation_leader', () => new Gauge({ name: 'meshca_rotation_leader', help: '1 while this replica holds the rotation Lease', registers: [metrics] }));
      this.gauge.set(0);
    }
  }

  /** Starts competing for the Lease (first attempt at once). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.runCycle();
  }

  /**
   * Stops competing. With release (default), a leader hands the Lease back (empty holder) so another replica takes
   * over at once instead of after the duration. Listeners hear `false` if we were leading.
   */
  async stop(opts: { release?: boolean } = {}): Promise<void> {
    this.running = false;
    this.timer?.cancel();
    this.timer = undefined;
    await this.inflight;
    if (this.leader && opts.release !== false) {
      try {
        const lease = await this.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace }, this.deadline());
        if (lease.spec?.holderIdentity === this.identity) {
          const now = this.o.clock.nowMs();
          await this.api.replaceNamespacedLease({
            name: this.o.name,
            namespace: this.o.namespace,
            body: {
              ...lease,
              spec: { ...microTimes(this.o.kube, lease.spec), holderIdentity: '', leaseDurationSeconds: 1, renewTime: new this.o.kube.k8s.V1MicroTime(now) },
            },
          }, this.deadline());
        }
      } catch (e) {
        this.o.log.warn({ err: kubeErrorInfo(e).message, lease: this.where() }, 'lease: could not release the Lease; it expires by itself');
      }
    }
    this.setLeader(false);
  }

  isLeader(): boolean {
    return this.leader;
  }

  /** Last observed holder ('' when free, undefined before the first read). */
  holder(): string | undefined {
    return this.observed?.holder;
  }

  /** Calls cb(true) when this replica becomes leader and cb(false) when it stops. No replay: read isLeader(). */
  onChange(cb: (leader: boolean) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  /** Resolves when no attempt is in flight (tests step a manual clock and wait for this). */
  whenIdle(): Promise<void> {
    return this.inflight;
  }

  // ------------------------------------------------------------------ internals

  /**
   * Each Lease request may take one retry period at most: a stalled API server then ends in a failed attempt (and,
   * past renewDeadline, a step-down) instead of holding the election loop, or a shutdown's release, for minutes.
   */
  private deadline(): K8s.ConfigurationOptions {
    return requestWithSignal(this.o.kube, AbortSignal.timeout(this.retryMs));
  }

  private where(): string {
    return `${this.o.namespace}/${this.o.name}`;
  }

  private runCycle(): void {
    if (!this.running) return;
    this.inflight = this.cycle()
      .catch((e) => this.o.log.error({ err: errorMessage(e), lease: this.where() }, 'lease: election attempt crashed'))
      .finally(() => {
        if (!this.running) return;
        const wait = this.leader ? this.retryMs : this.retryMs * (1 + 0.2 * Math.random());
        this.timer = this.o.clock.setTimer(() => this.runCycle(), wait);
      });
  }

  private async cycle(): Promise<void> {
    const now = this.o.clock.nowMs();
    const k8s = this.o.kube.k8s;
    let lease: K8s.V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace }, this.deadline());
    } catch (e) {
      if (!isNotFound(e)) return this.failed('read', e, now);
      try {
        const created = await this.api.createNamespacedLease({
          namespace: this.o.namespace,
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name: this.o.name, namespace: this.o.namespace, labels: { 'app.kubernetes.io/managed-by': 'meshca' } },
            spec: {
              holderIdentity: this.identity,
              leaseDurationSeconds: this.o.leaseDurationSeconds,
              acquireTime: new k8s.V1MicroTime(now),
              renewTime: new k8s.V1MicroTime(now),
              leaseTransitions: 0,
            },
          },
        }, this.deadline());
        this.observe(created, now);
        this.lastRenewMs = now;
        this.setLeader(true);
      } catch (e2) {
        if (isAlreadyExists(e2)) return; // another replica created it first; look again next period
        this.failed('create', e2, now);
      }
      return;
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    this.observe(lease, now);
    const durMs = (spec.leaseDurationSeconds ?? this.o.leaseDurationSeconds) * 1000;
    if (holder !== '' && holder !== this.identity && now < this.observed!.atMs + durMs) {
      this.setLeader(false);
      return;
    }
    if (holder !== this.identity && this.leader) this.setLeader(false);
    const mine = holder === this.identity;
    const body: K8s.V1Lease = {
      ...lease,
      spec: {
        holderIdentity: this.identity,
        leaseDurationSeconds: this.o.leaseDurationSeconds,
        acquireTime: mine && spec.acquireTime ? new k8s.V1MicroTime(new Date(spec.acquireTime).getTime()) : new k8s.V1MicroTime(now),
        renewTime: new k8s.V1MicroTime(now),
        leaseTransitions: mine ? spec.leaseTransitions ?? 0 : (spec.leaseTransitions ?? 0) + 1,
      },
    };
    try {
      const out = await this.api.replaceNamespacedLease({ name: this.o.name, namespace: this.o.namespace, body }, this.deadline());
      this.observe(out, now);
      this.lastRenewMs = now;
      if (!mine) this.o.log.info({ lease: this.where(), previous: holder || undefined, identity: this.identity }, 'lease: acquired the rotation Lease');
      this.setLeader(true);
    } catch (e) {
      if (isConflict(e)) {
        // Someone else wrote it between our read and update: they won this round.
        this.setLeader(false);
        return;
      }
      this.failed('update', e, now);
    }
  }

  private observe(lease: K8s.V1Lease, now: number): void {
    const s = lease.spec ?? {};
    const key = `${s.holderIdentity ?? ''}|${s.renewTime ? new Date(s.renewTime).getTime() : ''}|${s.leaseDurationSeconds ?? ''}|${s.leaseTransitions ?? ''}`;
    if (this.observed?.key !== key) this.observed = { key, atMs: now, holder: s.holderIdentity ?? '' };
  }

  private failed(action: string, e: unknown, now: number): void {
    const info = kubeErrorInfo(e);
    const hint = info.code === 403 ? ' (meshca needs get, create and update on leases.coordination.k8s.io)' : '';
    this.o.log.warn({ err: `${info.code ?? ''} ${info.message}${hint}`.trim(), lease: this.where(), action }, 'lease: API call failed');
    if (this.leader && now - this.lastRenewMs >= this.deadlineMs) {
      this.o.log.warn({ lease: this.where() }, 'lease: could not renew within the deadline; stepping down');
      this.setLeader(false);
    }
  }

  private setLeader(on: boolean): void {
    if (this.leader === on) return;
    this.leader = on;
    this.gauge?.set(on ? 1 : 0);
    if (!on) this.o.log.info({ lease: this.where(), identity: this.identity }, 'lease: not leading');
    for (const l of [...this.listeners]) {
      try {
        l(on);
      } catch (e) {
        this.o.log.error({ err: errorMessage(e) }, 'lease: leadership listener failed');
      }
    }
  }
}

/** Re-wraps a Lease spec's times as V1MicroTime so that re-sending them keeps six fractional digits. */
function microTimes(kube: Kube, spec: K8s.V1LeaseSpec | undefined): K8s.V1LeaseSpec {
  const s = { ...(spec ?? {}) };
  if (s.acquireTime) s.acquireTime = new kube.k8s.V1MicroTime(new Date(s.acquireTime).getTime());
  if (s.renewTime) s.renewTime = new kube.k8s.V1MicroTime(new Date(s.renewTime).getTime());
  return s;
}

/** What the HA coordinator needs from the authority (LocalAuthority implements it). */
export interface HaAuthority {
  /** Starts timers and the store poll (serve). */
  start(): void;
  setRotationEnabled(on: boolean): void;
  reload(): Promise<void>;
}

export interface HaCoordinatorOptions {
  readonly store: StateStore;
  readonly elector: LeaseElector;
  readonly authority: HaAuthority;
  readonly log: Logger;
}

export interface HaCoordinator {
  /** Stops following the store and competing for the Lease (releasing it if held). */
  stop(opts?: { release?: boolean }): Promise<void>;
}

/**
 * Wires HA on Kubernetes for one replica: the authority serves and signs at once (no leader in the issuance path),
 * adopts every change another replica writes to the shared store (store watch → reload), and does rotation work only
 * while this replica holds the Lease. Call after LocalAuthority.create() (which already loaded the shared state), in
 * place of authority.start().
 */
export function createHaCoordinator(o: HaCoordinatorOptions): HaCoordinator {
  o.authority.setRotationEnabled(false);
  o.authority.start();
  const unwatch = o.store.watch?.(() => {
    o.authority.reload().catch((e) => o.log.error({ err: errorMessage(e) }, 'ha: reload after a state change failed'));
  });
  if (!unwatch) o.log.warn({ store: o.store.location }, 'ha: the state store cannot be watched; replicas rely on polling');
  const off = o.elector.onChange((leader) => {
    o.log.info({ leader, identity: o.elector.identity }, leader ? 'ha: leading rotation' : 'ha: following (rotation off)');
    o.authority.setRotationEnabled(leader);
  });
  o.elector.start();
  return {
    async stop(opts = {}) {
      off();
      unwatch?.();
      o.authority.setRotationEnabled(false);
      await o.elector.stop(opts);
    },
  };
}
