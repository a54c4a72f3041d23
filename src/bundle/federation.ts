import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { parseSpiffeId } from '../identity/spiffe-id.js';
import type { StateStore } from '../store/types.js';
import type { Clock, Timer } from '../util/clock.js';
import { CaError, errorMessage } from '../util/errors.js';
import type { FederatedTrustDomainConfig, FederationConfig } from './config.js';
import { watchFiles } from './endpoint.js';
import { BundleFetchError, fetchBundleDocument, type EndpointVerification } from './fetch.js';
import { parseSpiffeBundle, spiffeBundleJson, type ParsedSpiffeBundle } from './jwks.js';
import { counter, gauge } from '../telemetry/metrics.js';
import { pemCertificates } from './pem.js';
import type { BundleRegistry } from './registry.js';

/** SPIFFE_Federation.md: poll every spiffe_refresh_hint seconds, 5 minutes when unset. */
export const DEFAULT_REFRESH_HINT_SECONDS = 300;
/** Bounds on the hint a foreign endpoint may impose on us (no hammering, no week-long staleness). */
const MIN_REFRESH_MS = 1000;
const MAX_REFRESH_MS = 24 * 3600 * 1000;
const RETRY_MIN_MS = 1000;

export interface FederationDeps {
  readonly registry: BundleRegistry;
  readonly log: Logger;
  readonly clock: Clock;
  readonly metrics?: Registry;
  /** Where the last good copy of each fetched bundle is kept across restarts (key federationStoreKey(td)). */
  readonly store?: StateStore;
  /** Static bundle files are checked for changes this often. Default 5000 ms. */
  readonly fileCheckIntervalMs?: number;
  readonly fetchTimeoutMs?: number;
}

export interface FederationStatus {
  readonly trustDomain: string;
  readonly kind: 'endpoint' | 'file';
  readonly lastSuccess?: Date;
  readonly lastError?: string;
  readonly nextRefresh?: Date;
  readonly sequence?: number;
}

/** State-store key of a trust domain's last good bundle: lower-case, [a-z0-9-], at most 64 characters. */
export function federationStoreKey(trustDomain: string): string {
  const clean = trustDomain.replace(/[^a-z0-9-]/g, '-').slice(0, 40);
  if (clean === trustDomain) return `federation-${clean}`;
  // Sanitising may map two names to one ("a.b", "a-b"): a hash of the real name keeps keys apart.
  return `federation-${clean}-${createHash('sha256').update(trustDomain).digest('hex').slice(0, 8)}`;
}

interface Persisted {
  readonly trustDomain: string;
  readonly bundle: string;
  readonly fetchedAt: string;
  readonly url: string;
}

interface DomainState {
  readonly cfg: FederatedTrustDomainConfig;
  /** https_web: PEM from caFile. */
  caPem?: string;
  /** https_spiffe: roots from bootstrapBundleFile. */
  bootstrapRoots?: Buffer[];
  /** https_spiffe self-serving endpoint: roots of the last good bundle (undefined before the first contact). */
  lastRoots?: readonly Buffer[];
  timer?: Timer;
  retryMs: number;
  lastSuccess?: Date;
  lastError?: string;
  nextRefresh?: Date;
  inflight?: Promise<void>;
  stopWatch?: () => void;
}

/**
 * Keeps federated trust domains' bundles in the registry:
 * - endpoint domains are fetched at start and then every spiffe_refresh_hint (default 5 min); a failed fetch
 *   (network, TLS verification, HTTP status, malformed bundle) is logged with the reason, counted in
 *   meshca_federation_errors_total, retried with capped exponential backoff, and the last good bundle stays;
 * - the last good bundle is persisted (store key federationStoreKey(td)) and loaded at start, so a restart while the
 *   foreign endpoint is down still trusts the domain;
 * - https_spiffe endpoints are verified with the bootstrap bundle on first contact and with the latest fetched
 *   bundle after (a self-serving endpoint); an endpoint whose SVID is in another trust domain known to the
 *   registry is verified with that domain's bundle;
 * - static bundleFile domains are read at start (an unreadable or malformed file fails start) and re-read when the
 *   file changes (a bad new version is logged and the previous one kept).
 */
export class FederationManager {
  private readonly domains = new Map<string, DomainState>();
  private readonly log: Logger;
  private closed = false;
  private readonly m;

