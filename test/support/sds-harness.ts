import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import type { Authority } from '../../src/authority/types.js';
import { Authorizer, type ControllerRule } from '../../src/identity/authorization.js';
import { startGrpcServerWithSds, type RunningGrpcServer } from '../../src/servers/sds-server.js';
import type { Clock } from '../../src/util/clock.js';
import { FakeAuthority } from '../fakes/authority.js';
import { ManualClock } from '../fakes/clock.js';
import { SdsClient, type Node } from './sds-client.js';

/**
 * Starts meshca's gRPC server with SDS on 127.0.0.1:0 against a FakeAuthority (or a given Authority) and makes
 * SDS clients with real mTLS client certificates. The ManualClock starts at the real time because the client's TLS
 * stack checks the server certificate against the wall clock.
 */
export interface HarnessOptions {
  readonly authority?: Authority;
  readonly clock?: Clock;
  readonly ttlSeconds?: number;
  readonly controllers?: readonly ControllerRule[];
  readonly clientCaFile?: string;
  readonly uds?: { path: string; identity: string };
  readonly log?: Logger;
  readonly maxConcurrentStreams?: number;
  /**
   * client() mints certificates from a separate bootstrap CA (server.grpc.clientCaFile) instead of the authority:
   * for tests that take roots out of the authority's bundle while clients stay connected.
   */
  readonly bootstrapClients?: boolean;
}

export interface Harness {
  readonly clock: Clock;
  readonly manual: ManualClock | undefined;
  readonly authority: Authority;
  readonly fake: FakeAuthority | undefined;
  readonly running: RunningGrpcServer;
  readonly metrics: Registry;
  readonly target: string;
  /** A client authenticated as `spiffeId` (certificate signed by the authority's CA, 1 h, clock time). */
  client(spiffeId: string, node?: Node): Promise<SdsClient>;
  /** A client with an explicit certificate (or none). */
  rawClient(tls: { certPem?: string; keyPem?: string }, node?: Node): SdsClient;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  close(): Promise<void>;
}

export async function startHarness(opts: HarnessOptions = {}): Promise<Harness> {
  const manual = opts.clock ? undefined : new ManualClock(Date.now());
  const clock = opts.clock ?? manual!;
  const fake = opts.authority ? undefined : await FakeAuthority.create({ clock, trustDomain: 'example.org', ttlSeconds: opts.ttlSeconds ?? 3600 });
  const authority = opts.authority ?? fake!;
  const metrics = new Registry();
  const log = opts.log ?? pino({ level: process.env.SDS_TEST_LOG ?? 'silent' });
  let bootstrap: { ca: FakeAuthority; dir: string } | undefined;
  if (opts.bootstrapClients) {
    const dir = await mkdtemp(join(tmpdir(), 'meshca-harness-'));
    bootstrap = { ca: await FakeAuthority.create({ clock, trustDomain: 'example.org' }), dir };
    await writeFile(join(dir, 'bootstrap-ca.pem'), bootstrap.ca.bundle().pem);
  }
  const clientCaFile = bootstrap ? join(bootstrap.dir, 'bootstrap-ca.pem') : opts.clientCaFile ?? '';
  const running = await startGrpcServerWithSds(
    {
      grpc: { address: '127.0.0.1:0', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], clientCaFile, maxMessageBytes: 4 << 20, ...(opts.maxConcurrentStreams ? { maxConcurrentStreams: opts.maxConcurrentStreams } : {}) },
      uds: opts.uds ?? { path: '', identity: '' },
    },
    { authority, authorizer: new Authorizer(opts.controllers ?? []), clock, log, metrics },
  );
  const target = `127.0.0.1:${running.port}`;
  const clients: SdsClient[] = [];
  const rawClient = (tls: { certPem?: string; keyPem?: string }, node?: Node): SdsClient => {
    const c = new SdsClient({
      target,
      tls: { caPem: authority.bundle().pem, ...tls },
      node: node ?? { id: 'node-1', cluster: 'test' },
    });
    clients.push(c);
    return c;
  };
  return {
    clock,
    manual,
    authority,
    fake,
    running,
    metrics,
    target,
    async client(spiffeId, node) {
      const issuer = bootstrap?.ca ?? fake;
      if (!issuer) throw new Error('harness.client needs the FakeAuthority');
      const now = clock.nowMs();
      const leaf = await issuer.makeLeaf({ uris: [spiffeId], notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000) });
      return rawClient({ certPem: leaf.certPem, keyPem: leaf.keyPem }, node);
    },
    rawClient,
    async metric(name, labels = {}) {
      const m = await metrics.getSingleMetric(name)?.get();
      if (!m) return 0;
      return m.values
        .filter((v) => Object.entries(labels).every(([k, val]) => String(v.labels[k]) === val))
        .reduce((a, v) => a + v.value, 0);
    },
    async close() {
      for (const c of clients) c.close();
      await running.close(200);
      if (bootstrap) await rm(bootstrap.dir, { recursive: true, force: true });
    },
  };
}
