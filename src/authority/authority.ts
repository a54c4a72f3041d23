import { createHash, type KeyObject } from 'node:crypto';
import { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { AuthorityBackend } from '../../providers/types.js';
import type { StateStore } from '../store/types.js';
import type { Clock, Timer } from '../util/clock.js';
import { CaError, errorMessage, failedPrecondition, invalidArgument, unavailable } from '../util/errors.js';
import { formatDuration } from '../util/duration.js';
import { parseWorkloadId } from '../identity/spiffe-id.js';
import { chainToPem, toPem } from '../x509/pem.js';
import { generateKeyPair, keyTypeOf, privateKeyToPkcs8Pem } from '../x509/keys.js';
import { createCaCsr } from '../x509/ca-certs.js';
import { createLeafCsr } from '../x509/leaf-csr.js';
import { checkSvidProfile } from '../x509/validate.js';
import { isDnsName } from '../x509/profile.js';
import { certSerialHex, commonNameOf, parseCertificate, sanOf } from '../x509/cert-parse.js';
import { BackendAnchors } from './backend-anchors.js';
import { issuedInProcessBy } from '../x509/provenance.js';
import type { LeafSignerPool } from '../x509/signer-pool.js';
import type { KeyType } from '../x509/types.js';
import type { ParsedCsr } from '../x509/csr.js';
import { nextDecisionAtMs, nextStep, renewAtMs } from './rotation.js';
import {
  AUTHORITY_KEY,
  decodeState,
  emptyState,
  encodeState,
  signingCaFrom,
  slotFrom,
  type AuthorityState,
  type Slot,
} from './state.js';
import type { Authority, AuthorityEvent, AuthorityHealth, IssueRequest, IssuedSvid, TrustBundle } from './types.js';

export interface AuthorityOptions {
  readonly trustDomain: string;
  readonly workload: {
    readonly ttlSeconds: number;
    readonly maxTtlSeconds: number;
    readonly keyType: KeyType;
    readonly renewFraction: number;
    readonly backdateSeconds: number;
  };
  /** Lifetime of meshca's own signing CA (intermediate mode). */
  readonly signingCaTtlSeconds: number;
  /** Key type of meshca's signing CA. */
  readonly caKeyType: KeyType;
}

export interface AuthorityDeps {
  readonly backend: AuthorityBackend;
  readonly store: StateStore;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Registry;
  readonly signer: LeafSignerPool;
}

/** How often a serving authority re-reads the store for changes made by other processes (issue, rotate, replicas). */
const STORE_POLL_MS = 2000;
/** Label values of meshca_ca_rotations_total{kind}. */
const ROTATION_KINDS = ['mint', 'prepare', 'activate', 'forced'] as const;
/** Retry delay after a failed rotation step (backend down): capped exponential. */
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 60_000;

function fingerprint(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

function sameRoots(a: readonly Buffer[], b: readonly Buffer[]): boolean {
  if (a.length !== b.length) return false;
  const fa = a.map(fingerprint).sort();
  const fb = b.map(fingerprint).sort();
  return fa.every((f, i) => f === fb[i]);
}

function dedupeRoots(list: readonly Buffer[]): Buffer[] {
  const seen = new Set<string>();
  const out: Buffer[] = [];
  for (const d of list) {
    const f = fingerprint(d);
    if (!seen.has(f)) {
      seen.add(f);
      out.push(d);
    }
  }
  return out;
}

/** `chainPem` of an issued SVID, encoded from its `chainDer` on every read. One function for every SVID: see below. */
function chainPemFromDer(this: { readonly chainDer: readonly Buffer[] }): string {
  return chainToPem(this.chainDer);
}

/**
 * Adds `chainPem` as an enumerable getter over `chainDer` instead of a stored string. Memory: every SDS client node
 * holds its SVID for as long as it is connected, and a stored PEM chain (leaf + signing CA, ~1.5 KB of JS heap once
 * V8 flattens it) repeats the DER kept beside it; re-encoding costs ~1 µs per read (SDS reads it once per push). The
 * getter is one shared function so every SVID keeps the same V8 hidden class; spread and JSON see a plain string.
 */
function withDerivedChainPem(svid: Omit<IssuedSvid, 'chainPem'>): IssuedSvid {
  return Object.defineProperty(svid, 'chainPem', { get: chainPemFromDer, enumerable: true }) as IssuedSvid;
}

/**
 * The CA core: holds meshca's signing CA (intermediate mode) or delegates each leaf to the backend (leaf mode),
 * rotates the signing CA on a clock-driven schedule, keeps the trust bundle (with every root that still validates a
 * live certificate), and issues X.509-SVIDs that are re-checked against the SVID profile before they leave.
 *
 * Several processes may share one store (serve + issue + rotate): every state change is a read-modify-write under
 * the store's lock, and a serving authority polls the store so it sees what the others did.
 */
export class LocalAuthority implements Authority {
  readonly trustDomain: string;
  private state: AuthorityState;
  private bundleCache: TrustBundle;
  private readonly backendAnchors: BackendAnchors;
  private readonly listeners = new Set<(ev: AuthorityEvent) => void>();
  private timer: Timer | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  /** start() was called: rotation timers are armed after every state change. */
  private started = false;
  private unwatchAnchors: (() => void) | undefined;
  private lastStoreBytes: string | undefined;
  /** State keys other than authority that existed before this process started (see mutateInner). */
  private earlierKeys: readonly string[] = [];
  private retryMs = RETRY_MIN_MS;
  private lastError: string | undefined;
  private closed = false;
  /** State changes under way; close() waits for them so no write lands after it returns. */
  private readonly inflight = new Set<Promise<unknown>>();
  /** False on HA replicas that do not hold the rotation Lease: they sign and adopt state but never rotate. */
  private rotationEnabled = true;
  /**
   * Highest `reissueGeneration` this authority has adopted; undefined until it first loads the store. Forced
   * rotations are counted from its increase (see countForced), so the first load only sets it: what the store
   * already held when this process started was counted, if at all, by the process that was running then.
   */
  private forcedSeen: number | undefined;
  private readonly m: {
    issued: Counter<'type' | 'key_type' | 'source' | 'mode'>;
    latency: Histogram<'source'>;
    clamped: Counter;
    cannotCover: Gauge;
    caNotAfter: Gauge;
    rotations: Counter<'kind'>;
    failures: Counter<'reason'>;
    bundleSeq: Gauge;
  };

  private constructor(
    private readonly opts: AuthorityOptions,
    private readonly deps: AuthorityDeps,
    initial: AuthorityState,
  ) {
    this.trustDomain = opts.trustDomain;
    this.state = initial;
    this.backendAnchors = new BackendAnchors({ mode: deps.backend.mode, leafGraceMs: opts.workload.maxTtlSeconds * 1000 });
    this.bundleCache = this.makeBundle(initial);
    const r = deps.metrics;
    this.m = {
      issued: new Counter({
        name: 'meshca_certificates_issued_total',
        help: 'Certificates issued, by type (workload leaf, serving = meshca\'s own, signing-ca) and key type',
        labelNames: ['type', 'key_type', 'source', 'mode'],
        registers: [r],
      }),
      latency: new Histogram({
        name: 'meshca_issuance_duration_seconds',
        help: 'Time to issue one leaf certificate',
        labelNames: ['source'],
        buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
        registers: [r],
      }),
      clamped: new Counter({ name: 'meshca_leaf_ttl_clamped_total', help: 'Leaves whose lifetime was cut short by the signing CA notAfter', registers: [r] }),
      cannotCover: new Gauge({
        name: 'meshca_signing_ca_cannot_cover_ttl',
        help: '1 when the active signing CA expires before a full workload.ttl (alert)',
        registers: [r],
        // Evaluated at scrape time: the CA's remaining life shrinks between state changes.
        collect: () => this.updateCannotCover(),
      }),
      caNotAfter: new Gauge({ name: 'meshca_signing_ca_not_after_seconds', help: 'notAfter of the active signing CA, unix seconds', registers: [r] }),
      rotations: new Counter({ name: 'meshca_ca_rotations_total', help: 'Signing CA rotation steps', labelNames: ['kind'], registers: [r] }),
      failures: new Counter({ name: 'meshca_issuance_failures_total', help: 'Failed issuances', labelNames: ['reason'], registers: [r] }),
      bundleSeq: new Gauge({ name: 'meshca_trust_bundle_sequence', help: 'Sequence number of the current trust bundle', registers: [r] }),
    };
    // Every kind is listed at 0 from the start (README "Metrics"), so a scrape before the first rotation shows them.
    for (const kind of ROTATION_KINDS) this.m.rotations.inc({ kind }, 0);
  }

  /**
   * Loads the CA state, initialising it on first start (an empty store), and brings it up to date (mints a
   * signing CA if none is usable). Corrupt or partial state throws FAILED_PRECONDITION.
   */
  static async create(opts: AuthorityOptions, deps: AuthorityDeps): Promise<LocalAuthority> {
    // What the store held before this start (the backend's init may add its own keys, such as a new root).
    const earlier = (await deps.store.list()).filter((k) => k !== AUTHORITY_KEY);
    await deps.backend.init();
    const a = new LocalAuthority(opts, deps, emptyState(opts.trustDomain, deps.backend.name));
    a.earlierKeys = earlier;
    await a.reconcile();
    return a;
  }

  /**
   * Starts the rotation timer and, for stores that cannot be watched (dataDir), a poll of the store (serve).
   * A watchable store (the Kubernetes Secret) is followed by whoever watches it (reload()). One-shot CLI commands
   * do not call start().
   */
  start(): void {
    this.started = true;
    this.schedule();
    if (!this.deps.store.watch) {
      this.pollTimer = setInterval(() => {
        void this.pollStore();
      }, STORE_POLL_MS);
      this.pollTimer.unref();
    }
    this.unwatchAnchors = this.deps.backend.watchTrustAnchors?.(() => {
      void this.reconcile().catch((e) => this.deps.log.error({ err: errorMessage(e) }, 'trust anchor update failed'));
    });
  }

  /**
   * Turns the clock-driven rotation work on or off (HA on Kubernetes: only the replica holding the Lease rotates;
   * every replica keeps signing and adopting the shared state). Turning it on runs an overdue step at once.
   */
  setRotationEnabled(on: boolean): void {
    this.rotationEnabled = on;
    if (!on) {
      this.timer?.cancel();
      this.timer = undefined;
    } else if (this.started) {
      this.schedule();
    }
  }

  /** Re-reads the store now and adopts what another process or replica wrote (HA: called on Secret watch events). */
  async reload(): Promise<void> {
    await this.pollStore();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.timer?.cancel();
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.unwatchAnchors?.();
    await Promise.allSettled([...this.inflight]);
    this.listeners.clear();
  }

  bundle(): TrustBundle {
    return this.bundleCache;
  }

  onEvent(listener: (ev: AuthorityEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  health(): AuthorityHealth {
    const b = this.deps.backend.health();
    const now = this.deps.clock.nowMs();
    if (this.deps.backend.mode === 'intermediate') {
      const a = this.state.active;
      if (!a || now >= a.notAfterMs) return { ready: false, reason: this.lastError ?? 'no valid signing CA' };
    }
    if (!b.ok) return { ready: this.deps.backend.mode === 'intermediate', reason: b.reason ?? `${this.deps.backend.name}: unavailable` };
    if (this.lastError) return { ready: true, reason: `degraded: ${this.lastError}` };
    return { ready: true };
  }

  /** The active signing CA (intermediate mode), for inspection and tests. */
  activeSigningCa(): Slot | undefined {
    return this.state.active;
  }

  async issue(req: IssueRequest): Promise<IssuedSvid> {
    const started = process.hrtime.bigint();
    const source = req.source ?? 'api';
    try {
      const svid = await this.issueInner(req);
      this.m.issued.inc({ type: source === 'serving' ? 'serving' : 'workload', key_type: svid.keyType, source, mode: this.deps.backend.mode });
      this.m.latency.observe({ source }, Number(process.hrtime.bigint() - started) / 1e9);
      return svid;
    } catch (e) {
      this.m.failures.inc({ reason: e instanceof CaError ? e.code : 'INTERNAL' });
      throw e;
    }
  }

  private async issueInner(req: IssueRequest): Promise<IssuedSvid> {
    const w = this.opts.workload;
    const id = parseWorkloadId(req.spiffeId, this.trustDomain).uri;
    const ttl = req.ttlSeconds ?? w.ttlSeconds;
    if (!(ttl > 0)) throw invalidArgument(`ttl must be positive (got ${ttl}s)`);
    if (ttl > w.maxTtlSeconds) {
      throw invalidArgument(`requested ttl ${formatDuration(ttl)} is longer than workload.maxTtl ${formatDuration(w.maxTtlSeconds)}`);
    }
    const dnsNames = req.dnsNames ?? [];
    const ips = req.ipAddresses ?? [];
    for (const d of dnsNames) {
      if (!isDnsName(d)) {
        throw invalidArgument(`invalid DNS name "${d}"`);
      }
    }
    const nowMs = this.deps.clock.nowMs();
    if (this.deps.backend.mode === 'leaf') return this.issueViaBackend(req, id, ttl, dnsNames, nowMs);

    const slot = this.state.active;
    if (!slot || nowMs >= slot.notAfterMs) {
      throw unavailable(`no valid signing CA${this.lastError ? ` (${this.lastError})` : ''}`);
    }
    let notAfterMs = nowMs + ttl * 1000;
    if (notAfterMs > slot.notAfterMs) {
      notAfterMs = slot.notAfterMs;
      this.m.clamped.inc();
    }
    const notBefore = new Date(Math.max(nowMs - w.backdateSeconds * 1000, slot.notBeforeMs));
    const notAfter = new Date(notAfterMs);
    let certDer: Buffer;
    let privateKeyPem: string | undefined;
    let keyType: KeyType | 'caller';
    if (req.publicKey) {
      keyType = keyTypeOf(req.publicKey) ?? 'caller';
      certDer = await this.deps.signer.sign({ spiffeId: id, dnsNames, ipAddresses: ips, publicKey: req.publicKey, notBefore, notAfter });
    } else {
      keyType = req.keyType ?? w.keyType;
      const r = await this.deps.signer.signWithNewKey({ spiffeId: id, dnsNames, ipAddresses: ips, notBefore, notAfter, keyType });
      certDer = r.certDer;
      privateKeyPem = r.privateKeyPkcs8Pem;
    }
    // Every leaf is re-parsed and checked against the SVID profile before it leaves meshca: by the signer pool on
    // the thread that signed it when the pool was built with our trust domain, otherwise here.
    if (!this.deps.signer.checksProfile) checkSvidProfile(certDer, { trustDomain: this.trustDomain, issuerCertDer: slot.ca.certDer });
    // The signer may have raced a rotation: the leaf must come from the CA whose chain we attach.
    const signedBy = issuedInProcessBy(certDer);
    if (signedBy !== undefined && !signedBy.equals(slot.ca.certDer)) throw new CaError('UNAVAILABLE', 'signing CA changed during issuance; retry', { retryable: true });
    const chainDer = [certDer, slot.ca.certDer, ...slot.ca.chainDer];
    return withDerivedChainPem({
      spiffeId: id,
      chainDer,
      ...(privateKeyPem !== undefined ? { privateKeyPem } : {}),
      keyType,
      serialHex: certSerialHex(certDer),
      notBefore,
      notAfter,
      renewAt: new Date(renewAtMs(nowMs, notAfterMs, w.renewFraction, Math.random())),
      caGeneration: slot.generation,
    });
  }

  /** Leaf mode: the backend signs a CSR for every leaf. */
  private async issueViaBackend(req: IssueRequest, id: string, ttl: number, dnsNames: readonly string[], nowMs: number): Promise<IssuedSvid> {
    const backend = this.deps.backend;
    if (!backend.signLeaf) throw new CaError('INTERNAL', `${backend.name}: leaf mode without signLeaf`);
    let publicKey: KeyObject;
    let csr: { der: Buffer; pem: string };
    let privateKeyPem: string | undefined;
    let keyType: KeyType | 'caller';
    if (req.publicKey && req.csrDer) {
      publicKey = req.publicKey;
      csr = { der: req.csrDer, pem: toPem(req.csrDer, 'CERTIFICATE REQUEST') };
      keyType = keyTypeOf(publicKey) ?? 'caller';
    } else if (req.publicKey) {
      throw invalidArgument(`${backend.name} signs CSRs in leaf mode: send a CSR, not a bare public key`);
    } else {
      keyType = req.keyType ?? this.opts.workload.keyType;
      const kp = generateKeyPair(keyType);
      publicKey = kp.publicKey;
      csr = await createLeafCsr({ key: kp, spiffeId: id, dnsNames });
      privateKeyPem = privateKeyToPkcs8Pem(kp.privateKey);
    }
    const out = await backend.signLeaf({ csrDer: csr.der, csrPem: csr.pem, publicKey, spiffeId: id, dnsNames, ttlSeconds: ttl });
    const leaf = out.chain[0];
    if (!leaf) throw new CaError('INTERNAL', `${backend.name}: returned an empty chain`);
    const x = new X509Certificate(leaf);
    if (!x.publicKey.equals(publicKey)) throw new CaError('INTERNAL', `${backend.name}: returned a certificate for a different key`);
    checkSvidProfile(leaf, { trustDomain: this.trustDomain, ...(out.chain[1] ? { issuerCertDer: out.chain[1] } : {}) });
    checkLeafNames(backend.name, leaf, id, dnsNames);
    await this.noteAnchors(out.roots);
    const notBefore = new Date(x.validFrom);
    const notAfter = new Date(x.validTo);
    return withDerivedChainPem({
      spiffeId: id,
      chainDer: out.chain,
      ...(privateKeyPem !== undefined ? { privateKeyPem } : {}),
      keyType,
      serialHex: x.serialNumber,
      notBefore,
      notAfter,
      renewAt: new Date(renewAtMs(nowMs, notAfter.getTime(), this.opts.workload.renewFraction, Math.random())),
      caGeneration: this.state.generation,
    });
  }

  /** Leaf mode: roots learned from a signing response join the bundle. */
  private async noteAnchors(roots: readonly Buffer[]): Promise<void> {
    if (this.backendAnchors.note(roots)) await this.reconcile();
  }

  parseCsr(input: string | Buffer): Promise<ParsedCsr> {
    return this.deps.signer.parseCsr(input);
  }

  async rotate(opts: { root?: boolean } = {}): Promise<void> {
    if (opts.root) {
      if (!this.deps.backend.rotateRoot) throw new CaError('UNIMPLEMENTED', `${this.deps.backend.name}: root rotation is not supported by this backend`);
      await this.deps.backend.rotateRoot();
    }
    await this.mutate(async (s, now) => {
      let next = s;
      if (this.deps.backend.mode === 'intermediate') {
        const slot = await this.mintSlot(s.generation + 1);
        next = {
          ...s,
          active: slot,
          next: undefined,
          retired: [...(s.active ? [s.active] : []), ...(s.next ? [s.next] : []), ...s.retired].filter((r) => r.notAfterMs > now),
          generation: slot.generation,
        };
      }
      // Counted as kind="forced" by adopt(), in this process and in a running server that adopts it later.
      return { ...next, reissueGeneration: s.reissueGeneration + 1 };
    });
  }

  /** Re-reads the store and applies every due rotation step; emits events for what changed. */
  async reconcile(): Promise<void> {
    await this.mutate(async (s, now) => this.applyRotation(s, now));
  }

  private async applyRotation(s: AuthorityState, now: number): Promise<AuthorityState> {
    if (this.deps.backend.mode !== 'intermediate') return s;
    let cur = s;
    for (let i = 0; i < 3; i++) {
      const step = nextStep(now, cur.active, cur.next);
      if (step === 'none') break;
      if (step === 'mint-active') {
        const slot = await this.mintSlot(cur.generation + 1);
        // A prepared next that is still here has expired too (else this would be activate-next): drop it, so the new
        // active gets a fresh successor at its half life instead of "activating" the expired one at 5/6.
        cur = { ...cur, active: slot, next: undefined, retired: cur.active ? [cur.active, ...cur.retired] : cur.retired, generation: slot.generation };
        this.m.rotations.inc({ kind: 'mint' });
        this.deps.log.info({ generation: slot.generation, notAfter: slot.ca.notAfter.toISOString() }, 'signing CA minted and active');
      } else if (step === 'prepare-next') {
        const slot = await this.mintSlot(cur.generation + 1);
        cur = { ...cur, next: slot, generation: slot.generation };
        this.m.rotations.inc({ kind: 'prepare' });
        this.deps.log.info({ generation: slot.generation }, 'next signing CA prepared');
      } else {
        cur = { ...cur, active: cur.next, next: undefined, retired: cur.active ? [cur.active, ...cur.retired] : cur.retired };
        this.m.rotations.inc({ kind: 'activate' });
        this.deps.log.info({ generation: cur.active?.generation }, 'next signing CA activated');
      }
    }
    return { ...cur, retired: cur.retired.filter((r) => r.notAfterMs > now) };
  }

  private async mintSlot(generation: number): Promise<Slot> {
    const backend = this.deps.backend;
    if (!backend.mintIntermediate) throw new CaError('INTERNAL', `${backend.name}: intermediate mode without mintIntermediate`);
    const kp = generateKeyPair(this.opts.caKeyType);
    const csr = await createCaCsr({ key: kp, trustDomain: this.trustDomain });
    const out = await backend.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: kp.publicKey, ttlSeconds: this.opts.signingCaTtlSeconds });
    const [certDer, ...chainDer] = out.chain;
    if (!certDer) throw new CaError('INTERNAL', `${backend.name}: returned an empty chain`);
    const x = new X509Certificate(certDer);
    if (!x.publicKey.equals(kp.publicKey)) throw new CaError('INTERNAL', `${backend.name}: signed a different key than the one meshca sent`);
    if (!x.ca) throw new CaError('INTERNAL', `${backend.name}: returned a signing certificate that is not a CA`);
    if (out.roots.length === 0) throw new CaError('INTERNAL', `${backend.name}: returned no trust anchors`);
    this.m.issued.inc({ type: 'signing-ca', key_type: this.opts.caKeyType, source: 'rotation', mode: backend.mode });
    return slotFrom(generation, signingCaFrom(certDer, chainDer, kp.privateKey), out.roots);
  }

  /**
   * Read-modify-write under the store lock: load (or start empty on first start), let fn decide, refresh the
   * bundle, persist when anything changed, then adopt the result and emit events.
   */
  private async mutate(fn: (s: AuthorityState, nowMs: number) => Promise<AuthorityState>): Promise<void> {
    const p = this.mutateInner(fn);
    this.inflight.add(p);
    try {
      await p;
    } finally {
      this.inflight.delete(p);
    }
  }

  private async mutateInner(fn: (s: AuthorityState, nowMs: number) => Promise<AuthorityState>): Promise<void> {
    const store = this.deps.store;
    const result = await store.withLock(async () => {
      const raw = await store.read(AUTHORITY_KEY);
      // Empty state only on first start: state this authority already loaded or wrote must not vanish silently.
      if (!raw && this.lastStoreBytes !== undefined) {
        throw failedPrecondition(
          `${store.location}: ${AUTHORITY_KEY}.json disappeared while meshca was using it; refusing to start a new CA state — restore it from backup`,
        );
      }
      if (!raw && this.earlierKeys.length > 0) {
        // Not a first start: the rest of the CA state is there (a crash between the first writes, or a deleted
        // file). Starting the signing CAs afresh is safe, since the backend's trust anchors are unchanged, but it
        // should not pass unnoticed.
        this.deps.log.warn(
          { location: store.location, found: this.earlierKeys },
          `${store.location} holds CA state but no ${AUTHORITY_KEY}.json: starting new signing-CA state under the existing trust anchors (certificates issued before still chain to them)`,
        );
        this.earlierKeys = [];
      }
      const loaded = raw ? decodeState(raw, store.location) : emptyState(this.trustDomain, this.deps.backend.name);
      if (loaded.trustDomain !== this.trustDomain) {
        throw failedPrecondition(
          `${store.location} holds CA state for trust domain "${loaded.trustDomain}", but trustDomain is "${this.trustDomain}"; use another dataDir`,
        );
      }
      if (loaded.backend !== this.deps.backend.name) {
        throw failedPrecondition(
          `${store.location} holds CA state made by the "${loaded.backend}" backend, but authority.type is "${this.deps.backend.name}"; use another dataDir`,
        );
      }
      const now = this.deps.clock.nowMs();
      let next = await fn(loaded, now);
      this.backendAnchors.adoptStored(loaded.bundleRootsDer, now);
      this.backendAnchors.publish(await this.deps.backend.trustAnchors(), now);
      const roots = this.computeRoots(next, now);
      if (!sameRoots(roots, next.bundleRootsDer)) {
        next = { ...next, bundleRootsDer: roots, bundleSequence: next.bundleSequence + 1 };
      }
      const bytes = encodeState(next);
      if (!raw || !bytes.equals(raw)) await store.write(AUTHORITY_KEY, bytes);
      this.lastStoreBytes = bytes.toString('utf8');
      return next;
    });
    this.adopt(result);
  }

  /** Anchors of every slot that can still validate a live certificate, plus the backend's current anchors. */
  private computeRoots(s: AuthorityState, now: number): Buffer[] {
    const slots = [s.active, s.next, ...s.retired].filter((x): x is Slot => !!x && x.notAfterMs > now);
    const fromSlots = slots.flatMap((x) => x.rootsDer);
    return dedupeRoots([...fromSlots, ...this.backendAnchors.live(now)]);
  }

  private adopt(next: AuthorityState): void {
    const prev = this.state;
    this.state = next;
    this.countForced(next);
    if (next.active) {
      this.deps.signer.setCa(next.active.ca);
      this.m.caNotAfter.set(next.active.notAfterMs / 1000);
      this.updateCannotCover();
    }
    const events: AuthorityEvent[] = [];
    if (next.bundleSequence !== this.bundleCache.sequence || next.bundleSequence !== prev.bundleSequence) {
      this.bundleCache = this.makeBundle(next);
      this.m.bundleSeq.set(next.bundleSequence);
      events.push({ type: 'bundle', bundle: this.bundleCache });
    }
    if ((next.active?.generation ?? 0) !== (prev.active?.generation ?? 0)) {
      events.push({ type: 'signing-ca', generation: next.active?.generation ?? 0 });
    }
    if (next.reissueGeneration !== prev.reissueGeneration && prev.generation !== 0) {
      events.push({ type: 'reissue-all', generation: next.reissueGeneration });
    }
    // Bundle first, so peers trust a new root before any leaf signed under it reaches them.
    for (const ev of events) {
      for (const l of this.listeners) {
        try {
          l(ev);
        } catch (e) {
          this.deps.log.error({ err: errorMessage(e), event: ev.type }, 'authority listener failed');
        }
      }
    }
    if (!this.closed && this.started) this.schedule();
  }

  /**
   * Counts meshca_ca_rotations_total{kind="forced"} for the rotations in `next` this authority has not adopted before.
   * `meshca rotate` runs in its own short-lived process whose registry is never scraped, so the running server counts
   * the rotation here, when it adopts the state (store poll, Secret watch, or its own read-modify-write), whichever
   * path sees it first; the high-water mark makes each one count once even if a stale read is adopted in between.
   * The stored `reissueGeneration` is the count: rotate() bumps it and nothing else does. Leaf mode has no signing CA
   * of meshca's own (rotate() only re-issues leaves, and the root with --root), so it counts nothing, as before. On HA
   * replicas only the Lease holder counts, as it alone counts the scheduled steps, so a sum over replicas counts each
   * rotation once.
   */
  private countForced(next: AuthorityState): void {
    const seen = this.forcedSeen;
    this.forcedSeen = Math.max(seen ?? 0, next.reissueGeneration);
    if (seen === undefined || next.reissueGeneration <= seen) return;
    if (this.deps.backend.mode === 'intermediate' && this.rotationEnabled) {
      this.m.rotations.inc({ kind: 'forced' }, next.reissueGeneration - seen);
    }
  }

  private updateCannotCover(): void {
    const a = this.state.active;
    if (!a) return;
    const left = a.notAfterMs - this.deps.clock.nowMs();
    this.m.cannotCover.set(left < this.opts.workload.ttlSeconds * 1000 ? 1 : 0);
  }

  private makeBundle(s: AuthorityState): TrustBundle {
    return {
      trustDomain: this.trustDomain,
      rootsDer: s.bundleRootsDer,
      pem: chainToPem(s.bundleRootsDer),
      sequence: s.bundleSequence,
    };
  }

  private schedule(): void {
    this.timer?.cancel();
    if (this.closed || !this.rotationEnabled) return;
    const s = this.state;
    const now = this.deps.clock.nowMs();
    const candidates = [nextDecisionAtMs(s.active, s.next), ...s.retired.map((r) => r.notAfterMs + 1000)].filter(
      (t): t is number => t !== undefined,
    );
    // Backend anchors leave the bundle when they expire or, withdrawn in leaf mode, when their grace ends (the roots of
    // a slot leave with the slot, whose expiry is already a candidate).
    const anchorsChangeAt = this.backendAnchors.nextChangeAtMs(now);
    if (anchorsChangeAt !== undefined) candidates.push(anchorsChangeAt + 1000);
    if (this.deps.backend.mode === 'intermediate' && !s.active) candidates.push(now);
    if (candidates.length === 0) return;
    const at = Math.min(...candidates);
    this.timer = this.deps.clock.setTimer(() => void this.tick(), Math.max(0, at - now));
  }

  private async tick(): Promise<void> {
    try {
      await this.reconcile();
      this.lastError = undefined;
      this.retryMs = RETRY_MIN_MS;
    } catch (e) {
      this.lastError = errorMessage(e);
      this.deps.log.error({ err: this.lastError }, 'signing CA rotation failed; will retry');
      const delay = Math.min(this.retryMs, RETRY_MAX_MS) * (0.8 + 0.4 * Math.random());
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      this.timer?.cancel();
      if (!this.closed && this.rotationEnabled) this.timer = this.deps.clock.setTimer(() => void this.tick(), delay);
    }
  }

  /** Picks up changes other processes wrote (meshca issue / rotate, other replicas). */
  private async pollStore(): Promise<void> {
    if (this.closed) return;
    try {
      const raw = await this.deps.store.read(AUTHORITY_KEY);
      if (!raw || raw.toString('utf8') === this.lastStoreBytes) return;
      this.lastStoreBytes = raw.toString('utf8');
      this.adopt(decodeState(raw, this.deps.store.location));
    } catch (e) {
      this.deps.log.error({ err: errorMessage(e) }, 'cannot re-read CA state');
    }
  }
}

/**
 * Leaf mode: the backend signs the caller's own CSR, and some copy its SANs (Vault with use_csr_sans, cert-manager's
 * CA issuer, some Kubernetes signers). A leaf must name exactly what was authorised, the SPIFFE ID and the allowed
 * DNS names, so a caller cannot slip a host name or an IP it chose into its certificate through its CSR.
 */
function checkLeafNames(backendName: string, leafDer: Buffer, spiffeId: string, dnsNames: readonly string[]): void {
  const parsed = parseCertificate(leafDer);
  const san = sanOf(parsed);
  // A CN is a host name to verifiers that fall back to it when a certificate has no DNS SAN.
  const cn = parsed.subjectEmpty ? undefined : commonNameOf(parsed.subject);
  const extra = [
    ...(cn !== undefined ? [`subject CN=${cn}`] : []),
    ...(san?.uris ?? []).filter((u) => u !== spiffeId).map((u) => `URI:${u}`),
    ...(san?.dnsNames ?? []).filter((d) => !dnsNames.some((a) => a.toLowerCase() === d.toLowerCase())).map((d) => `DNS:${d}`),
    ...(san?.ipAddresses ?? []).map((ip) => `IP:${ip}`),
    ...(san?.emails ?? []).map((e) => `email:${e}`),
    ...((san?.other ?? 0) > 0 ? [`${san!.other} other name(s)`] : []),
  ];
  if (extra.length > 0) {
    throw new CaError(
      'FAILED_PRECONDITION',
      `${backendName}: the signed leaf for ${spiffeId} carries names meshca did not authorise (${extra.join(', ')}); ` +
        'they came from the CSR: send a CSR with only the SPIFFE ID (and no CN), and configure the backend to take names from the request (Vault: use_csr_sans=false, use_csr_common_name=false)',
    );
  }
}
