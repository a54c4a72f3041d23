import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SdsClient, type Node } from './sds-client.js';

/** Repository root (dist/test/support -> ../../..). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const MESHCA_BIN = join(REPO_ROOT, 'bin', 'meshca.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `meshca ARGS` as a user would and collects its output; killed after timeoutMs. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MESHCA_BIN, ...args], {
      cwd: opts.cwd ?? REPO_ROOT,
      env: { ...process.env, MESHCA_CONFIG: '', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A temp directory removed by cleanup(). */
export async function tempDir(prefix = 'meshca-test-'): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Writes a config file whose dataDir and listeners suit tests (loopback, port 0). */
export async function writeTestConfig(dir: string, extra = ''): Promise<string> {
  const path = join(dir, 'meshca.yaml');
  await writeFile(
    path,
    `trustDomain: test.example
dataDir: ${join(dir, 'data')}
server:
  grpc: { address: "127.0.0.1:0" }
  http: { address: "127.0.0.1:0" }
signing: { workers: 0 }
${extra}`,
  );
  return path;
}

export interface ServeProcess {
  child: ChildProcess;
  httpPort: number;
  grpcPort: number | undefined;
  logs(): string;
  /** Sends a signal and waits for exit (SIGKILL after timeoutMs). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
}

/** Starts `meshca serve --config FILE`, waiting until it logs "meshca ready". */
export async function startServe(configPath: string, opts: { timeoutMs?: number; detached?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<ServeProcess> {
  const child = spawn(process.execPath, [MESHCA_BIN, 'serve', '--config', configPath], {
    cwd: REPO_ROOT,
    env: { ...process.env, MESHCA_CONFIG: '', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.detached ?? false,
  });
  let logs = '';
  child.stdout!.on('data', (d: Buffer) => (logs += d.toString()));
  let httpPort = 0;
  let grpcPort: number | undefined;
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`meshca serve did not become ready:\n${logs}`));
    }, opts.timeoutMs ?? 20_000);
    child.stderr!.on('data', (d: Buffer) => {
      logs += d.toString();
      for (const line of logs.split('\n')) {
        if (!line.startsWith('{')) continue;
        let j: { msg?: string; address?: string; component?: string };
        try {
          j = JSON.parse(line);
        } catch {
          continue;
        }
        if (j.msg?.startsWith('ops HTTP listening') && j.address) httpPort = Number(j.address.split(':').pop());
        if (j.msg?.startsWith('gRPC listening') && j.address) grpcPort = Number(j.address.split(':').pop());
        if (j.msg === 'meshca ready') {
          clearTimeout(t);
          resolve();
        }
      }
    });
    child.on('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`meshca serve exited with ${code}:\n${logs}`));
    });
  });
  child.removeAllListeners('exit');
  return {
    child,
    httpPort,
    grpcPort,
    logs: () => logs,
    stop: (signal = 'SIGTERM', timeoutMs = 25_000) =>
      new Promise((resolve) => {
        const started = Date.now();
        if (child.exitCode !== null || child.signalCode !== null) {
          resolve({ code: child.exitCode, signal: child.signalCode, ms: 0 });
          return;
        }
        const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        child.once('exit', (code, sig) => {
          clearTimeout(t);
          resolve({ code, signal: sig, ms: Date.now() - started });
        });
        child.kill(signal);
      }),
  };
}

/**
 * What an operator does for a proxy: `meshca issue` a bootstrap identity into `outDir`, then an Envoy-like SDS client
 * on `grpcPort` that trusts the issued bundle.pem and presents cert.pem/key.pem.
 */
export async function bootstrapSdsClient(configPath: string, outDir: string, grpcPort: number, spiffeId: string, node: Node): Promise<SdsClient> {
  const issued = await runCli(['issue', '--config', configPath, '--spiffe-id', spiffeId, '--out', outDir]);
  if (issued.code !== 0) throw new Error(`meshca issue failed (${issued.code}): ${issued.stderr}`);
  return new SdsClient({
    target: `127.0.0.1:${grpcPort}`,
    tls: {
      caPem: await readFile(join(outDir, 'bundle.pem'), 'utf8'),
      certPem: await readFile(join(outDir, 'cert.pem'), 'utf8'),
      keyPem: await readFile(join(outDir, 'key.pem'), 'utf8'),
    },
    node,
  });
}
