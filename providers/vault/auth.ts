import type nodeVault from 'node-vault';
import type { Logger } from 'pino';
import type { Clock, Timer } from '../../src/util/clock.js';
import { CaError } from '../../src/util/errors.js';
import type { VaultConfig } from './config.js';
import { VaultCallError } from './retry.js';
import { vaultHeaders } from './wire.js';

/**
 * Keeps one usable Vault token for the backend. Contract:
 * - token() resolves with a token to send now, logging in (approle, kubernetes) or reading the token (value or
 *   file) on first use; concurrent callers share one login.
 * - Tokens with a TTL are renewed with auth/token/renew-self at `renewFraction` of their lease, on the injected
 *   Clock's timers. When renewal is impossible (not renewable, capped by its max TTL, or failing), login methods log
 *   in again; a token file is re-read. A token file is also re-read whenever it changes on disk.
 * - refresh(stale) is called after Vault answered 403 with `stale`: it logs in again (or re-reads the token file)
 *   and resolves with a different token, or with undefined when no other token can be had (a static token).
 * - No token, secret ID or JWT ever reaches a log line or an error message: errors carry Vault's errors[] text
 *   with any known secret scrubbed out.
 */

export interface FileReader {
  /** Reads a small text file; `stamp` changes when the file changes (mtime + size). */
  read(path: string): Promise<{ text: string; stamp: string }>;
  stamp(path: string): Promise<string>;
}

export interface TokenManagerDeps {
  readonly auth: VaultConfig['auth'];
  readonly client: nodeVault.client;
  readonly clock: Clock;
  readonly log: Logger;
  readonly files: FileReader;
  /** Runs a Vault call with the backend's retry policy and request metrics (pathClass labels the metric). */
  readonly retry: <T>(pathClass: string, fn: () => Promise<T>) => Promise<T>;
  /** Turns a failed call into a CaError with context; shared with the backend so texts are uniform. */
  readonly toCaError: (e: unknown, context: string) => CaError;
  readonly onLogin?: (method: string, ok: boolean) => void;
  readonly onRenew?: (result: 'ok' | 'failed' | 'relogin') => void;
  readonly renewFraction?: number;
  /** How often a token file's mtime is checked at most, ms. Default 1000. */
  readonly fileCheckIntervalMs?: number;
}

interface Held {
  readonly token: string;
  /** Clock ms when the lease ends; 0 = no expiry known (root-like or lookup failed). */
  readonly expiresAtMs: number;
  readonly renewable: boolean;
  /** Lease length granted at login or last renewal, seconds. */
  readonly leaseSeconds: number;
  /** Lease length at login, to notice when renewals stop extending the token (max TTL reached). */
  readonly loginLeaseSeconds: number;
  readonly fileStamp?: string;
}

interface AuthBlock {
  client_token?: unknown;
  lease_duration?: unknown;
  renewable?: unknown;
}

export class TokenManager {
  private held: Held | undefined;
  private pending: Promise<Held> | undefined;
  private timer: Timer | undefined;
  private lastFileCheckMs = -Infinity;
  private stopped = false;
  /** Secrets seen so far (token values, secret IDs, JWTs), scrubbed from any text we emit. */
  private readonly secretValues = new Set<string>();
  private readonly renewFraction: number;

  constructor(private readonly deps: TokenManagerDeps) {
    this.renewFraction = deps.renewFraction ?? 0.8;
    if (deps.auth.token) this.secretValues.add(deps.auth.token);
    if (deps.auth.secretId) this.secretValues.add(deps.auth.secretId);
  }

  get method(): VaultConfig['auth']['method'] {
    return this.deps.auth.method;
  }

  /** Known secret values, longest first, for scrubbing text. */
  secrets(): string[] {
    return [...this.secretValues].filter((s) => s.length >= 4).sort((a, b) => b.length - a.length);
  }

  /** A token to use now. */
  async token(): Promise<string> {
    if (this.stopped) throw new CaError('UNAVAILABLE', 'vault: backend is closed', { retryable: false });
    if (this.held && this.deps.auth.method === 'token' && this.deps.auth.tokenFile) await this.checkTokenFile();
    // A lease that ran out (renewal timers missed, e.g. after a suspend) is replaced before use, not after a 403.
    if (this.held && this.held.expiresAtMs !== 0 && this.deps.clock.nowMs() >= this.held.expiresAtMs && (this.deps.auth.method !== 'token' || this.deps.auth.tokenFile)) {
      this.drop();
    }
    if (this.held) return this.held.token;
    return (await this.acquire()).token;
  }

  /** Lease state for diagnostics and tests (no token value). */
  lease(): { expiresAtMs: number; renewable: boolean } | undefined {
    return this.held ? { expiresAtMs: this.held.expiresAtMs, renewable: this.held.renewable } : undefined;
  }

