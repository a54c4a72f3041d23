import { promises as fs } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Authority } from '../authority/types.js';
import type { Clock, Timer } from '../util/clock.js';
import { CaError, errorMessage } from '../util/errors.js';
import type { BundleEndpointConfig } from './config.js';
import { bundleToJwks } from './jwks.js';
import { splitHostPort } from '../util/address.js';
import { counter } from '../telemetry/metrics.js';
import type { BundleRegistry } from './registry.js';

export interface BundleEndpointDeps {
  /** Source of our own trust domain's bundle (registry.own()). Only our own bundle is served, never federated ones. */
  readonly registry: BundleRegistry;
  readonly log: Logger;
  readonly clock: Clock;
  readonly metrics?: Registry;
  /** Required for profile https_spiffe: issues (and re-issues) the endpoint's own X509-SVID. */
  readonly authority?: Pick<Authority, 'issue' | 'onEvent' | 'trustDomain'>;
  /** https_web: how often certFile/keyFile are checked for changes. Default 5000 ms. */
  readonly fileCheckIntervalMs?: number;
}

export interface BundleEndpoint {
  readonly port: number;
  readonly host: string;
  /** https_spiffe: the SPIFFE ID of the serving certificate. */
  readonly spiffeId: string | undefined;
  close(): Promise<void>;
}

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 60_000;

/**
 * The SPIFFE bundle endpoint (SPIFFE_Federation.md): answers HTTPS GET with our trust bundle as a SPIFFE bundle
 * document (`Content-Type: application/json`, x509-svid keys with x5c, spiffe_sequence, spiffe_refresh_hint).
 * Never asks for a client certificate. Profiles:
 * - https_web: serves certFile/keyFile (Web PKI), re-read when either file changes (a failed re-read keeps the
 *   previous pair and is logged);
 * - https_spiffe: serves a meshca-issued X509-SVID (cfg.spiffeId, default spiffe://<td>/meshca/bundle-endpoint),
 *   re-issued at its renewal time, and no later than 3 refresh hints after the signing CA changed (so peers have
 *   fetched a new root before the endpoint's certificate chains to it).
 * Start fails (CaError FAILED_PRECONDITION) when the serving credentials cannot be obtained.
 */