  constructor(
    cfg: FederationConfig,
    private readonly deps: FederationDeps,
  ) {
    this.log = deps.log.child({ component: 'federation' });
    for (const d of cfg.trustDomains) {
      if (d.trustDomain === deps.registry.ownTrustDomain) {
        throw new CaError('FAILED_PRECONDITION', `federation: trust domain "${d.trustDomain}" is this CA's own trust domain`);
      }
      this.domains.set(d.trustDomain, { cfg: d, retryMs: RETRY_MIN_MS });
    }
    deps.registry.expectFederated([...this.domains.keys()]);
    const r = deps.metrics;
    this.m = {
      refresh: counter(r, 'meshca_federation_refresh_total', 'Federated bundle refresh attempts', ['trust_domain', 'result']),
      errors: counter(r, 'meshca_federation_errors_total', 'Failed federated bundle refreshes by reason', ['trust_domain', 'reason']),
      lastSuccess: gauge(r, 'meshca_federation_last_success_timestamp_seconds', 'Unix time of the last good federated bundle', ['trust_domain']),
      sequence: gauge(r, 'meshca_federation_bundle_sequence', 'Sequence number of the federated bundle in use', ['trust_domain']),
    };
    for (const td of this.domains.keys()) for (const result of ['success', 'error']) this.m.refresh.inc({ trust_domain: td, result }, 0);
  }

  /**
   * Reads configured files and persisted bundles, then starts refreshing. Resolves before any network fetch
   * completes (use refreshNow() to wait for one). Throws FAILED_PRECONDITION for unreadable or malformed
   * configured files (bootstrapBundleFile, caFile, bundleFile).
   */
  async start(): Promise<void> {
    for (const s of this.domains.values()) {
      const c = s.cfg;
      if (c.bundleFile) {
        this.apply(c.trustDomain, await this.readStaticFile(c.bundleFile, c.trustDomain), 'federated-file');
        this.succeeded(c.trustDomain, s);
        const file = c.bundleFile;
        s.stopWatch = watchFiles([file], this.deps.fileCheckIntervalMs ?? 5000, async () => {
          let reason = 'unreadable';
          try {
            const text = await this.readStaticText(file, c.trustDomain);
            reason = 'malformed';
            this.apply(c.trustDomain, this.parseStaticFile(text, file, c.trustDomain), 'federated-file');
            this.succeeded(c.trustDomain, s);
            this.log.info({ trustDomain: c.trustDomain, file }, 'federated bundle file reloaded');
          } catch (e) {
            this.failed(c.trustDomain, s, reason, e);
            this.log.error({ trustDomain: c.trustDomain, file, reason, err: s.lastError }, 'federated bundle file is invalid; keeping the previous bundle');
          }
        });
        continue;
      }
      if (c.caFile) {
        const pem = await readText(c.caFile, `federation: caFile of ${c.trustDomain}`);
        const certs = wrapPrecondition(() => pemCertificates(pem, `federation: caFile ${c.caFile} of ${c.trustDomain}`));
        if (certs.length === 0) throw new CaError('FAILED_PRECONDITION', `federation: caFile ${c.caFile} of ${c.trustDomain} holds no certificates`);
        s.caPem = pem;
      }
      if (c.bootstrapBundleFile) {
        const parsed = await this.readStaticFile(c.bootstrapBundleFile, c.trustDomain, 'bootstrapBundleFile');
        if (parsed.x509Authorities.length === 0) {
          throw new CaError('FAILED_PRECONDITION', `federation: bootstrapBundleFile ${c.bootstrapBundleFile} of ${c.trustDomain} holds no X.509 authorities`);
        }
        s.bootstrapRoots = [...parsed.x509Authorities];
      }
      await this.loadPersisted(s);
    }
    for (const [td, s] of this.domains) {
      if (!s.cfg.bundleFile) this.schedule(td, s, 0);
    }
  }

  /** Fetches one trust domain now (waits for an in-flight fetch instead of starting a second one). */
  async refreshNow(trustDomain: string): Promise<void> {
    const s = this.domains.get(trustDomain);
    if (!s) throw new CaError('NOT_FOUND', `federation: trust domain "${trustDomain}" is not configured`);
    if (s.cfg.bundleFile) return;
    s.timer?.cancel();
    await this.refresh(trustDomain, s);
  }

