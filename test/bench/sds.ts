import { fork } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import * as http2 from 'node:http2';
import * as tls from 'node:tls';
import { tmpdir } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execSync } from 'node:child_process';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';

/**
 * SDS fan-out benchmark (issue #3): meshca's real core (internal backend, signer pool) and gRPC server with SDS in
 * THIS process; the load (N Envoy-like clients, each its own mTLS HTTP/2 connection with one StreamSecrets stream
 * subscribing `default` + `ROOTCA` with an Envoy-sized Node in its first request, ACKing every response) in a
 * SEPARATE child process speaking raw HTTP/2 + gRPC
 * framing (an independent client stack, and light enough for 10,000 connections).
 *
 * Per N: first-secret latency p50/p99 during a connect storm at 200 new streams/s (the first min(N, 2000) streams;
 * the rest are opened as fast as the server accepts them), streams held, (a) root rotation -> time until every stream
 * has the new ROOTCA (and then the re-issued leaf), (b) `meshca rotate` (new signing CA + reissue-all) -> time until
 * every stream has a new certificate, and server RSS per stream. Runnable alone:
 *   node dist/test/bench/sds.js [1000,10000]
 */

const CHILD_FLAG = '--sds-load-child';
const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
const TD = 'bench.local';
const STORM_RATE = 200;
const STORM_MAX = 2000;
const CLIENT_IDENTITIES = 50;

export interface SdsBenchOptions {
  readonly streams: readonly number[];
}

interface Percentiles {
  p50: number;
  p99: number;
  max: number;
}

function percentiles(xs: number[]): Percentiles {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))]! : NaN);
  const r = (x: number) => Math.round(x * 10) / 10;
  return { p50: r(at(0.5)), p99: r(at(0.99)), max: r(s[s.length - 1] ?? NaN) };
}

function openFileLimit(): number | 'unlimited' | undefined {
  try {
    const v = execSync('ulimit -n', { shell: '/bin/sh', encoding: 'utf8' }).trim();
    return v === 'unlimited' ? v : Number(v);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- parent (server side)

/** BENCH_PROF=<dir>: CPU profile of the server process during each fan-out phase (for finding hot spots). */
async function startProfile(name: string): Promise<() => Promise<void>> {
  const dir = process.env.BENCH_PROF;
  if (!dir) return async () => undefined;
  const { Session } = await import('node:inspector');
  const { writeFile } = await import('node:fs/promises');
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) => session.post(method, params ?? {}, (e, r) => (e ? reject(e) : resolve(r))));
  await post('Profiler.enable');
  await post('Profiler.start');
  return async () => {
    const r = (await post('Profiler.stop')) as { profile: unknown };
    await writeFile(join(dir, `sds-${name}-${Date.now()}.cpuprofile`), JSON.stringify(r.profile));
    session.disconnect();
  };
}

type ChildMsg = Record<string, unknown> & { type: string };

class ChildLoad {
  private readonly waiters = new Map<string, (m: ChildMsg) => void>();
  readonly proc;
  constructor() {
    this.proc = fork(fileURLToPath(import.meta.url), [CHILD_FLAG], { execArgv: ['--max-old-space-size=4096', ...(process.env.BENCH_CHILD_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CHILD_PROF}`] : [])], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.proc.on('message', (m: ChildMsg) => {
      const w = this.waiters.get(m.type);
      if (w) {
        this.waiters.delete(m.type);
        w(m);
      }
    });
  }
  ask(msg: ChildMsg, reply: string, timeoutMs: number): Promise<ChildMsg> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`sds bench: child did not answer ${msg.type} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.set(reply, (m) => {
        clearTimeout(t);
        resolve(m);
      });
      this.proc.send(msg);
    });
  }
  /** Resolves with the next message of `type` the child sends on its own (undefined after timeoutMs). */
  next(type: string, timeoutMs: number): Promise<ChildMsg | undefined> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiters.delete(type);
        resolve(undefined);
      }, timeoutMs);
      this.waiters.set(type, (m) => {
        clearTimeout(t);
        resolve(m);
      });
    });
  }
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.send({ type: 'close' });
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }
}