export async function startBundleEndpoint(cfg: BundleEndpointConfig, deps: BundleEndpointDeps): Promise<BundleEndpoint> {
  const log = deps.log.child({ component: 'bundle-endpoint' });
  const requests = counter(deps.metrics, 'meshca_bundle_endpoint_requests_total', 'Requests to the SPIFFE bundle endpoint', ['code']);
  const { host, port } = splitHostPort(cfg.address);
  let cache: { seq: number; body: Buffer } | undefined;
  const body = (): Buffer => {
    const own = deps.registry.own();
    if (!cache || cache.seq !== own.sequence) {
      const doc = bundleToJwks({ trustDomain: own.trustDomain, rootsDer: own.rootsDer, pem: own.pem, sequence: own.sequence }, cfg.refreshHint);
      cache = { seq: own.sequence, body: Buffer.from(JSON.stringify(doc), 'utf8') };
    }
    return cache.body;
  };

  let stopCreds: () => void = () => undefined;
  let initial: { cert: string; key: string };
  let spiffeId: string | undefined;
  let server: Server | undefined;
  const setCreds = (c: { cert: string; key: string }): void => {
    server?.setSecureContext({ cert: c.cert, key: c.key });
  };

  if (cfg.profile === 'https_web') {
    const files = { cert: cfg.certFile!, key: cfg.keyFile! };
    initial = await readPair(files);
    stopCreds = watchFiles(files, deps.fileCheckIntervalMs ?? 5000, async () => {
      try {
        const next = await readPair(files);
        setCreds(next);
        log.info({ certFile: files.cert }, 'bundle endpoint serving certificate reloaded');
      } catch (e) {
        log.error({ err: errorMessage(e), certFile: files.cert }, 'cannot reload bundle endpoint certificate; keeping the previous one');
      }
    });
  } else {
    const authority = deps.authority;
    if (!authority) throw new CaError('FAILED_PRECONDITION', 'bundle endpoint: profile https_spiffe needs the authority to issue its SVID');
    spiffeId = cfg.spiffeId ?? `spiffe://${authority.trustDomain}/meshca/bundle-endpoint`;
    const id = spiffeId;
    const issue = async () => {
      const svid = await authority.issue({ spiffeId: id, source: 'serving' });
      return { creds: { cert: svid.chainPem, key: svid.privateKeyPem! }, renewAt: svid.renewAt };
    };
    let first: Awaited<ReturnType<typeof issue>>;
    try {
      first = await issue();
    } catch (e) {
      throw new CaError('FAILED_PRECONDITION', `bundle endpoint: cannot issue its SVID ${id}: ${errorMessage(e)}`, { cause: e });
    }
    initial = first.creds;
    let timer: Timer | undefined;
    let retryMs = RETRY_MIN_MS;
    let closed = false;
    let dueAt = first.renewAt;
    const schedule = (at: Date) => {
      timer?.cancel();
      dueAt = at;
      if (!closed) timer = deps.clock.setTimer(() => void renew(), Math.max(0, at.getTime() - deps.clock.nowMs()));
    };
    const renew = async () => {
      try {
        const next = await issue();
        setCreds(next.creds);
        retryMs = RETRY_MIN_MS;
        schedule(next.renewAt);
        log.info({ spiffeId: id, renewAt: next.renewAt.toISOString() }, 'bundle endpoint SVID renewed');
      } catch (e) {
        log.error({ err: errorMessage(e), spiffeId: id }, 'bundle endpoint SVID renewal failed; will retry');
        schedule(new Date(deps.clock.nowMs() + retryMs));
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      }
    };
    schedule(first.renewAt);
    // A new signing CA (possibly under a new root) is not used at once: federated peers verify this endpoint with
    // the bundle they fetched last, so the new root must reach them first (SPIFFE_Federation.md: publish new keys
    // 3-5 refresh hints ahead of use). Renew at the SVID's renewAt or 3 refresh hints from now, whichever is sooner.
    const unsub = authority.onEvent((ev) => {
      if (ev.type !== 'signing-ca' && ev.type !== 'reissue-all') return;
      const at = Math.min(dueAt.getTime(), deps.clock.nowMs() + 3 * cfg.refreshHint * 1000);
      schedule(new Date(at));
    });
    stopCreds = () => {
      closed = true;
      timer?.cancel();
      unsub();
    };
  }

  try {
    server = createServer({ cert: initial.cert, key: initial.key, requestCert: false }, (req, res) => {
      // SPIFFE_Federation.md: the bundle is fetched with GET. HEAD is answered like GET without a body, as RFC 9110
      // requires of every general-purpose server; anything else is 405 naming the allowed methods.
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        requests.inc({ code: '405' });
        res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('only GET and HEAD are supported\n');
        return;
      }
      const b = body();
      requests.inc({ code: '200' });
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': b.length, 'Cache-Control': 'no-cache' });
      res.end(req.method === 'HEAD' ? undefined : b);
    });
    server.on('tlsClientError', (e) => log.debug({ err: errorMessage(e) }, 'bundle endpoint TLS handshake failed'));
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(port, host, () => {
        server!.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    stopCreds();
    throw new CaError('FAILED_PRECONDITION', `bundle endpoint: cannot listen on ${cfg.address}: ${errorMessage(e)}`, { cause: e });
  }
  const srv = server;
  const addr = srv.address() as AddressInfo;
  log.info({ address: `${addr.address}:${addr.port}`, profile: cfg.profile, ...(spiffeId ? { spiffeId } : {}) }, 'SPIFFE bundle endpoint listening');
  return {
    port: addr.port,
    host: addr.address,
    spiffeId,
    close: async () => {
      stopCreds();
      await new Promise<void>((resolve) => {
        srv.close(() => resolve());
        srv.closeAllConnections();
      });
    },
  };
}

async function readPair(files: { cert: string; key: string }): Promise<{ cert: string; key: string }> {
  let cert: string;
  let key: string;
  try {
    cert = await fs.readFile(files.cert, 'utf8');
  } catch (e) {
    throw new CaError('FAILED_PRECONDITION', `bundle endpoint: cannot read certFile ${files.cert}: ${errorMessage(e)}`, { cause: e });
  }
  try {
    key = await fs.readFile(files.key, 'utf8');
  } catch (e) {
    throw new CaError('FAILED_PRECONDITION', `bundle endpoint: cannot read keyFile ${files.key}: ${errorMessage(e)}`, { cause: e });
  }
  if (!cert.includes('-----BEGIN CERTIFICATE-----')) throw new CaError('FAILED_PRECONDITION', `bundle endpoint: certFile ${files.cert} holds no PEM certificate`);
  if (!/-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/.test(key)) throw new CaError('FAILED_PRECONDITION', `bundle endpoint: keyFile ${files.key} holds no PEM private key`);
  // Let TLS check that the key matches the certificate now rather than at the first handshake.
  try {
    const { createSecureContext } = await import('node:tls');
    createSecureContext({ cert, key });
  } catch (e) {
    throw new CaError('FAILED_PRECONDITION', `bundle endpoint: certFile ${files.cert} and keyFile ${files.key} are not a usable pair: ${errorMessage(e)}`);
  }
  return { cert, key };
}

/**
 * Polls files' (mtime, size, inode) and calls onChange after any of them changed. Polling (not fs.watch) because
 * secret mounts and atomic renames replace files in ways fs.watch misses. Returns stop.
 */
export function watchFiles(paths: { cert: string; key: string } | readonly string[], intervalMs: number, onChange: () => Promise<void> | void): () => void {
  const list = Array.isArray(paths) ? [...(paths as readonly string[])] : [(paths as { cert: string }).cert, (paths as { key: string }).key];
  const sig = async (): Promise<string> => {
    const parts: string[] = [];
    for (const p of list) {
      try {
        const st = await fs.stat(p);
        parts.push(`${st.ino}:${st.size}:${st.mtimeMs}`);
      } catch {
        parts.push('missing');
      }
    }
    return parts.join('|');
  };
  let last: string | undefined;
  let busy = false;
  void sig().then((s) => {
    last ??= s;
  });
  const t = setInterval(() => {
    if (busy) return;
    busy = true;
    void sig()
      .then(async (s) => {
        if (last !== undefined && s !== last) {
          last = s;
          await onChange();
        }
        last ??= s;
      })
      .finally(() => {
        busy = false;
      });
  }, intervalMs);
  t.unref();
  return () => clearInterval(t);
}
