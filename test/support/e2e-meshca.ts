import { X509Certificate } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { parseConfig } from '../../src/config/load.js';
import { startServer, type RunningServer } from '../../src/main.js';
import type { Clock } from '../../src/util/clock.js';
import { SdsClient, type SotwStream } from './sds-client.js';

/**
 * End-to-end harness: the REAL server composition (src/main.ts startServer) on 127.0.0.1:0, with a config built
 * like an operator's YAML, plus helpers to reach it the way a workload and a probe do (mTLS SDS, GET /readyz) and
 * to check what it served with checks independent of meshca's own x509 code (node:crypto, openssl).
 */

export interface E2eMeshca {
  readonly running: RunningServer;
  readonly dir: string;
  /** Every log line meshca wrote (parsed JSON). */
  readonly logs: Record<string, unknown>[];
  /** An SDS client authenticated with a certificate for spiffeId issued by this meshca (in-process). */
  clientFor(spiffeId: string, opts?: { ttlSeconds?: number }): Promise<SdsClient>;
  readyz(): Promise<{ status: number; body: { ready: boolean; reason?: string } }>;
  stop(): Promise<void>;
}

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * Starts meshca with `raw` merged over the e2e defaults (temp dataDir, ports 0, no signing workers). `raw` is the
 * config as YAML would give it (durations as strings); it goes through parseConfig like a config file does.
 */
export async function startE2eMeshca(raw: Record<string, unknown>, opts: { clock?: Clock; dir?: string } = {}): Promise<E2eMeshca> {
  const own = opts.dir === undefined;
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'meshca-e2e-')));
  const server = (raw.server as Record<string, unknown> | undefined) ?? {};
  const cfg = parseConfig(
    {
      ...raw,
      dataDir: join(dir, 'data'),
      signing: { workers: 0 },
      server: { ...server, grpc: { address: '127.0.0.1:0', ...(server.grpc as object) }, http: { address: '127.0.0.1:0' } },
    },
    'e2e',
  );
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  let running: RunningServer;
  try {
    running = await startServer(cfg, { log, ...(opts.clock ? { clock: opts.clock } : {}) });
  } catch (e) {
    if (own) await rm(dir, { recursive: true, force: true });
    (e as Error).message += `\nmeshca logs:\n${logs.map((l) => JSON.stringify(l)).join('\n')}`;
    throw e;
  }
  const clients: SdsClient[] = [];
  const streams: SotwStream[] = [];
  return {
    running,
    dir,
    logs,
    async clientFor(spiffeId, o = {}) {
      const svid = await running.core.authority.issue({ spiffeId, source: 'cli', ...(o.ttlSeconds ? { ttlSeconds: o.ttlSeconds } : {}) });
      const c = new SdsClient({
        target: `127.0.0.1:${running.grpcPort}`,
        tls: { caPem: running.core.authority.bundle().pem, certPem: svid.chainPem, keyPem: svid.privateKeyPem! },
        node: { id: `${spiffeId.split('/').pop()}-node`, cluster: 'e2e' },
      });
      // Track streams so stop() can cancel them: open calls would otherwise hold the server's drain.
      const open = c.streamSecrets.bind(c);
      c.streamSecrets = (node) => {
        const st = open(node);
        streams.push(st);
        return st;
      };
      clients.push(c);
      return c;
    },
    readyz: () => getJson(`http://127.0.0.1:${running.httpPort}/readyz`) as Promise<{ status: number; body: { ready: boolean; reason?: string } }>,
    async stop() {
      for (const st of streams) st.cancel();
      for (const c of clients) c.close();
      await running.stop();
      if (own) await rm(dir, { recursive: true, force: true });
    },
  };
}