  /**
   * After a 403 for `stale`: returns another token (a new login, or a changed token file), or undefined when the
   * configured credentials cannot produce one.
   */
  async refresh(stale: string): Promise<string | undefined> {
    if (this.held && this.held.token !== stale) return this.held.token;
    if (this.pending) {
      const h = await this.pending;
      return h.token !== stale ? h.token : undefined;
    }
    const a = this.deps.auth;
    if (a.method === 'token' && !a.tokenFile) return undefined;
    this.drop();
    const h = await this.acquire();
    return h.token !== stale ? h.token : undefined;
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  private drop(): void {
    this.held = undefined;
    this.timer?.cancel();
    this.timer = undefined;
  }

  private acquire(): Promise<Held> {
    if (!this.pending) {
      this.pending = this.obtain()
        .then((h) => {
          this.held = h;
          this.schedule(h);
          return h;
        })
        .finally(() => {
          this.pending = undefined;
        });
    }
    return this.pending;
  }

  private async obtain(): Promise<Held> {
    const a = this.deps.auth;
    if (a.method === 'token') {
      let token = a.token;
      let fileStamp: string | undefined;
      if (a.tokenFile) {
        const f = await this.readSecretFile(a.tokenFile, 'authority.vault.auth.tokenFile');
        token = f.text;
        fileStamp = f.stamp;
        this.lastFileCheckMs = this.deps.clock.nowMs();
      }
      this.secretValues.add(token);
      const info = await this.lookupSelf(token);
      return { token, ...info, loginLeaseSeconds: info.leaseSeconds, ...(fileStamp !== undefined ? { fileStamp } : {}) };
    }
    return this.login();
  }

  private async login(): Promise<Held> {
    const a = this.deps.auth;
    const client = this.deps.client;
    const method = a.method;
    const mount = a.mount || method;
    let res: { auth?: AuthBlock };
    try {
      if (method === 'approle') {
        let secretId = a.secretId;
        if (a.secretIdFile) secretId = (await this.readSecretFile(a.secretIdFile, 'authority.vault.auth.secretIdFile')).text;
        if (secretId) this.secretValues.add(secretId);
        res = await this.deps.retry('login', () =>
          client.approleLogin({ role_id: a.roleId, ...(secretId ? { secret_id: secretId } : {}), mount_point: mount, requestOptions: { headers: vaultHeaders() } }),
        );
      } else {
        const jwt = (await this.readSecretFile(a.serviceAccountTokenFile, 'authority.vault.auth.serviceAccountTokenFile')).text;
        this.secretValues.add(jwt);
        res = await this.deps.retry('login', () => client.kubernetesLogin({ role: a.role, jwt, mount_point: mount, requestOptions: { headers: vaultHeaders() } }));
      }
    } catch (e) {
      this.deps.onLogin?.(method, false);
      if (e instanceof CaError) throw e;
      throw this.loginError(e, `${method} login at auth/${mount}/login`);
    }
    const auth = res.auth;
    const token = typeof auth?.client_token === 'string' ? auth.client_token : '';
    if (!token) {
      this.deps.onLogin?.(method, false);
      throw new CaError('UNAUTHENTICATED', `vault: ${method} login at auth/${mount}/login returned no client_token`, { retryable: false });
    }
    this.secretValues.add(token);
    const lease = Number(auth?.lease_duration ?? 0);
    const renewable = auth?.renewable === true;
    this.deps.onLogin?.(method, true);
    this.deps.log.info({ method, mount, leaseSeconds: lease, renewable }, 'vault login succeeded');
    const now = this.deps.clock.nowMs();
    return { token, expiresAtMs: lease > 0 ? now + lease * 1000 : 0, renewable, leaseSeconds: lease, loginLeaseSeconds: lease };
  }

  private loginError(e: unknown, context: string): CaError {
    if (e instanceof VaultCallError && !e.exhausted && e.failure.kind === 'http' && (e.failure.status === 400 || e.failure.status === 403)) {
      const text = this.scrub(e.failure.errors.join('; ') || `status ${e.failure.status}`);
      return new CaError('UNAUTHENTICATED', `vault: ${context} failed: ${text}`, { retryable: false });
    }
    return this.deps.toCaError(e, context);
  }

  private async lookupSelf(token: string): Promise<Omit<Held, 'token' | 'loginLeaseSeconds' | 'fileStamp'>> {
    let res: { data?: { ttl?: unknown; renewable?: unknown } };
    try {
      res = await this.deps.retry('lookup-self', () =>
        this.deps.client.tokenLookupSelf({ requestOptions: { headers: vaultHeaders(token) } }),
      );
    } catch (e) {
      if (e instanceof VaultCallError && e.failure.kind === 'http' && e.failure.status === 403) {
        const where = this.deps.auth.tokenFile ? `the token in ${this.deps.auth.tokenFile}` : 'the configured token';
        const text = this.scrub(e.failure.errors.join('; ') || 'permission denied');
        throw new CaError(
          'UNAUTHENTICATED',
          `vault: ${where} was refused by auth/token/lookup-self (${text}): it is expired, revoked or unknown, or its policies lack Vault's "default" policy (which grants lookup-self and renew-self)`,
          {
            retryable: false,
          },
        );
      }
      throw this.deps.toCaError(e, 'auth/token/lookup-self');
    }
    const ttl = Number(res.data?.ttl ?? 0);
    const renewable = res.data?.renewable === true;
    this.deps.log.info({ method: 'token', leaseSeconds: ttl, renewable }, 'vault token looked up');
    return { expiresAtMs: ttl > 0 ? this.deps.clock.nowMs() + ttl * 1000 : 0, renewable, leaseSeconds: ttl };
  }

  private schedule(h: Held): void {
    this.timer?.cancel();
    this.timer = undefined;
    if (this.stopped || h.expiresAtMs === 0 || h.leaseSeconds <= 0) return;
    const delay = Math.max(1000, Math.floor(h.leaseSeconds * this.renewFraction * 1000));
    this.timer = this.deps.clock.setTimer(() => {
      this.timer = undefined;
      void this.onTimer(h);
    }, delay);
  }

  private async onTimer(h: Held): Promise<void> {
    if (this.stopped || this.held !== h) return;
    const isLogin = this.deps.auth.method !== 'token';
    // Renew while renewal still extends the lease meaningfully; otherwise log in again (login methods).
    const worthRenewing = h.renewable && !(isLogin && h.leaseSeconds < h.loginLeaseSeconds * 0.5);
    if (worthRenewing) {
      try {
        const res: { auth?: AuthBlock } = await this.deps.retry('renew-self', () =>
          this.deps.client.tokenRenewSelf({ requestOptions: { headers: vaultHeaders(h.token) } }),
        );
        const lease = Number(res.auth?.lease_duration ?? 0);
        if (lease <= 0) throw new Error('renewal granted no lease');
        if (this.held !== h) return;
        const next: Held = { ...h, expiresAtMs: this.deps.clock.nowMs() + lease * 1000, leaseSeconds: lease, renewable: res.auth?.renewable !== false };
        this.held = next;
        this.deps.onRenew?.('ok');
        this.deps.log.debug({ leaseSeconds: lease }, 'vault token renewed');
        this.schedule(next);
        return;
      } catch (e) {
        this.deps.onRenew?.('failed');
        const reason = e instanceof VaultCallError ? `${e.failure.kind}${e.failure.status ? ` ${e.failure.status}` : ''}: ${this.scrub(e.failure.errors.join('; '))}` : this.scrub(e instanceof Error ? e.message : String(e));
        this.deps.log.warn({ reason }, 'vault token renewal failed');
      }
    }
    if (this.held !== h) return;
    if (isLogin || this.deps.auth.tokenFile) {
      this.deps.onRenew?.('relogin');
      this.drop();
      try {
        await this.acquire();
      } catch (e) {
        // The next call logs in again; the backend reports the failure through health().
        this.deps.log.warn({ reason: this.scrub(e instanceof Error ? e.message : String(e)) }, 'vault re-login after renewal failed');
      }
    }
    // A static token that cannot be renewed is used until Vault refuses it.
  }

  private async checkTokenFile(): Promise<void> {
    const now = this.deps.clock.nowMs();
    if (now - this.lastFileCheckMs < (this.deps.fileCheckIntervalMs ?? 1000)) return;
    this.lastFileCheckMs = now;
    let stamp: string;
    try {
      stamp = await this.deps.files.stamp(this.deps.auth.tokenFile);
    } catch {
      return; // keep the token we hold; reading fails loudly on the next login
    }
    if (this.held && stamp !== this.held.fileStamp) {
      this.deps.log.info({ file: this.deps.auth.tokenFile }, 'vault token file changed; re-reading it');
      this.drop();
    }
  }

  private async readSecretFile(path: string, key: string): Promise<{ text: string; stamp: string }> {
    let f: { text: string; stamp: string };
    try {
      f = await this.deps.files.read(path);
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'read error';
      throw new CaError('FAILED_PRECONDITION', `vault: cannot read ${key} ${path} (${code})`, { retryable: false });
    }
    const text = f.text.trim();
    if (!text) throw new CaError('FAILED_PRECONDITION', `vault: ${key} ${path} is empty`, { retryable: false });
    return { text, stamp: f.stamp };
  }

  /** Replaces every known secret in text. */
  scrub(text: string): string {
    let out = text;
    for (const s of this.secrets()) out = out.split(s).join('[redacted]');
    return out;
  }
}
