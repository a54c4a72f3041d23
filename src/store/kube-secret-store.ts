import { AsyncLocalStorage } from 'node:async_hooks';
import type { Logger } from 'pino';
import type * as K8s from '@kubernetes/client-node';
import type { StateStore } from './types.js';
import { ReentrantMutex } from './mutex.js';
import type { KubernetesStateConfig } from './config.js';
import { SystemClock, type Clock } from '../util/clock.js';
import { CaError, errorMessage } from '../util/errors.js';
import { connectKube, type Kube, type KubeConfig } from '../kube/client.js';
import { isAlreadyExists, isConflict, isNotFound, kubeCaError, kubeErrorInfo } from '../kube/errors.js';
import { ListWatch, type KubeObject } from '../kube/list-watch.js';

/**
 * CA state in ONE Kubernetes Secret, shared by every meshca replica: key `k` is the data entry `k.json`.
 *
 * Concurrency (why withLock is safe without a lock object): withLock(fn) is an optimistic transaction, the pattern
 * Kubernetes controllers use (retry on conflict). fn runs against a fresh GET of the Secret; its reads see that
 * snapshot plus its own writes, and its writes are buffered. When fn returns, all of them are committed in one PUT
 * carrying the snapshot's resourceVersion, so the API server applies it only if nobody wrote the Secret in
 * between. On 409 Conflict the buffered writes are thrown away and fn runs again against a new snapshot. So a
 * read-decide-write can never be based on stale state and no update is lost, several keys change atomically, and
 * a crashed replica leaves nothing locked. The price: fn may run more than once, so its only durable effect must be
 * store writes. meshca's callers (authority reconcile/rotate, internal backend) satisfy that; a backend call made
 * inside fn (minting an intermediate) may be repeated on a conflict, and the discarded result is never published
 * because it never reaches the state. Conflicts are rare: rotation work is done by the Lease holder only
 * (src/kube/lease.ts). Within one process, withLock calls are also serialised (no self-conflicts) and re-entrant
 * along one async chain (a backend called by the authority joins the authority's transaction).
 *
 * The Secret is created on first start, annotated `meshca.io/state: v1`; a Secret without that annotation, of
 * another type, or with entries that are not `<key>.json` is refused (FAILED_PRECONDITION), never overwritten.
 */

export const STATE_ANNOTATION = 'meshca.io/state';
const STATE_FORMAT = 'v1';
const KEY_RE = /^[a-z0-9][a-z0-9-]{0,63}$/;
const ENTRY_RE = /^([a-z0-9][a-z0-9-]{0,63})\.json$/;
const DEFAULT_MAX_ATTEMPTS = 10;

export interface KubeSecretStoreOptions {
  readonly kube: Kube;
  readonly namespace: string;
  readonly name: string;
  readonly log: Logger;
  /** Time for retry backoff and the watch's timers. Default: system time (the store has no time semantics). */
  readonly clock?: Clock;
  /** Attempts of a transaction or write before giving up on conflicts. Default 10. */
  readonly maxAttempts?: number;
}

interface Snapshot {
  readonly secret: K8s.V1Secret;
  readonly data: ReadonlyMap<string, Buffer>;
}

interface Txn {
  readonly store: KubeSecretStore;
  snapshot: Snapshot;
  readonly writes: Map<string, Buffer>;
}

export class KubeSecretStore implements StateStore {
  readonly location: string;
  private readonly api: K8s.CoreV1Api;
  private readonly clock: Clock;
  private readonly mutex = new ReentrantMutex();
  private readonly txns = new AsyncLocalStorage<Txn>();
  private readonly listeners = new Set<(key: string) => void>();
  private lw: ListWatch<KubeObject> | undefined;
  /** Data as last seen (our writes, GETs, watch events), base64 by key: watch events are diffed against it. */
  private seen = new Map<string, string>();
  private closed = false;

  private constructor(private readonly o: KubeSecretStoreOptions) {
    this.location = `Secret ${o.namespace}/${o.name}`;
    this.api = o.kube.core();
    this.clock = o.clock ?? new SystemClock();
  }

  /** Opens the Secret, creating it (empty, annotated) if missing. A foreign or corrupt Secret throws. */
  static async open(o: KubeSecretStoreOptions): Promise<KubeSecretStore> {
    const s = new KubeSecretStore(o);
    let snap: Snapshot | undefined;
    try {
      snap = await s.fetch();
    } catch (e) {
      if (!(e instanceof CaError && e.code === 'NOT_FOUND')) throw e;
    }
    if (!snap) snap = await s.create();
    s.noteSeen(snap.secret);
    return s;
  }

  async read(key: string): Promise<Buffer | undefined> {
    entryName(key);
    const t = this.txn();
    if (t) return t.writes.get(key) ?? t.snapshot.data.get(key);
    return (await this.fetch()).data.get(key);
  }