  status(): FederationStatus[] {
    return [...this.domains.entries()].map(([td, s]) => ({
      trustDomain: td,
      kind: s.cfg.bundleFile ? 'file' : 'endpoint',
      ...(s.lastSuccess ? { lastSuccess: s.lastSuccess } : {}),
      ...(s.lastError ? { lastError: s.lastError } : {}),
      ...(s.nextRefresh ? { nextRefresh: s.nextRefresh } : {}),
      ...(this.deps.registry.get(td) ? { sequence: this.deps.registry.get(td)!.sequence } : {}),
    }));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const s of this.domains.values()) {
      s.timer?.cancel();
      s.stopWatch?.();
    }
    await Promise.all([...this.domains.values()].map((s) => s.inflight?.catch(() => undefined)));
  }

  private schedule(td: string, s: DomainState, delayMs: number): void {
    s.timer?.cancel();
    if (this.closed) return;
    s.nextRefresh = new Date(this.deps.clock.nowMs() + delayMs);
    s.timer = this.deps.clock.setTimer(() => void this.refresh(td, s), delayMs);
  }

  private refresh(td: string, s: DomainState): Promise<void> {
    if (s.inflight) return s.inflight;
    const run = this.refreshInner(td, s).finally(() => {
      s.inflight = undefined;
    });
    s.inflight = run;
    return run;
  }

  private async refreshInner(td: string, s: DomainState): Promise<void> {
    const url = s.cfg.bundleEndpointUrl!;
    let text: string;
    let parsed: ParsedSpiffeBundle;
    try {
      text = await fetchBundleDocument(url, this.verification(td, s), { ...(this.deps.fetchTimeoutMs ? { timeoutMs: this.deps.fetchTimeoutMs } : {}) });
      parsed = parseSpiffeBundle(text, `federation: bundle of ${td} from ${url}`);
    } catch (e) {
      const reason = e instanceof BundleFetchError ? e.kind : e instanceof CaError && e.code === 'INVALID_ARGUMENT' ? 'malformed' : 'other';
      this.fail(td, s, reason, e);
      return;
    }
    if (this.closed) return;
    for (const skip of parsed.skipped) this.log.warn({ trustDomain: td, url, entry: skip }, 'ignored an entry of a federated bundle');
    const prevSeq = this.deps.registry.get(td)?.sequence;
    if (parsed.sequence !== undefined && prevSeq !== undefined && parsed.sequence < prevSeq) {
      this.log.warn({ trustDomain: td, url, sequence: parsed.sequence, previous: prevSeq }, 'federated bundle sequence went backwards');
    }
    const changed = this.apply(td, parsed, 'federated-endpoint');
    s.lastRoots = parsed.x509Authorities;
    s.retryMs = RETRY_MIN_MS;
    this.succeeded(td, s);
    if (changed) {
      this.log.info({ trustDomain: td, url, sequence: this.deps.registry.get(td)?.sequence, roots: parsed.x509Authorities.length }, 'federated bundle updated');
      await this.persist(td, url, parsed);
    }
    const hintMs = Math.min(Math.max((parsed.refreshHintSeconds ?? DEFAULT_REFRESH_HINT_SECONDS) * 1000, MIN_REFRESH_MS), MAX_REFRESH_MS);
    this.schedule(td, s, hintMs);
  }

  /** A good bundle from the endpoint or the file: state and metrics. */
  private succeeded(td: string, s: DomainState): void {
    s.lastSuccess = this.deps.clock.now();
    s.lastError = undefined;
    this.m.refresh.inc({ trust_domain: td, result: 'success' });
    this.m.lastSuccess.set({ trust_domain: td }, s.lastSuccess.getTime() / 1000);
  }

  /** A failed refresh or file reload: state and metrics (the last good bundle stays in use). */
  private failed(td: string, s: DomainState, reason: string, e: unknown): void {
    s.lastError = errorMessage(e);
    this.m.refresh.inc({ trust_domain: td, result: 'error' });
    this.m.errors.inc({ trust_domain: td, reason });
  }

  private fail(td: string, s: DomainState, reason: string, e: unknown): void {
    this.failed(td, s, reason, e);
    const hintMs = (this.deps.registry.get(td)?.refreshHintSeconds ?? DEFAULT_REFRESH_HINT_SECONDS) * 1000;
    const delay = Math.min(s.retryMs, Math.max(hintMs, MIN_REFRESH_MS)) * (0.8 + 0.4 * Math.random());
    s.retryMs = Math.min(s.retryMs * 2, Math.max(hintMs, MIN_REFRESH_MS));
    this.log.error(
      { trustDomain: td, url: s.cfg.bundleEndpointUrl, reason, err: s.lastError, retryInMs: Math.round(delay), keeping: this.deps.registry.get(td) ? 'last good bundle' : 'nothing (no bundle yet)' },
      'federated bundle refresh failed',
    );
    this.schedule(td, s, delay);
  }

  private verification(td: string, s: DomainState): EndpointVerification {
    if (s.cfg.profile === 'https_web') return { profile: 'https_web', ...(s.caPem ? { caPem: s.caPem } : {}) };
    const spiffeId = s.cfg.endpointSpiffeId!;
    const endpointTd = parseSpiffeId(spiffeId).trustDomain;
    let roots: readonly Buffer[] | undefined;
    if (endpointTd === td) roots = s.lastRoots;
    else roots = this.deps.registry.get(endpointTd)?.rootsDer;
    return { profile: 'https_spiffe', spiffeId, rootsDer: roots ?? s.bootstrapRoots ?? [] };
  }

  private apply(td: string, parsed: ParsedSpiffeBundle, source: 'federated-endpoint' | 'federated-file'): boolean {
    const changed = this.deps.registry.setFederated(td, {
      rootsDer: parsed.x509Authorities,
      jwtAuthorities: parsed.jwtAuthorities,
      ...(parsed.sequence !== undefined ? { sequence: parsed.sequence } : {}),
      refreshHintSeconds: parsed.refreshHintSeconds ?? DEFAULT_REFRESH_HINT_SECONDS,
      source,
    });
    this.m.sequence.set({ trust_domain: td }, this.deps.registry.get(td)!.sequence);
    return changed;
  }

  private async persist(td: string, url: string, parsed: ParsedSpiffeBundle): Promise<void> {
    if (!this.deps.store) return;
    const doc: Persisted = {
      trustDomain: td,
      url,
      fetchedAt: this.deps.clock.now().toISOString(),
      bundle: spiffeBundleJson({
        rootsDer: parsed.x509Authorities,
        jwtAuthorities: parsed.jwtAuthorities,
        ...(parsed.sequence !== undefined ? { sequence: parsed.sequence } : {}),
        ...(parsed.refreshHintSeconds !== undefined ? { refreshHintSeconds: parsed.refreshHintSeconds } : {}),
      }),
    };
    try {
      await this.deps.store.write(federationStoreKey(td), Buffer.from(JSON.stringify(doc), 'utf8'));
    } catch (e) {
      this.log.error({ trustDomain: td, err: errorMessage(e) }, 'cannot persist federated bundle');
    }
  }

  private async loadPersisted(s: DomainState): Promise<void> {
    const td = s.cfg.trustDomain;
    if (!this.deps.store) return;
    const key = federationStoreKey(td);
    try {
      const raw = await this.deps.store.read(key);
      if (!raw) return;
      const doc = JSON.parse(raw.toString('utf8')) as Partial<Persisted>;
      if (doc.trustDomain !== td || typeof doc.bundle !== 'string') throw new Error('not a federated bundle record for this trust domain');
      const parsed = parseSpiffeBundle(doc.bundle, `federation: persisted bundle of ${td}`);
      this.apply(td, parsed, 'federated-endpoint');
      s.lastRoots = parsed.x509Authorities;
      this.log.info({ trustDomain: td, fetchedAt: doc.fetchedAt, sequence: parsed.sequence }, 'loaded last good federated bundle');
    } catch (e) {
      this.log.error({ trustDomain: td, key, err: errorMessage(e) }, 'ignoring unreadable persisted federated bundle');
    }
  }

  private async readStaticFile(file: string, td: string, what = 'bundleFile'): Promise<ParsedSpiffeBundle> {
    return this.parseStaticFile(await this.readStaticText(file, td, what), file, td, what);
  }

  /** Throws FAILED_PRECONDITION "cannot read" naming the file. */
  private readStaticText(file: string, td: string, what = 'bundleFile'): Promise<string> {
    return readText(file, `federation: ${what} of ${td}`);
  }

  /** Throws FAILED_PRECONDITION naming the file and what is wrong with it. */
  private parseStaticFile(text: string, file: string, td: string, what = 'bundleFile'): ParsedSpiffeBundle {
    return wrapPrecondition(() => parseBundleText(text, `federation: ${what} ${file} of ${td}`));
  }
}

/** A bundle file: SPIFFE bundle JSON when it starts with "{", else PEM certificates. */
export function parseBundleText(text: string, what: string): ParsedSpiffeBundle {
  if (text.trimStart().startsWith('{')) return parseSpiffeBundle(text, what);
  const certs = pemCertificates(text, what);
  if (certs.length === 0) throw new CaError('INVALID_ARGUMENT', `${what}: holds neither SPIFFE bundle JSON nor PEM certificates`);
  return { x509Authorities: certs, jwtAuthorities: [], skipped: [] };
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new CaError('FAILED_PRECONDITION', `${what}: cannot read ${file}: ${errorMessage(e)}`, { cause: e });
  }
}

function wrapPrecondition<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof CaError && e.code === 'INVALID_ARGUMENT') throw new CaError('FAILED_PRECONDITION', e.message, { cause: e });
    throw e;
  }
}