export function getJson(url: string): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', timeout: 5000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown });
        } catch (e) {
          reject(new Error(`${url}: not JSON (${res.statusCode}): ${text.slice(0, 200)} ${(e as Error).message}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: timed out`)));
    req.on('error', reject);
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Certificate checks, independent of meshca's x509 code.

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificates of a PEM text, in order. */
export function pemCerts(pem: string): X509Certificate[] {
  return (pem.match(PEM_BLOCK) ?? []).map((b) => new X509Certificate(b));
}

/** Sorted SHA-256 fingerprints: compare root sets without caring about order. */
export function fingerprints(certs: readonly X509Certificate[]): string[] {
  return certs.map((c) => c.fingerprint256).sort();
}

/**
 * Checks a served chain (leaf first) against served roots at time `atMs`: each certificate is issued and signed by
 * the next, the last by one of the roots (self-signed), and every certificate on the path is valid at atMs.
 * Returns the leaf and the root it chains to; throws a message naming what failed.
 */
export function verifyChain(chainPem: string, rootsPem: string, atMs: number): { leaf: X509Certificate; root: X509Certificate; path: X509Certificate[] } {
  const chain = pemCerts(chainPem);
  const roots = pemCerts(rootsPem);
  if (chain.length === 0) throw new Error('chain holds no certificate');
  if (roots.length === 0) throw new Error('roots hold no certificate');
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i]!.checkIssued(chain[i + 1]!) || !chain[i]!.verify(chain[i + 1]!.publicKey)) {
      throw new Error(`chain[${i}] (${chain[i]!.subject}) is not issued/signed by chain[${i + 1}] (${chain[i + 1]!.subject})`);
    }
  }
  const top = chain[chain.length - 1]!;
  const root = roots.find((r) => top.checkIssued(r) && top.verify(r.publicKey));
  if (!root) throw new Error(`chain top (${top.issuer}) is not signed by any served root (${roots.map((r) => r.subject).join('; ')})`);
  if (!root.checkIssued(root) || !root.verify(root.publicKey)) throw new Error('the matching root is not self-signed');
  const path = [...chain, root];
  for (const c of path) {
    const from = Date.parse(c.validFrom);
    const to = Date.parse(c.validTo);
    if (!(from <= atMs && atMs < to)) {
      throw new Error(`${c.subject || c.subjectAltName} is not valid at ${new Date(atMs).toISOString()} (${c.validFrom} .. ${c.validTo})`);
    }
  }
  return { leaf: chain[0]!, root, path };
}

/**
 * `openssl verify -x509_strict` of a served chain against served roots, at `atMs` (-attime), so a ManualClock that
 * moved ahead of real time is respected. Resolves with openssl's output; rejects with it on failure.
 */
export async function opensslVerify(dir: string, chainPem: string, rootsPem: string, atMs: number): Promise<string> {
  const chain = pemCerts(chainPem);
  const tag = `${process.pid}-${Math.random().toString(36).slice(2)}`;
  const files = { roots: join(dir, `roots-${tag}.pem`), untrusted: join(dir, `untrusted-${tag}.pem`), leaf: join(dir, `leaf-${tag}.pem`) };
  await writeFile(files.roots, pemCerts(rootsPem).map((c) => c.toString()).join(''));
  await writeFile(files.leaf, chain[0]!.toString());
  const args = ['verify', '-x509_strict', '-attime', String(Math.floor(atMs / 1000)), '-CAfile', files.roots];
  if (chain.length > 1) {
    await writeFile(files.untrusted, chain.slice(1).map((c) => c.toString()).join(''));
    args.push('-untrusted', files.untrusted);
  }
  args.push(files.leaf);
  try {
    return await new Promise<string>((resolve, reject) =>
      execFile('openssl', args, { timeout: 10_000 }, (err, stdout, stderr) => (err ? reject(new Error(`openssl verify failed: ${stdout}${stderr}`)) : resolve(stdout))),
    );
  } finally {
    await Promise.all(Object.values(files).map((f) => rm(f, { force: true })));
  }
}

/** Polls check() every 20 ms until true, or fails after ms naming `what`. */
export async function eventually(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