  async write(key: string, value: Buffer): Promise<void> {
    entryName(key);
    const t = this.txn();
    if (t) {
      t.writes.set(key, Buffer.from(value));
      return;
    }
    // A write outside a transaction: a one-key transaction (read, set, conditional PUT, retry on conflict).
    await this.withLock(async () => this.write(key, value));
  }

  async list(): Promise<string[]> {
    const t = this.txn();
    const data = t ? t.snapshot.data : (await this.fetch()).data;
    const keys = new Set(data.keys());
    if (t) for (const k of t.writes.keys()) keys.add(k);
    return [...keys];
  }

  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    if (this.txn()) return fn();
    return this.mutex.run(async () => {
      const max = this.o.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
      for (let attempt = 1; ; attempt++) {
        const t: Txn = { store: this, snapshot: await this.fetch(), writes: new Map() };
        const result = await this.txns.run(t, fn);
        if (t.writes.size === 0) return result;
        const committed = await this.commit(t);
        if (committed) return result;
        if (attempt >= max) {
          throw new CaError('UNAVAILABLE', `${this.location}: gave up after ${max} conflicting writes (other replicas keep changing it)`, { retryable: true });
        }
        this.o.log.debug({ attempt, secret: this.location }, 'state: Secret changed under a transaction; re-running it');
        await this.sleep(Math.min(1000, 25 * 2 ** (attempt - 1)) * (0.5 + Math.random()));
      }
    });
  }

  /**
   * Calls onChange(key) when a key's value changes in the Secret by another writer (seen through a watch of the
   * Secret, re-listed after 410 Gone). The watch runs while anyone is subscribed.
   */
  watch(onChange: (key: string) => void): () => void {
    this.listeners.add(onChange);
    if (!this.lw && !this.closed) {
      const ns = this.o.namespace;
      this.lw = new ListWatch<KubeObject>({
        kube: this.o.kube,
        path: `/api/v1/namespaces/${ns}/secrets`,
        fieldSelector: `metadata.name=${this.o.name}`,
        clock: this.clock,
        log: this.o.log,
        list: async () => {
          const l = await this.api.listNamespacedSecret({ namespace: ns, fieldSelector: `metadata.name=${this.o.name}` });
          return { items: l.items as unknown as KubeObject[], resourceVersion: l.metadata?.resourceVersion ?? '' };
        },
        onChange: (items) => this.onWatched(items.get(`${ns}/${this.o.name}`)),
        onError: (e, attempt) => this.o.log.warn({ err: kubeErrorInfo(e).message, attempt, secret: this.location }, 'state: watch of the Secret failed; retrying'),
      });
      this.lw.start();
    }
    return () => {
      this.listeners.delete(onChange);
      if (this.listeners.size === 0) {
        this.lw?.stop();
        this.lw = undefined;
      }
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
    this.lw?.stop();
    this.lw = undefined;
  }

  // ------------------------------------------------------------------ internals

  private txn(): Txn | undefined {
    const t = this.txns.getStore();
    return t && t.store === this ? t : undefined;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimer(resolve, ms));
  }

  /** GET and validate. Throws NOT_FOUND (CaError) when the Secret does not exist. */
  private async fetch(): Promise<Snapshot> {
    let secret: K8s.V1Secret;
    try {
      secret = await this.api.readNamespacedSecret({ name: this.o.name, namespace: this.o.namespace });
    } catch (e) {
      if (isNotFound(e)) {
        throw new CaError('NOT_FOUND', `${this.location} does not exist (it was deleted while meshca was running?); restore it from backup, or restart meshca to start a new CA`);
      }
      throw kubeCaError(this.location, 'get', e);
    }
    return { secret, data: validateSecret(secret, this.location) };
  }

  private async create(): Promise<Snapshot> {
    const body: K8s.V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: this.o.name,
        namespace: this.o.namespace,
        annotations: { [STATE_ANNOTATION]: STATE_FORMAT },
        labels: { 'app.kubernetes.io/managed-by': 'meshca', 'app.kubernetes.io/component': 'ca-state' },
      },
      type: 'Opaque',
      data: {},
    };
    try {
      const secret = await this.api.createNamespacedSecret({ namespace: this.o.namespace, body });
      this.o.log.info({ secret: this.location }, 'state: created the CA state Secret');
      return { secret, data: validateSecret(secret, this.location) };
    } catch (e) {
      // Another replica created it first: use theirs.
      if (isAlreadyExists(e)) return this.fetch();
      throw kubeCaError(this.location, 'create', e);
    }
  }

  /** Conditional PUT of the snapshot plus the transaction's writes. False on 409 (someone wrote in between). */
  private async commit(t: Txn): Promise<boolean> {
    const data: Record<string, string> = { ...(t.snapshot.secret.data ?? {}) };
    for (const [k, v] of t.writes) data[entryName(k)] = v.toString('base64');
    const body: K8s.V1Secret = { ...t.snapshot.secret, data };
    delete body.stringData;
    try {
      const out = await this.api.replaceNamespacedSecret({ name: this.o.name, namespace: this.o.namespace, body });
      this.noteSeen(out);
      return true;
    } catch (e) {
      if (isConflict(e)) return false;
      if (isNotFound(e)) throw new CaError('FAILED_PRECONDITION', `${this.location} was deleted while meshca was running; restore it from backup, or restart meshca to start a new CA`);
      throw kubeCaError(this.location, 'update', e);
    }
  }

  private noteSeen(secret: { data?: Record<string, string> } | undefined): void {
    this.seen = new Map(Object.entries(secret?.data ?? {}).flatMap(([k, v]) => {
      const m = ENTRY_RE.exec(k);
      return m ? [[m[1]!, v] as [string, string]] : [];
    }));
  }

  private onWatched(obj: KubeObject | undefined): void {
    const data = ((obj as { data?: Record<string, string> } | undefined)?.data ?? {}) as Record<string, string>;
    if (obj) {
      try {
        validateSecret(obj as K8s.V1Secret, this.location);
      } catch (e) {
        this.o.log.error({ err: errorMessage(e), secret: this.location }, 'state: the Secret was changed into something meshca cannot use');
        return;
      }
    }
    const before = this.seen;
    this.noteSeen({ data });
    const changed = new Set<string>();
    for (const [k, v] of this.seen) if (before.get(k) !== v) changed.add(k);
    for (const k of before.keys()) if (!this.seen.has(k)) changed.add(k);
    for (const k of changed) {
      for (const l of [...this.listeners]) {
        try {
          l(k);
        } catch (e) {
          this.o.log.error({ err: errorMessage(e), key: k }, 'state: change listener failed');
        }
      }
    }
  }
}