async function runOne(n: number, gc: () => void): Promise<Record<string, unknown>> {
  const { parseConfig } = await import('../../src/config/load.js');
  const { openCore } = await import('../../src/core.js');
  const { Authorizer } = await import('../../src/identity/authorization.js');
  const { startGrpcServerWithSds } = await import('../../src/servers/sds-server.js');
  const { SystemClock } = await import('../../src/util/clock.js');
  const { Registry } = await import('prom-client');

  const dataDir = await mkdtemp(join(tmpdir(), 'meshca-bench-sds-'));
  const cfg = parseConfig({ trustDomain: TD, dataDir, log: { level: 'silent' }, server: { grpc: { address: '127.0.0.1:0' } }, ...(process.env.BENCH_SIGNING_WORKERS ? { signing: { workers: Number(process.env.BENCH_SIGNING_WORKERS) } } : {}) });
  const log = pino({ level: process.env.BENCH_LOG ?? 'silent' });
  const clock = new SystemClock();
  const metrics = new Registry();
  const core = await openCore(cfg, { log, clock, metrics });
  core.authority.start();
  // Registered before the SDS service subscribes, so the timestamp is taken before the synchronous push loop that
  // the same event starts (10,000 writes take a noticeable part of the fan-out).
  let bundleEventAt = 0;
  let watchBundle = false;
  const offBundle = core.authority.onEvent((ev) => {
    if (watchBundle && ev.type === 'bundle' && !bundleEventAt) bundleEventAt = Date.now();
  });
  const running = await startGrpcServerWithSds(cfg.server, { authority: core.authority, authorizer: new Authorizer([]), clock, log, metrics });
  const child = new ChildLoad();
  try {
    const creds: Array<{ certPem: string; keyPem: string }> = [];
    for (let i = 0; i < CLIENT_IDENTITIES; i++) {
      const s = await core.authority.issue({ spiffeId: `spiffe://${TD}/bench/w${i}`, ttlSeconds: 3600, source: 'cli' });
      creds.push({ certPem: s.chainPem, keyPem: s.privateKeyPem! });
    }
    const bare = await bareTlsBaseline(child, running, core.authority.bundle().pem, creds, Math.min(n, STORM_MAX));
    gc();
    const memBefore = process.memoryUsage();
    const rssBefore = memBefore.rss;
    const storm = Math.min(n, STORM_MAX);
    const cpu0 = process.cpuUsage();
    const profOpen = await startProfile('open');
    // How long the server's event loop stalled during the storm: a first secret cannot come sooner than the loop
    // gets to it, so this separates "meshca's main thread was busy" from "the handshake itself was slow".
    const loopDelay = monitorEventLoopDelay({ resolution: 5 });
    loopDelay.enable();
    const stormDone = child.next('storm-done', 170_000).then(() => loopDelay.disable());
    const opened = await child.ask(
      { type: 'open', port: running.port, caPem: core.authority.bundle().pem, creds, count: n, stormCount: storm, stormRate: STORM_RATE },
      'opened',
      170_000,
    );
    const cpu = process.cpuUsage(cpu0);
    await stormDone;
    await profOpen();
    const held = running.sds.openStreams();
    gc();
    await new Promise((r) => setTimeout(r, 200));
    gc();
    const memAfter = process.memoryUsage();
    const rssAfter = memAfter.rss;
    if (process.env.BENCH_HEAP_SNAPSHOT) {
      // BENCH_HEAP_SNAPSHOT=<dir>: a V8 heap snapshot with every stream open (for finding per-stream memory).
      const { writeHeapSnapshot } = await import('node:v8');
      writeHeapSnapshot(join(process.env.BENCH_HEAP_SNAPSHOT, `sds-${n}-${Date.now()}.heapsnapshot`));
    }

    // (a) trust bundle change: a new root is published (the backend rotates its root, the authority reconciles and
    // adds it to the bundle; nothing is re-issued yet), so only ROOTCA moves.
    watchBundle = true;
    await child.ask({ type: 'mark' }, 'marked', 30_000);
    const prof = await startProfile('bundle');
    const a0 = Date.now();
    const aCpu = process.cpuUsage();
    if (!core.backend.rotateRoot) throw new Error('sds bench: the internal backend cannot rotate its root');
    await core.backend.rotateRoot();
    await core.authority.reconcile();
    const rootDone = await child.ask({ type: 'await', what: 'root', timeoutMs: 60_000 }, 'done-root', 65_000);
    const aServerCpu = cpuMsSince(aCpu);
    await prof();
    watchBundle = false;

    // (b) `meshca rotate`: a new signing CA (under the new root) and re-issue of every leaf; ROOTCA does not change.
    await new Promise((r) => setTimeout(r, 500));
    await child.ask({ type: 'mark' }, 'marked', 30_000);
    const prof2 = await startProfile('reissue');
    const b0 = Date.now();
    const bCpu = process.cpuUsage();
    await core.authority.rotate();
    const reissued = await child.ask({ type: 'await', what: 'cert', timeoutMs: 90_000 }, 'done-cert', 95_000);
    const bServerCpu = cpuMsSince(bCpu);
    await prof2();

    const streamsHeld = Number(opened.opened);
    return {
      streamsRequested: n,
      streamsHeld,
      serverOpenStreams: held,
      failed: opened.failed,
      errors: opened.errors,
      connectStorm: {
        streams: storm,
        ratePerSecond: STORM_RATE,
        firstSecretMs: opened.firstInStorm,
        allSecretsMs: opened.fullInStorm,
        tlsHandshakeMs: opened.handshakeInStorm,
        // Same handshakes against a plain node:tls server in this run: what TLS alone costs on this machine.
        bareMtlsBaseline: bare,
        ratioFirstSecretP99ToBareHandshakeP99: round2(Number((opened.firstInStorm as Percentiles).p99) / bare.handshakeMs.p99),
        // Event-loop delay of the server while the storm ran (5 ms resolution, so ~5 ms is "never stalled").
        serverLoopDelayMs: { p50: round2(loopDelay.percentile(50) / 1e6), p99: round2(loopDelay.percentile(99) / 1e6), max: round2(loopDelay.max / 1e6) },
      },
      // process.cpuUsage(): every thread of the server process (main, signer workers, GC helpers), storm + rest.
      serverProcessCpuMsPerConnection: Math.round(((cpu.user + cpu.system) / 1000 / n) * 100) / 100,
      ratioServerCpuPerConnectionToBareTls: round2((cpu.user + cpu.system) / 1000 / n / bare.serverCpuMsPerConnection),
      restOpenedPerSecond: opened.restRate,
      openWallSeconds: opened.wallSeconds,
      tlsSessionTicketsReceived: opened.tickets,
      bundleChange: {
        allStreamsNewRootcaMs: Number(rootDone.lastAt) - a0,
        fromBundleEventMs: bundleEventAt ? Number(rootDone.lastAt) - bundleEventAt : null,
        streamsUpdated: rootDone.count,
        missing: rootDone.missing,
        // CPU cores busy on average until the last stream had it (the load generator is one process: near 1.0
        // there means the measurement is bound by the client, not by meshca).
        serverCores: coresBusy(aServerCpu, Number(rootDone.lastAt) - a0),
        loadGeneratorCores: coresBusy(Number(rootDone.cpuMs), Number(rootDone.lastAt) - a0),
      },
      reissueAll: {
        allStreamsNewCertMs: Number(reissued.lastAt) - b0,
        streamsUpdated: reissued.count,
        missing: reissued.missing,
        serverCores: coresBusy(bServerCpu, Number(reissued.lastAt) - b0),
        loadGeneratorCores: coresBusy(Number(reissued.cpuMs), Number(reissued.lastAt) - b0),
      },
      serverRssPerStreamKB: streamsHeld ? Math.round((rssAfter - rssBefore) / streamsHeld / 102.4) / 10 : null,
      serverRssMB: Math.round(rssAfter / 1048576),
      // Where a stream's bytes live: the V8 heap (JS objects: grpc-js, http2 and meshca state), Buffers/ArrayBuffers
      // outside the heap, and the rest of RSS (OpenSSL, nghttp2 and libuv allocations made in C/C++).
      serverPerStreamKB: streamsHeld
        ? {
            v8Heap: perStreamKB(memAfter.heapUsed - memBefore.heapUsed, streamsHeld),
            external: perStreamKB(memAfter.external - memBefore.external, streamsHeld),
            nativeRest: perStreamKB(memAfter.rss - memBefore.rss - (memAfter.heapTotal - memBefore.heapTotal) - (memAfter.external - memBefore.external), streamsHeld),
          }
        : null,
      targets: { bundleChangeMs: 2000, reissueAllMs: 5000, firstSecretP99Ms: 50, rssPerStreamKB: 30, note: 'performance.md: ~70 KB per mTLS connection is the realistic bound for grpc-js; 30 KB was set from plaintext figures' },
    };
  } finally {
    offBundle();
    await child.stop();
    await running.close(1000);
    await core.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

const round2 = (x: number): number => Math.round(x * 100) / 100;
const cpuMsSince = (since: NodeJS.CpuUsage): number => {
  const c = process.cpuUsage(since);
  return (c.user + c.system) / 1000;
};
const coresBusy = (cpuMs: number, wallMs: number): number => round2(cpuMs / Math.max(1, wallMs));

interface BareTls {
  handshakeMs: Percentiles;
  serverCpuMsPerConnection: number;
  connections: number;
  errors: number;
}

/**
 * The storm's baseline: `count` mTLS handshakes at STORM_RATE from the load child, with the same client
 * certificates, against a plain node:tls server presenting meshca's serving chain with meshca's TLS settings
 * (client certificate requested, CA list = the bundle, no tickets). Measures handshake latency and server CPU.
 */
async function bareTlsBaseline(
  child: ChildLoad,
  running: { server: { servingSvid: { chainPem: string; privateKeyPem?: string } | undefined } },
  caPem: string,
  creds: Array<{ certPem: string; keyPem: string }>,
  count: number,
): Promise<BareTls> {
  const svid = running.server.servingSvid;
  if (!svid?.privateKeyPem) throw new Error('sds bench: no serving certificate for the TLS baseline');
  const { constants } = await import('node:crypto');
  const server = tls.createServer({
    cert: svid.chainPem,
    key: svid.privateKeyPem,
    ca: caPem,
    requestCert: true,
    rejectUnauthorized: false,
    secureOptions: constants.SSL_OP_NO_TICKET,
    ALPNProtocols: ['h2'],
  });
  server.on('secureConnection', (s) => s.on('error', () => undefined));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  try {
    const cpu0 = process.cpuUsage();
    const r = await child.ask({ type: 'bare-tls', port, caPem, creds, count, rate: STORM_RATE }, 'bare-tls-done', 120_000);
    const cpu = process.cpuUsage(cpu0);
    return {
      handshakeMs: r.handshakeMs as Percentiles,
      serverCpuMsPerConnection: round2((cpu.user + cpu.system) / 1000 / count),
      connections: count,
      errors: r.errors as number,
    };
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
}

function perStreamKB(bytes: number, streams: number): number {
  return Math.round(bytes / streams / 102.4) / 10;
}

export async function runSdsBench(opts: SdsBenchOptions): Promise<object> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const limit = openFileLimit();
  const results: Record<string, unknown> = { openFileLimit: limit, cores: (await import('node:os')).availableParallelism() };
  for (const n of opts.streams) {
    const key = `streams_${n}`;
    if (typeof limit === 'number' && n + 200 > limit) {
      results[key] = { skipped: `open-file limit ${limit} is below ${n} connections + margin (each process holds one fd per connection)` };
      continue;
    }
    const t0 = Date.now();
    try {
      results[key] = { ...(await runOne(n, gc)), benchSeconds: Math.round((Date.now() - t0) / 100) / 10 };
    } catch (e) {
      results[key] = { error: (e as Error).message };
    }
    console.error(JSON.stringify({ sds: { [key]: results[key] } }));
  }
  return results;
}

// ---------------------------------------------------------------- child (load generator)

interface ClientState {
  root?: Buffer;
  cert?: Buffer;
  baseRoot?: Buffer;
  baseCert?: Buffer;
  rootAt?: number;
  certAt?: number;
  firstAt?: number;
  fullAt?: number;
  connectedAt?: number;
  openedAt: number;
}

async function childMain(): Promise<void> {
  const protoLoader = await import('@grpc/proto-loader');
  const protoDir = join(fileURLToPath(import.meta.url), '..', '..', '..', '..', 'proto');
  const def = protoLoader.loadSync(['envoy/service/secret/v3/sds.proto', 'envoy/extensions/transport_sockets/tls/v3/secret.proto'], {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
    includeDirs: [protoDir],
  });
  /* eslint-disable @typescript-eslint/no-explicit-any */
  const reqCodec = def['envoy.service.discovery.v3.DiscoveryRequest'] as any;
  const sessions: http2.ClientHttp2Session[] = [];
  const states: ClientState[] = [];
  let tickets = 0;
  let failed = 0;
  const errors = new Map<string, number>();
  const noteError = (m: string) => errors.set(m, (errors.get(m) ?? 0) + 1);
  const frame = (msg: Buffer) => {
    const h = Buffer.alloc(5);
    h.writeUInt32BE(msg.length, 1);
    return Buffer.concat([h, msg]);
  };
  let awaiting: { what: 'root' | 'cert'; resolve: () => void } | undefined;
  /** CPU used by this load process since the last 'mark' (to tell a server-bound fan-out from a client-bound one). */
  let markCpu = process.cpuUsage();
  /** Streams that received a new ROOTCA / certificate since the last 'mark'. */
  const updated = { root: 0, cert: 0 };
  const changed = (what: 'root' | 'cert'): void => {
    updated[what]++;
    if (awaiting?.what === what && updated[what] >= states.length) {
      const a = awaiting;
      awaiting = undefined;
      a.resolve();
    }
  };

  // Minimal protobuf reading/writing for DiscoveryResponse / DiscoveryRequest (field numbers per protocols.md §1.2).
  const readVarint = (b: Buffer, p: { i: number }): number => {
    let v = 0;
    let mul = 1;
    for (;;) {
      const x = b[p.i++]!;
      v += (x & 0x7f) * mul;
      if (x < 0x80) return v;
      mul *= 128;
    }
  };
  const fields = (b: Buffer): Array<{ no: number; val: Buffer }> => {
    const out: Array<{ no: number; val: Buffer }> = [];
    const p = { i: 0 };
    while (p.i < b.length) {
      const tag = readVarint(b, p);
      const wt = tag & 7;
      if (wt === 2) {
        const l = readVarint(b, p);
        out.push({ no: tag >>> 3, val: b.subarray(p.i, p.i + l) });
        p.i += l;
      } else if (wt === 0) readVarint(b, p);
      else throw new Error(`unexpected wire type ${wt}`);
    }
    return out;
  };
  const parseResponse = (msg: Buffer) => {
    let version = '';
    let nonce = '';
    const secrets: Array<{ kind: 'cert' | 'root'; bytes: Buffer }> = [];
    for (const f of fields(msg)) {
      if (f.no === 1) version = f.val.toString();
      else if (f.no === 5) nonce = f.val.toString();
      else if (f.no === 2) {
        const any = fields(f.val);
        const value = any.find((x) => x.no === 2)!.val;
        const kinds = fields(value).map((x) => x.no);
        secrets.push({ kind: kinds.includes(2) ? 'cert' : 'root', bytes: Buffer.from(value) });
      }
    }
    return { version, nonce, secrets };
  };
  const ld = (no: number, v: Buffer | string): Buffer => {
    const body = typeof v === 'string' ? Buffer.from(v) : v;
    const head: number[] = [(no << 3) | 2];
    let n = body.length;
    while (n > 0x7f) {
      head.push((n & 0x7f) | 0x80);
      n = Math.floor(n / 128);
    }
    head.push(n);
    return Buffer.concat([Buffer.from(head), body]);
  };
  const ackTail = Buffer.concat([ld(3, 'default'), ld(3, 'ROOTCA'), ld(4, SECRET_TYPE_URL)]);
  // An Envoy-sized Node (an id, a cluster, Istio-style metadata, the build version and the compiled-in extensions:
  // ~10 KB) in the first request of each stream, as examples/envoy configures (set_node_on_first_message_only);
  // BENCH_NODE_EVERY_REQUEST=1 repeats it in every ACK as Envoy does without that setting.
  const nodeEveryRequest = process.env.BENCH_NODE_EVERY_REQUEST === '1';
  const nodeCodec = def['envoy.config.core.v3.Node'] as any;
  const nodeRest = nodeCodec.serialize({
    cluster: 'bench',
    metadata: { fields: Object.fromEntries(Array.from({ length: 25 }, (_, k) => [`ISTIO_META_FIELD_${k}`, { string_value: `value-${'x'.repeat(30)}-${k}` }])) },
    user_agent_name: 'envoy',
    user_agent_build_version: { version: { major_number: 1, minor_number: 31, patch: 2 } },
    extensions: Array.from({ length: 150 }, (_, k) => ({ name: `envoy.filters.network.ext_${k}`, category: `envoy.filters.category_${k % 20}` })),
    client_features: ['envoy.lb.does_not_support_overprovisioning', 'xds.config.resource-in-sotw', 'xds.config.supports-resource-ttl'],
  }) as Buffer;
  const nodeField = (id: string): Buffer => ld(2, Buffer.concat([ld(1, id), nodeRest]));
  const EMPTY = Buffer.alloc(0);
  const ackFor = (node: Buffer, version: string, nonce: string): Buffer => Buffer.concat([ld(1, version), node, ackTail, ld(5, nonce)]);

  // One SecureContext per identity: parsing the key and certificates per connection would dominate the client's CPU.
  const contexts = new Map<string, tls.SecureContext>();
  function open(i: number, port: number, caPem: string, cred: { certPem: string; keyPem: string }, onFull: () => void): void {
    const st: ClientState = { openedAt: performance.now() };
    states.push(st);
    let secureContext = contexts.get(cred.certPem);
    if (!secureContext) {
      secureContext = tls.createSecureContext({ ca: caPem, cert: cred.certPem, key: cred.keyPem });
      contexts.set(cred.certPem, secureContext);
    }
    const session = http2.connect(`https://127.0.0.1:${port}`, { secureContext, servername: 'localhost' });
    sessions.push(session);
    session.on('error', (e) => {
      noteError(e.message);
    });
    session.socket?.on('session', () => tickets++);
    session.once('connect', () => (st.connectedAt = performance.now()));
    const stream = session.request({
      ':method': 'POST',
      ':path': '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    const names = ['default', 'ROOTCA'];
    const node = nodeField(`bench-node-${i}`);
    stream.write(frame(Buffer.concat([node, reqCodec.serialize({ resource_names: names, type_url: SECRET_TYPE_URL }) as Buffer])));
    let buf: Buffer = Buffer.alloc(0);
    let counted = false;
    stream.on('response', (headers) => {
      const status = headers['grpc-status'];
      if (status !== undefined && status !== '0') {
        failed++;
        counted = true;
        noteError(`grpc-status ${status}: ${String(headers['grpc-message'] ?? '')}`);
      }
    });
    stream.on('trailers', (t) => {
      if (!counted && t['grpc-status'] !== '0') {
        failed++;
        counted = true;
        noteError(`grpc-status ${String(t['grpc-status'])}: ${decodeURIComponent(String(t['grpc-message'] ?? ''))}`);
      }
    });
    stream.on('error', (e) => noteError(e.message));
    stream.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 5) {
        const len = buf.readUInt32BE(1);
        if (buf.length < 5 + len) break;
        const msg = buf.subarray(5, 5 + len);
        buf = buf.subarray(5 + len);
        // A light wire parse (the load generator must not be the bottleneck); content is verified by the tests.
        const r = parseResponse(msg);
        const now = Date.now();
        for (const sec of r.secrets) {
          if (sec.kind === 'cert') {
            st.cert = sec.bytes;
            if (st.baseCert !== undefined && st.certAt === undefined && !sec.bytes.equals(st.baseCert)) {
              st.certAt = now;
              changed('cert');
            }
          } else {
            st.root = sec.bytes;
            if (st.baseRoot !== undefined && st.rootAt === undefined && !sec.bytes.equals(st.baseRoot)) {
              st.rootAt = now;
              changed('root');
            }
          }
        }
        if (st.firstAt === undefined) st.firstAt = performance.now();
        if (st.fullAt === undefined && st.cert && st.root) {
          st.fullAt = performance.now();
          onFull();
        }
        stream.write(frame(ackFor(nodeEveryRequest ? node : EMPTY, r.version, r.nonce)));
      }
    });
  }

  process.on('message', async (m: ChildMsg) => {
    if (m.type === 'open') {
      const port = m.port as number;
      const caPem = m.caPem as string;
      const creds = m.creds as Array<{ certPem: string; keyPem: string }>;
      const count = m.count as number;
      const storm = m.stormCount as number;
      const rate = m.stormRate as number;
      const t0 = performance.now();
      let full = 0;
      let doneResolve!: () => void;
      const allFull = new Promise<void>((r) => (doneResolve = r));
      const onFull = () => {
        full++;
        if (full === count) doneResolve();
      };
      // Storm phase: exactly `rate` new streams per second.
      for (let i = 0; i < storm; i++) {
        const due = t0 + (i * 1000) / rate;
        const wait = due - performance.now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
        open(i, port, caPem, creds[i % creds.length]!, onFull);
      }
      // Wait for the storm to settle before measuring the rest.
      const settle = Date.now() + 20_000;
      while (states.slice(0, storm).some((s) => s.fullAt === undefined) && Date.now() < settle && failed === 0) await new Promise((r) => setTimeout(r, 20));
      const stormStates = states.slice(0, storm);
      process.send!({ type: 'storm-done' });
      // Rest: as fast as the server takes them, at most 64 waiting for their secrets.
      const r0 = performance.now();
      for (let i = storm; i < count; i++) {
        while (i - full - failed >= 64) await new Promise((r) => setTimeout(r, 2));
        open(i, port, caPem, creds[i % creds.length]!, onFull);
      }
      const deadline = Date.now() + 150_000;
      await Promise.race([allFull, new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())))]);
      const restSecs = (performance.now() - r0) / 1000;
      process.send!({
        type: 'opened',
        opened: states.filter((s) => s.fullAt !== undefined).length,
        failed,
        errors: Object.fromEntries([...errors].slice(0, 5)),
        tickets,
        firstInStorm: percentiles(stormStates.filter((s) => s.firstAt !== undefined).map((s) => s.firstAt! - s.openedAt)),
        handshakeInStorm: percentiles(stormStates.filter((s) => s.connectedAt !== undefined).map((s) => s.connectedAt! - s.openedAt)),
        fullInStorm: percentiles(stormStates.filter((s) => s.fullAt !== undefined).map((s) => s.fullAt! - s.openedAt)),
        restRate: count > storm ? Math.round((count - storm) / restSecs) : null,
        wallSeconds: Math.round((performance.now() - t0) / 100) / 10,
      });
    } else if (m.type === 'bare-tls') {
      // Baseline: the same mTLS handshakes (same client certificates, server chain and rate) against a plain
      // node:tls server, so the storm figures can be read as ratios on whatever machine runs this.
      const { port, caPem } = m as unknown as { port: number; caPem: string };
      const creds = m.creds as Array<{ certPem: string; keyPem: string }>;
      const count = m.count as number;
      const rate = m.rate as number;
      const socks: tls.TLSSocket[] = [];
      const lat: number[] = [];
      let errs = 0;
      const t0 = performance.now();
      await new Promise<void>((resolve) => {
        let settled = 0;
        const done = () => {
          if (++settled === count) resolve();
        };
        void (async () => {
          for (let i = 0; i < count; i++) {
            const wait = t0 + (i * 1000) / rate - performance.now();
            if (wait > 1) await new Promise((r) => setTimeout(r, wait));
            const cred = creds[i % creds.length]!;
            let secureContext = contexts.get(cred.certPem);
            if (!secureContext) {
              secureContext = tls.createSecureContext({ ca: caPem, cert: cred.certPem, key: cred.keyPem });
              contexts.set(cred.certPem, secureContext);
            }
            const start = performance.now();
            const sock = tls.connect({ host: '127.0.0.1', port, secureContext, servername: 'localhost', ALPNProtocols: ['h2'] }, () => {
              lat.push(performance.now() - start);
              done();
            });
            sock.on('error', () => {
              errs++;
              done();
            });
            socks.push(sock);
          }
        })();
      });
      for (const sock of socks) sock.destroy();
      process.send!({ type: 'bare-tls-done', handshakeMs: percentiles(lat), errors: errs });
    } else if (m.type === 'mark') {
      for (const s of states) {
        s.baseRoot = s.root;
        s.baseCert = s.cert;
        delete s.rootAt;
        delete s.certAt;
      }
      updated.root = 0;
      updated.cert = 0;
      markCpu = process.cpuUsage();
      process.send!({ type: 'marked' });
    } else if (m.type === 'await') {
      const what = m.what as 'root' | 'cert';
      const key = what === 'root' ? 'rootAt' : 'certAt';
      await Promise.race([
        new Promise<void>((resolve) => {
          if (updated[what] >= states.length) resolve();
          else awaiting = { what, resolve };
        }),
        new Promise((r) => setTimeout(r, m.timeoutMs as number)),
      ]);
      awaiting = undefined;
      let lastAt = 0;
      let count = 0;
      for (const s of states) {
        const t = s[key];
        if (t !== undefined) {
          count++;
          if (t > lastAt) lastAt = t;
        }
      }
      const cpu = process.cpuUsage(markCpu);
      process.send!({ type: `done-${what}`, lastAt, count, missing: states.length - count, cpuMs: (cpu.user + cpu.system) / 1000 });
    } else if (m.type === 'close') {
      for (const s of sessions) s.destroy();
      setTimeout(() => process.exit(0), 100);
    }
  });
}

if (process.argv.includes(CHILD_FLAG)) {
  void childMain();
} else if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const streams = (process.argv[2] ?? process.env.BENCH_STREAMS ?? '1000,10000').split(',').map(Number);
  runSdsBench({ streams }).then(
    (r) => {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      process.exit(0);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
