import 'reflect-metadata';
import { X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import * as x509 from '@peculiar/x509';
import nodeVault from 'node-vault';
import { Counter, Gauge, type Registry } from 'prom-client';
import { registered } from '../../src/telemetry/metrics.js';
import type { AuthorityBackend, BackendContext, BackendHealth, IntermediateRequest, LeafRequest, UpstreamChain } from '../types.js';
import { CaError } from '../../src/util/errors.js';
import { TokenManager, type FileReader } from './auth.js';
import { certsFrom, isSelfSigned, issuedBy, pathToRoot, sha256Hex, uriSans } from './chain.js';
import type { VaultConfig } from './config.js';
import { leafRefusal } from './refusals.js';
import { caNotAfterFromRefusal, leafNotAfterFromRefusal, ttlWithin } from './ttl.js';
import { HEALTH_PATH, healthProblem, vaultHeaders } from './wire.js';
import { clockSleep, DEFAULT_RETRY, isRetryable, toVaultFailure, unavailableReason, VaultCallError, withRetry, type RetryPolicy, type VaultFailure } from './retry.js';

/** Tuning that is not operator config: tests shrink delays, the factory uses the defaults. */
export interface VaultBackendOptions {
  readonly retry?: Partial<RetryPolicy>;
  /** Per-request timeout, ms. Default 10000. */
  readonly requestTimeoutMs?: number;
  /** Backoff sleep; default sleeps on ctx.clock's timers. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly random?: () => number;
  readonly files?: FileReader;
  /** Fraction of a token's lease after which it is renewed. Default 0.8. */
  readonly renewFraction?: number;
  /** How long fetched trust anchors are reused before asking Vault again, ms. Default 60000. */
  readonly anchorsCacheMs?: number;
  /**
   * How often `sys/health` is polled (on ctx.clock) so that health() and /readyz notice a sealed, uninitialised or
   * unreachable Vault even when meshca has nothing to sign (intermediate mode). Default 10000; 0 = never.
   */
  readonly healthCheckIntervalMs?: number;
}

const ANCHORS_KEY = 'vault-trust-anchors';

const defaultFiles: FileReader = {
  async read(path) {
    const [text, st] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    return { text, stamp: `${st.mtimeMs}:${st.size}:${st.ino}` };
  },
  async stamp(path) {
    const st = await stat(path);
    return `${st.mtimeMs}:${st.size}:${st.ino}`;
  },
};

interface Metrics {
  requests: Counter<'path_class' | 'status'>;
  renewals: Counter<'result'>;
  logins: Counter<'method' | 'result'>;
  up: Gauge;
}

/** `loginMethod`: the configured auth method that logs in (approle, kubernetes), whose results are listed at 0 from the start. */
function makeMetrics(registry: Registry, loginMethod: string | undefined): Metrics {
  const m: Metrics = {
    requests: registered(registry, 'meshca_vault_requests_total', () =>
      new Counter({ name: 'meshca_vault_requests_total', help: 'Vault HTTP requests by path class and status (or timeout/connection/tls)', labelNames: ['path_class', 'status'], registers: [registry] }),
    ),
    renewals: registered(registry, 'meshca_vault_token_renewals_total', () =>
      new Counter({ name: 'meshca_vault_token_renewals_total', help: 'Vault token renewals by result (ok, failed, relogin)', labelNames: ['result'], registers: [registry] }),
    ),
    logins: registered(registry, 'meshca_vault_logins_total', () =>
      new Counter({ name: 'meshca_vault_logins_total', help: 'Vault logins by auth method and result', labelNames: ['method', 'result'], registers: [registry] }),
    ),
    up: registered(registry, 'meshca_vault_up', () => new Gauge({ name: 'meshca_vault_up', help: "1 while Vault answers and accepts meshca's credentials, 0 while it is unavailable or refuses them", registers: [registry] })),
  };
  for (const result of ['ok', 'failed', 'relogin']) m.renewals.inc({ result }, 0);
  if (loginMethod) for (const result of ['ok', 'failed']) m.logins.inc({ method: loginMethod, result }, 0);
  return m;
}

function statusLabel(f: VaultFailure): string {
  return f.kind === 'http' ? String(f.status) : f.kind;
}

/**
 * The Vault PKI backend. mode "intermediate": mintIntermediate sends meshca's CA CSR to
 * <pkiMount>/root/sign-intermediate. mode "leaf": signLeaf sends each leaf CSR to <pkiMount>/sign/<role>. With
 * authority.vault.issuer both go to <pkiMount>/issuer/<issuer>/... instead.
 * Every call goes through one path: token from TokenManager → retry with backoff for transient failures → on 403
 * one re-login and retry → CaError with Vault's text, prefixed "vault: ", secrets scrubbed.
 */
export class VaultBackend implements AuthorityBackend {
  readonly name = 'vault';
  readonly mode: 'intermediate' | 'leaf';
  private client!: nodeVault.client;
  private tokens!: TokenManager;
  private readonly m: Metrics;
  private readonly policy: RetryPolicy;
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  private state: BackendHealth = { ok: true };
  private anchors: { roots: Buffer[]; fetchedAtMs: number } | undefined;
  private closed = false;
  /**
   * A refusal of meshca's credentials or policy (a final 403, a failed login) that only a successful authenticated
   * call clears. Kept apart from availability problems, so that an outage reported in between, once a healthy
   * sys/health clears it, leaves this one reported instead of a green /readyz.
   */
  private credentialProblem: string | undefined;
  private probeTimer: { cancel(): void } | undefined;
  private probing = false;
  /** Leaf mode: notAfter (ms) of the Vault issuer that signed the last leaf, or that Vault named when refusing one. */
  private issuerNotAfterMs: number | undefined;
  /**
   * Leaf mode: how far Vault's clock is ahead of meshca's (ms, never negative), learned from a "beyond the expiration
   * of the CA" refusal (Vault's leaf notAfter less the TTL sent). Clamping uses Vault's time, so a few seconds of
   * drift do not turn every leaf near the issuer's end into a refusal.
   */
  private vaultAheadMs = 0;
  private clampWarnedFor: number | undefined;

  constructor(
    private readonly cfg: VaultConfig,
    private readonly ctx: BackendContext,
    private readonly opts: VaultBackendOptions = {},
  ) {
    this.mode = cfg.mode;
    this.m = makeMetrics(ctx.metrics, cfg.auth.method === 'token' ? undefined : cfg.auth.method);
    this.policy = { ...DEFAULT_RETRY, ...opts.retry };
    this.sleep = opts.sleep ?? clockSleep(ctx.clock);
  }

  async init(): Promise<void> {
    this.client = await this.makeClient();
    this.tokens = new TokenManager({
      auth: this.cfg.auth,
      client: this.client,
      clock: this.ctx.clock,
      log: this.ctx.log,
      files: this.opts.files ?? defaultFiles,
      retry: (pathClass, fn) => this.vaultCall(pathClass, fn),
      toCaError: (e, context) => this.toCaError(e, context),
      onLogin: (method, ok) => this.m.logins.inc({ method, result: ok ? 'ok' : 'failed' }),
      onRenew: (result) => this.m.renewals.inc({ result }),
      ...(this.opts.renewFraction !== undefined ? { renewFraction: this.opts.renewFraction } : {}),
    });
    await this.loadStoredAnchors();
    this.scheduleProbe();
    let loggedIn = true;
    try {
      await this.tokens.token();
    } catch (e) {
      loggedIn = false;
      const err = e instanceof CaError ? e : this.toCaError(e, 'login');
      this.degrade(err.message, err.retryable);
      // Vault being down must not stop meshca from serving what it holds; bad credentials or files must.
      if (!err.retryable) throw err;
      this.ctx.log.warn({ reason: err.message }, 'vault unavailable at start; will log in on first use');
    }
    try {
      // After a failed login Vault may well be down: one try, so start-up is not held up by a second backoff.
      await this.fetchAnchors(loggedIn ? undefined : { attempts: 1 });
    } catch (e) {
      const err = e instanceof CaError ? e : this.toCaError(e, this.anchorsPath);
      if (!err.retryable) throw err;
      this.ctx.log.warn({ reason: err.message }, 'vault trust anchors unavailable at start');
    }
    if (!loggedIn) return;
    // Logged in: Vault is up even if no PKI call follows for hours (a restart with a stored signing CA).
    if (this.state.ok) this.m.up.set(1);
    this.ctx.log.info({ address: this.cfg.address, mode: this.mode, pkiMount: this.cfg.pkiMount, namespace: this.cfg.namespace || undefined, auth: this.cfg.auth.method }, 'vault backend ready');
  }

  health(): BackendHealth {
    return this.state;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.tokens?.stop();
    this.probeTimer?.cancel();
    this.probeTimer = undefined;
  }

  /**
   * One unauthenticated `GET sys/health?standbyok=true&perfstandbyok=true` (exempt from quotas). Uninitialised,
   * sealed, a DR secondary, an answer that is not Vault's, or unreachable degrades health() with the reason; a healthy
   * answer clears a degradation that was about availability (not one about credentials or permissions, which only a
   * successful call clears). Standby and performance standby nodes count as healthy: they forward.
   */
  async probeHealth(): Promise<void> {
    if (this.closed || this.probing || !this.client) return;
    this.probing = true;
    try {
      let reason: string | undefined;
      try {
        reason = healthProblem(await this.client.read(HEALTH_PATH, { headers: vaultHeaders() }));
      } catch (e) {
        reason = unavailableReason(toVaultFailure(e));
      }
      if (this.closed) return;
      if (reason !== undefined) {
        if (this.state.ok || this.state.reason !== this.credentialProblem) this.degrade(reason);
      } else if (!this.state.ok) {
        if (this.credentialProblem === undefined) this.markUp();
        else if (this.state.reason !== this.credentialProblem) this.degrade(this.credentialProblem, false);
      } else {
        this.m.up.set(1);
      }
    } finally {
      this.probing = false;
    }
  }

  private scheduleProbe(): void {
    const every = this.opts.healthCheckIntervalMs ?? 10_000;
    if (this.closed || every <= 0) return;
    this.probeTimer = this.ctx.clock.setTimer(() => {
      void this.probeHealth().finally(() => this.scheduleProbe());
    }, every);
  }

  // ------------------------------------------------------------------------------------------------------------

  async mintIntermediate(req: IntermediateRequest): Promise<UpstreamChain> {
    if (this.mode !== 'intermediate') throw new CaError('FAILED_PRECONDITION', 'vault: mintIntermediate called in leaf mode');
    const td = this.ctx.trustDomain;
    const ttl = Math.ceil(req.ttlSeconds > 0 ? req.ttlSeconds : this.cfg.intermediateTtl);
    const path = this.pkiPath('sign-intermediate', 'root/sign-intermediate');
    const body = {
      csr: req.csrPem,
      common_name: csrCommonName(req.csrDer) || `meshca ${td}`,
      uri_sans: `spiffe://${td}`,
      // Vault turns a hostname-like CN into a DNS SAN; a SPIFFE signing CA carries only the trust domain URI.
      exclude_cn_from_sans: true,
      ttl: `${ttl}s`,
      format: 'pem_bundle',
    };
    const res = await this.authed('sign-intermediate', path, (headers) => this.client.write(path, body, { headers }), req.signal);
    this.logWarnings(path, res);
    const data = (res?.data ?? {}) as Record<string, unknown>;
    const all = certsFrom(data.certificate);
    const ours = all[0];
    if (!ours) throw new CaError('INTERNAL', `vault: ${path} returned no certificate`);
    if (!ours.publicKey.equals(req.publicKey)) throw new CaError('INTERNAL', `vault: ${path} returned a certificate for a different public key than meshca's CSR`);
    if (!ours.ca) throw new CaError('INTERNAL', `vault: ${path} returned a certificate that is not a CA (basicConstraints CA:false)`);
    const notAfter = new Date(ours.validTo).getTime();
    if (notAfter <= this.ctx.clock.nowMs()) {
      // sign-intermediate truncates to the issuer's notAfter, so an expired Vault root yields an expired CA.
      throw new CaError('FAILED_PRECONDITION', `vault: ${path} returned a signing CA that expired at ${new Date(notAfter).toISOString()} (Vault truncates it to its issuer); rotate the root in Vault`, {
        retryable: false,
      });
    }
    const out = await this.assemble(ours, [...all.slice(1), ...certsFrom(data.ca_chain, data.issuing_ca)], path);
    const wanted = this.ctx.clock.nowMs() + ttl * 1000;
    if (notAfter < wanted - 60_000) {
      this.ctx.log.warn({ requestedTtlSeconds: ttl, notAfter: new Date(notAfter).toISOString() }, 'vault shortened meshca\'s signing CA (truncated to its issuer or the mount max TTL)');
    }
    this.ctx.log.info({ serial: ours.serialNumber, notAfter: new Date(notAfter).toISOString(), chainLength: out.chain.length }, 'vault signed meshca signing CA');
    return out;
  }

  async signLeaf(req: LeafRequest): Promise<UpstreamChain> {
    if (this.mode !== 'leaf') throw new CaError('FAILED_PRECONDITION', 'vault: signLeaf called in intermediate mode');
    const role = this.cfg.role;
    const path = this.pkiPath(`sign/${role}`, `sign/${role}`);
    const requested = Math.ceil(req.ttlSeconds);
    // common_name is omitted: SVIDs carry no CN, so the role needs require_cn=false (README).
    const body: Record<string, unknown> = { csr: req.csrPem, uri_sans: req.spiffeId, format: 'pem' };
    if (req.dnsNames.length) body.alt_names = req.dnsNames.join(',');
    // Near the end of the issuer ask for what it has left; when it has nothing left ask anyway (it may have been
    // rotated in Vault meanwhile) and let Vault's answer decide.
    const send = (ttl: number): Promise<{ data?: Record<string, unknown> }> => {
      if (ttl < requested) this.warnClamped(requested, ttl);
      return this.authed('sign', path, (headers) => this.client.write(path, { ...body, ttl: `${ttl}s` }, { headers }), req.signal);
    };
    let res: { data?: Record<string, unknown> };
    try {
      const firstTtl = ttlWithin(requested, this.ctx.clock.nowMs() + this.vaultAheadMs, this.issuerNotAfterMs) ?? requested;
      try {
        res = await send(firstTtl);
      } catch (e) {
        const caEnd = e instanceof CaError && e.code === 'INVALID_ARGUMENT' ? caNotAfterFromRefusal(e.message) : undefined;
        if (caEnd === undefined) throw e;
        this.issuerNotAfterMs = caEnd;
        // Vault's notAfter = its now + the TTL it applied (firstTtl, or less when the role's max_ttl capped it, which
        // only makes this estimate of Vault's clock lower, never later than it is).
        const leafEnd = leafNotAfterFromRefusal((e as CaError).message);
        if (leafEnd !== undefined) this.vaultAheadMs = Math.max(0, leafEnd - firstTtl * 1000 - this.ctx.clock.nowMs());
        const ttl = ttlWithin(requested, this.ctx.clock.nowMs() + this.vaultAheadMs, caEnd);
        if (ttl === undefined) {
          const when = new Date(caEnd).toISOString();
          const state = caEnd <= this.ctx.clock.nowMs() + this.vaultAheadMs ? `expired at ${when}` : `expires at ${when}, too soon to sign a leaf`;
          throw new CaError('FAILED_PRECONDITION', `vault: ${path}: the issuing CA ${state}; rotate the issuer in Vault (or set leaf_not_after_behavior)`, { retryable: false });
        }
        res = await send(ttl);
      }
    } catch (e) {
      if (e instanceof CaError && e.code === 'INVALID_ARGUMENT') {
        throw leafRefusal(e.message.replace(/^vault: [^:]+: /, ''), { role, pkiMount: this.cfg.pkiMount, path, spiffeId: req.spiffeId });
      }
      throw e;
    }
    this.logWarnings(path, res);
    const data = res?.data ?? {};
    const leaf = certsFrom(data.certificate)[0];
    if (!leaf) throw new CaError('INTERNAL', `vault: ${path} returned no certificate for ${req.spiffeId}`);
    if (!leaf.publicKey.equals(req.publicKey)) throw new CaError('INTERNAL', `vault: ${path} returned a certificate for a different public key than the CSR for ${req.spiffeId}`);
    const uris = uriSans(leaf);
    if (uris.length !== 1 || uris[0] !== req.spiffeId) {
      throw new CaError('INTERNAL', `vault: ${path} returned URI SANs [${uris.join(', ')}] instead of exactly ${req.spiffeId}; set the role's use_csr_sans=false`);
    }
    if (leaf.ca) throw new CaError('INTERNAL', `vault: ${path} returned a CA certificate for ${req.spiffeId}`);
    if (new Date(leaf.validTo).getTime() <= this.ctx.clock.nowMs()) throw new CaError('INTERNAL', `vault: ${path} returned an already expired certificate for ${req.spiffeId}`);
    const out = await this.assemble(leaf, certsFrom(data.ca_chain, data.issuing_ca), path);
    const issuer = out.chain[1] ?? out.roots[0];
    if (issuer) this.issuerNotAfterMs = new Date(new X509Certificate(issuer).validTo).getTime();
    return out;
  }

  /** One warning per issuer end: leaves are being shortened because the Vault issuer expires first. */
  private warnClamped(requested: number, ttl: number): void {
    if (this.clampWarnedFor === this.issuerNotAfterMs) return;
    this.clampWarnedFor = this.issuerNotAfterMs;
    this.ctx.log.warn(
      { requestedTtlSeconds: requested, ttlSeconds: ttl, issuerNotAfter: this.issuerNotAfterMs !== undefined ? new Date(this.issuerNotAfterMs).toISOString() : undefined },
      'vault issuing CA expires before the requested leaf TTL; leaves are shortened to end with it: rotate the issuer in Vault',
    );
  }

  async trustAnchors(): Promise<Buffer[]> {
    const maxAge = this.opts.anchorsCacheMs ?? 60_000;
    if (this.anchors && this.ctx.clock.nowMs() - this.anchors.fetchedAtMs < maxAge) return this.anchors.roots;
    try {
      return await this.fetchAnchors();
    } catch (e) {
      const err = e instanceof CaError ? e : this.toCaError(e, 'trust anchors');
      if (this.anchors && err.retryable) {
        this.ctx.log.warn({ reason: err.message }, 'vault trust anchors unavailable; using the last known ones');
        return this.anchors.roots;
      }
      throw err;
    }
  }

  // ------------------------------------------------------------------------------------------------------------

  /** Orders the chain, finds the root (from the response, else the mount's ca_chain), checks the pin. */
  private async assemble(cert: X509Certificate, pool: X509Certificate[], path: string): Promise<UpstreamChain> {
    const others = pool.filter((c) => !c.raw.equals(cert.raw));
    let { intermediates, root } = pathToRoot(cert, others);
    if (!root) {
      // remove_roots_from_chain or an old Vault: complete the path with the mount's published anchors.
      const anchors = (await this.trustAnchors()).map((d) => new X509Certificate(d));
      const top = intermediates[intermediates.length - 1] ?? cert;
      root = anchors.find((a) => issuedBy(top, a));
      if (!root) throw new CaError('INTERNAL', `vault: the chain returned by ${path} does not lead to a self-signed root (neither in the response nor in ${this.anchorsPath})`);
    }
    this.checkPin([root.raw], path);
    await this.rememberAnchors([root.raw], false);
    return { chain: [cert.raw, ...intermediates.map((c) => c.raw)], roots: [root.raw] };
  }

  /** The roots that match authority.vault.rootFingerprint (all of them when no pin is set). */
  private pinned(roots: Buffer[]): Buffer[] {
    const pin = this.cfg.rootFingerprint;
    return pin ? roots.filter((r) => sha256Hex(r) === pin) : roots;
  }

  private checkPin(roots: Buffer[], where: string): void {
    const pin = this.cfg.rootFingerprint;
    if (!pin) return;
    if (!roots.some((r) => sha256Hex(r) === pin)) {
      throw new CaError(
        'FAILED_PRECONDITION',
        `vault: root certificate from ${where} has SHA-256 fingerprint ${roots.map(sha256Hex).join(', ')}, which does not match authority.vault.rootFingerprint ${pin}`,
        { retryable: false },
      );
    }
  }

  /** The anchors path: the configured issuer's JSON, else the mount's default chain (then the default issuer). */
  private get anchorsPath(): string {
    return this.pkiPath('json', 'cert/ca_chain');
  }

  /**
   * A PKI path on the mount: `<pkiMount>/issuer/<issuer>/<op>` when authority.vault.issuer selects an issuer, else
   * the default issuer's `<pkiMount>/<defaultPath>`.
   */
  private pkiPath(op: string, defaultPath: string): string {
    return this.cfg.issuer ? `${this.cfg.pkiMount}/issuer/${this.cfg.issuer}/${op}` : `${this.cfg.pkiMount}/${defaultPath}`;
  }

  /**
   * A read of an unauthenticated PKI path (cert/ca_chain, issuer/<ref>/json): no token, so trust anchors do not
   * depend on logging in. Success leaves health() alone: it says nothing about meshca's credentials.
   */
  private async publicRead(pathClass: string, path: string, retry?: Partial<RetryPolicy>): Promise<{ data?: unknown }> {
    try {
      return (await this.vaultCall(pathClass, () => this.client.read(path, { headers: vaultHeaders() }), undefined, retry)) as { data?: unknown };
    } catch (e) {
      throw this.toCaError(e, path);
    }
  }

  private async fetchAnchors(retry?: Partial<RetryPolicy>): Promise<Buffer[]> {
    const path = this.anchorsPath;
    const res = await this.publicRead(this.cfg.issuer ? 'issuer' : 'ca_chain', path, retry);
    const data = (res?.data ?? {}) as Record<string, unknown>;
    let certs = certsFrom(data.certificate, data.ca_chain);
    let roots = certs.filter(isSelfSigned);
    if (roots.length === 0 && !this.cfg.issuer) {
      const ipath = `${this.cfg.pkiMount}/issuer/default/json`;
      const ires = await this.publicRead('issuer', ipath, retry);
      const idata = (ires?.data ?? {}) as Record<string, unknown>;
      certs = certsFrom(idata.certificate, idata.ca_chain);
      roots = certs.filter(isSelfSigned);
    }
    if (roots.length === 0) {
      throw new CaError('FAILED_PRECONDITION', `vault: ${path} holds no self-signed root; configure the issuer's chain (Vault 1.11+ includes the root)`, { retryable: false });
    }
    const ders = roots.map((r) => r.raw);
    this.checkPin(ders, path);
    const pinned = this.pinned(ders);
    await this.rememberAnchors(pinned, true);
    return pinned;
  }

  private async rememberAnchors(roots: Buffer[], replace: boolean): Promise<void> {
    const before = this.anchors?.roots ?? [];
    const merged = replace ? roots : [...before, ...roots.filter((r) => !before.some((b) => b.equals(r)))];
    const changed = merged.length !== before.length || merged.some((r, i) => !r.equals(before[i]!));
    this.anchors = { roots: merged, fetchedAtMs: replace ? this.ctx.clock.nowMs() : (this.anchors?.fetchedAtMs ?? 0) };
    if (!changed) return;
    try {
      const doc = { roots: merged.map((r) => r.toString('base64')) };
      await this.ctx.store.write(ANCHORS_KEY, Buffer.from(JSON.stringify(doc)));
    } catch (e) {
      this.ctx.log.warn({ reason: e instanceof Error ? e.message : String(e) }, 'could not persist vault trust anchors');
    }
  }

  private async loadStoredAnchors(): Promise<void> {
    const raw = await this.ctx.store.read(ANCHORS_KEY);
    if (!raw) return;
    try {
      const doc = JSON.parse(raw.toString('utf8')) as { roots?: unknown };
      if (!Array.isArray(doc.roots)) throw new Error('no roots array');
      const roots = doc.roots.map((r) => {
        const der = Buffer.from(String(r), 'base64');
        new X509Certificate(der);
        return der;
      });
      // The pin applies to stored anchors too: they may come from a run before rootFingerprint was set or from a
      // root since replaced, and are served as they are while Vault is unreachable.
      const kept = this.pinned(roots);
      if (kept.length < roots.length) {
        this.ctx.log.warn(
          { dropped: roots.filter((r) => !kept.includes(r)).map(sha256Hex), rootFingerprint: this.cfg.rootFingerprint },
          'vault: stored trust anchors that do not match authority.vault.rootFingerprint are ignored',
        );
      }
      if (kept.length) this.anchors = { roots: kept, fetchedAtMs: -Infinity };
    } catch (e) {
      throw new CaError('FAILED_PRECONDITION', `vault: ${this.ctx.store.location} key ${ANCHORS_KEY} is corrupt (${e instanceof Error ? e.message : String(e)}); delete it to refetch from Vault`);
    }
  }

  // ------------------------------------------------------------------------------------------------------------

  private async makeClient(): Promise<nodeVault.client> {
    const t = this.cfg.tls;
    const read = async (file: string, key: string): Promise<string> => {
      try {
        return await readFile(file, 'utf8');
      } catch (e) {
        throw new CaError('FAILED_PRECONDITION', `vault: cannot read authority.vault.tls.${key} ${file} (${(e as { code?: string }).code ?? 'error'})`);
      }
    };
    const timeout = this.opts.requestTimeoutMs ?? 10_000;
    const requestOptions: Record<string, unknown> = { timeout };
    if (t.caFile) requestOptions.ca = await read(t.caFile, 'caFile');
    if (t.certFile) requestOptions.cert = await read(t.certFile, 'certFile');
    if (t.keyFile) requestOptions.key = await read(t.keyFile, 'keyFile');
    if (t.serverName) requestOptions.agentOptions = { servername: t.serverName };
    const client = nodeVault({
      endpoint: this.cfg.address,
      ...(this.cfg.namespace ? { namespace: this.cfg.namespace } : {}),
      requestOptions,
      rpDefaults: { timeout, strictSSL: true },
      noCustomHTTPVerbs: true,
    } as Parameters<typeof nodeVault>[0]);
    // node-vault falls back to VAULT_TOKEN / VAULT_NAMESPACE / VAULT_PREFIX; meshca's config is the only source.
    const c = client as unknown as { token?: string; namespace?: string; pathPrefix: string };
    // node-vault also stores the token of every login and renew-self on the client and adds it to any later request
    // without one (logins, sys/health). meshca sends the token per call, so the client never holds one.
    Object.defineProperty(c, 'token', { get: () => undefined, set: () => undefined, configurable: false });
    c.namespace = this.cfg.namespace || undefined;
    c.pathPrefix = '';
    return client;
  }

  /** One HTTP call with retry/backoff and metrics; throws raw → VaultCallError or CaError. */
  private vaultCall<T>(pathClass: string, fn: () => Promise<T>, signal?: AbortSignal, retry?: Partial<RetryPolicy>): Promise<T> {
    return withRetry(
      async () => {
        if (this.closed) throw new CaError('UNAVAILABLE', 'vault: backend is closed', { retryable: false });
        try {
          const r = await fn();
          this.m.requests.inc({ path_class: pathClass, status: '200' });
          return r;
        } catch (e) {
          if (e instanceof CaError) throw e;
          const f = toVaultFailure(e);
          this.m.requests.inc({ path_class: pathClass, status: statusLabel(f) });
          if (isRetryable(f) || f.kind === 'tls') this.degrade(unavailableReason(f));
          throw e;
        }
      },
      {
        policy: retry ? { ...this.policy, ...retry } : this.policy,
        sleep: this.sleep,
        ...(this.opts.random ? { random: this.opts.random } : {}),
        ...(signal ? { signal } : {}),
        onRetry: (f, attempt, delayMs) =>
          this.ctx.log.warn({ pathClass, status: statusLabel(f), attempt: attempt + 1, delayMs, reason: this.scrub(f.errors.join('; ')) }, 'vault call failed; retrying'),
      },
    );
  }

  /** An authenticated call: on 403, log in again (or re-read the token) once and retry. */
  private async authed<T>(pathClass: string, path: string, fn: (headers: Record<string, string>) => Promise<T>, signal?: AbortSignal): Promise<T> {
    let token: string;
    try {
      token = await this.tokens.token();
    } catch (e) {
      const err = e instanceof CaError ? e : this.toCaError(e, 'login');
      this.degrade(err.message, err.retryable);
      throw err;
    }
    try {
      const r = await this.vaultCall(pathClass, () => fn(vaultHeaders(token)), signal);
      this.markUp();
      return r;
    } catch (e) {
      if (e instanceof VaultCallError && e.failure.kind === 'http' && e.failure.status === 403) {
        let next: string | undefined;
        try {
          next = await this.tokens.refresh(token);
        } catch (le) {
          const err = le instanceof CaError ? le : this.toCaError(le, 'login');
          this.degrade(err.message, err.retryable);
          throw err;
        }
        if (next) {
          this.ctx.log.info({ path }, 'vault refused the token; logged in again, retrying once');
          try {
            const r = await this.vaultCall(pathClass, () => fn(vaultHeaders(next)), signal);
            this.markUp();
            return r;
          } catch (e2) {
            throw this.refused(this.toCaError(e2, path, { freshToken: true }));
          }
        }
      }
      throw this.refused(this.toCaError(e, path));
    }
  }

  /** A final 403 means meshca cannot use Vault until its token or policy changes: health says so until a call works. */
  private refused(err: CaError): CaError {
    if (err.code === 'PERMISSION_DENIED') this.degrade(err.message, false);
    return err;
  }

  /** Turns any failure into a CaError whose message starts with "vault: " and holds no secret. */
  private toCaError(e: unknown, context: string, o: { freshToken?: boolean } = {}): CaError {
    if (e instanceof CaError) return e;
    if (!(e instanceof VaultCallError)) {
      const f = toVaultFailure(e);
      if (f.kind === 'http' || f.kind === 'timeout' || f.kind === 'connection' || f.kind === 'tls') return this.toCaError(new VaultCallError(f, isRetryable(f)), context, o);
      return new CaError('INTERNAL', `vault: ${context}: ${this.scrub(e instanceof Error ? e.message : String(e))}`);
    }
    const f = e.failure;
    const text = this.scrub(f.errors.join('; '));
    if (e.exhausted || isRetryable(f)) {
      const reason = unavailableReason(f);
      this.degrade(reason);
      return new CaError('UNAVAILABLE', `${this.scrub(reason)} (${context}; gave up after ${e.attempts ?? this.policy.attempts} attempt${(e.attempts ?? this.policy.attempts) === 1 ? '' : 's'})`, { retryable: true });
    }
    if (f.kind === 'tls') {
      // The address goes to the log only: callers of meshca's APIs can see this error's message.
      this.ctx.log.warn({ address: this.cfg.address, err: text }, 'vault: TLS verification of the Vault server failed');
      return new CaError('FAILED_PRECONDITION', `vault: TLS verification of the Vault server failed (${text}); check authority.vault.tls.caFile and serverName`, { retryable: false });
    }
    const ns = this.cfg.namespace ? ` in namespace "${this.cfg.namespace}"` : '';
    switch (f.status) {
      case 400:
        return new CaError('INVALID_ARGUMENT', `vault: ${context}: ${text || 'bad request'}`, { retryable: false });
      case 403:
        return new CaError(
          'PERMISSION_DENIED',
          `vault: permission denied for ${context}${ns} (${text || 'permission denied'}): ${
            o.freshToken ? 'a freshly logged-in token was refused too, so its policy does not allow this path' : 'the token expired or was revoked, or its policy does not allow this path'
          } (see the policies in providers/vault/README.md)`,
          { retryable: false },
        );
      case 404:
        return new CaError('FAILED_PRECONDITION', `vault: ${context} not found${ns} (404${text ? `: ${text}` : ''}); is the PKI mount "${this.cfg.pkiMount}" enabled and the path right?`, {
          retryable: false,
        });
      default:
        return new CaError('FAILED_PRECONDITION', `vault: ${context} failed with status ${f.status}${text ? `: ${text}` : ''}`, { retryable: false });
    }
  }

  private scrub(text: string): string {
    return this.tokens ? this.tokens.scrub(text) : text;
  }

  /**
   * `clearable`: an availability problem that a healthy sys/health answer may clear; false for bad credentials or
   * policy, which stay reported (behind any later availability problem) until an authenticated call succeeds.
   */
  private degrade(reason: string, clearable = true): void {
    const r = this.scrub(reason.startsWith('vault:') ? reason : `vault: ${reason}`);
    if (this.state.ok || this.state.reason !== r) this.ctx.log.warn({ reason: r }, 'vault backend degraded');
    this.state = { ok: false, reason: r };
    if (!clearable) this.credentialProblem = r;
    this.m.up.set(0);
  }

  private markUp(): void {
    if (!this.state.ok) this.ctx.log.info('vault backend available again');
    this.state = { ok: true };
    this.credentialProblem = undefined;
    this.m.up.set(1);
  }

  private logWarnings(path: string, res: unknown): void {
    const w = (res as { warnings?: unknown } | undefined)?.warnings;
    if (Array.isArray(w) && w.length) this.ctx.log.warn({ path, warnings: w.map((x) => this.scrub(String(x))) }, 'vault returned warnings');
  }
}

/** CN of a PKCS#10 CSR's subject, or "" (Vault's sign-intermediate otherwise takes none). */
function csrCommonName(der: Buffer): string {
  try {
    const csr = new x509.Pkcs10CertificateRequest(der);
    return csr.subjectName.getField('CN')[0] ?? '';
  } catch {
    return '';
  }
}