function entryName(key: string): string {
  if (!KEY_RE.test(key)) throw new CaError('INTERNAL', `invalid state key "${key}"`);
  return `${key}.json`;
}

/** Checks that a Secret is meshca CA state and decodes its entries. Throws FAILED_PRECONDITION naming the problem. */
export function validateSecret(secret: K8s.V1Secret, location: string): Map<string, Buffer> {
  const ann = secret.metadata?.annotations?.[STATE_ANNOTATION];
  if (ann === undefined) {
    throw new CaError(
      'FAILED_PRECONDITION',
      `${location} exists but is not meshca CA state (no ${STATE_ANNOTATION} annotation); meshca will not overwrite it: set state.kubernetes.secret.name to another Secret`,
    );
  }
  if (ann !== STATE_FORMAT) {
    throw new CaError('FAILED_PRECONDITION', `${location} holds CA state in format "${ann}" (annotation ${STATE_ANNOTATION}); this meshca reads format "${STATE_FORMAT}" only`);
  }
  if ((secret.type ?? 'Opaque') !== 'Opaque') {
    throw new CaError('FAILED_PRECONDITION', `${location} has type "${secret.type}"; meshca CA state must be an Opaque Secret`);
  }
  if (secret.immutable === true) {
    throw new CaError('FAILED_PRECONDITION', `${location} is immutable; meshca must be able to update its CA state`);
  }
  const out = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(secret.data ?? {})) {
    const m = ENTRY_RE.exec(k);
    if (!m) {
      throw new CaError(
        'FAILED_PRECONDITION',
        `${location} is corrupt: unexpected entry "${k}" (meshca CA state holds only <key>.json entries); remove it or restore the Secret from backup`,
      );
    }
    out.set(m[1]!, Buffer.from(v, 'base64'));
  }
  return out;
}

export interface KubeSecretStoreDeps {
  readonly log: Logger;
  readonly clock?: Clock;
  /** A ready KubeConfig (tests); wins over cfg.kubeconfig. */
  readonly kubeConfig?: KubeConfig;
}

/** Opens the store configured by `state.kubernetes`. */
export async function openKubeSecretStore(cfg: KubernetesStateConfig, deps: KubeSecretStoreDeps): Promise<KubeSecretStore> {
  const kube = await connectKube({
    component: 'state.kubernetes',
    configKey: 'state.kubernetes.kubeconfig',
    ...(cfg.kubeconfig ? { kubeconfig: cfg.kubeconfig } : {}),
    ...(deps.kubeConfig ? { kubeConfig: deps.kubeConfig } : {}),
  });
  return KubeSecretStore.open({
    kube,
    namespace: cfg.secret.namespace,
    name: cfg.secret.name,
    log: deps.log,
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
}
