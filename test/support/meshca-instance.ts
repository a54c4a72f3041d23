import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { parseConfig } from '../../src/config/load.js';
import { openCore, type Core } from '../../src/core.js';
import { Authorizer } from '../../src/identity/authorization.js';
import { buildGrpcServerWithSds, type RunningGrpcServer } from '../../src/servers/sds-server.js';
import { callAuthenticator } from '../../src/servers/call-auth.js';
import { registerControllerServices } from '../../src/servers/controller/index.js';
import { registerIstioService } from '../../src/servers/istio/service.js';
import { BundleRegistry } from '../../src/bundle/registry.js';
import { registryBundleProvider } from '../../src/bundle/sds-provider.js';
import { bundleEndpointSchema, bundleFilesSchema, federationSchema } from '../../src/bundle/config.js';
import { startBundleEndpoint, type BundleEndpoint } from '../../src/bundle/endpoint.js';
import { FederationManager } from '../../src/bundle/federation.js';
import { startFilePublisher, type FilePublisher } from '../../src/bundle/file-publisher.js';
import { SystemClock } from '../../src/util/clock.js';
import { FileStore } from '../../src/store/file-store.js';
import { reentrant } from './reentrant-store.js';
import { apiClients, type ApiClients } from './api-client.js';

/**
 * One meshca composed from its real parts (core with the internal backend, gRPC server with SDS + controller API +
 * Istio CA, bundle registry, optional bundle endpoint / federation / bundle files), listening on 127.0.0.1:0.
 * Used until src/main.ts exposes these pieces through startServer().
 */
export interface InstanceOptions {
  readonly trustDomain: string;
  readonly controllers?: readonly { id: string; allow: string[]; maxTtl?: string | number; generateKeys?: boolean; dnsNames?: string[] }[];
  readonly workload?: { ttl?: string | number; maxTtl?: string | number };
  readonly maxMessageBytes?: number;
  /** Raw `federation` section. */
  readonly federation?: unknown;
  /** Raw `server.bundleEndpoint` section. */
  readonly bundleEndpoint?: unknown;
  /** Raw `bundle` section. */
  readonly bundle?: unknown;
  /** Reuse a data directory (restart tests); otherwise a fresh temp dir removed by close(). */
  readonly dataDir?: string;
  readonly fileCheckIntervalMs?: number;
}

export interface Instance {
  readonly trustDomain: string;
  readonly core: Core;
  readonly registry: BundleRegistry;
  readonly grpc: RunningGrpcServer;
  readonly grpcPort: number;
  readonly endpoint: BundleEndpoint | undefined;
  federation: FederationManager | undefined;
  /** Starts federation later (when the peers' endpoints are known); closed by close(). */
  federate(raw: unknown): Promise<FederationManager>;
  readonly files: FilePublisher | undefined;
  readonly dataDir: string;
  /** Every log line (parsed JSON). */
  readonly logs: Record<string, unknown>[];
  readonly log: Logger;
  /** PEM roots of this instance's trust domain (to verify its gRPC server). */
  rootsPem(): string;
  /** A client certificate (chain + key PEM) for `spiffeId`, issued by this instance's CA. */
  credentialsFor(spiffeId: string): Promise<{ certPem: string; keyPem: string }>;
  /** API clients authenticated as `spiffeId` (or without a client certificate when undefined). */
  clientsAs(spiffeId: string | undefined): Promise<ApiClients>;
  close(): Promise<void>;
}

export async function startInstance(o: InstanceOptions): Promise<Instance> {
  const ownDir = o.dataDir === undefined;
  const dataDir = o.dataDir ?? (await mkdtemp(join(tmpdir(), `meshca-${o.trustDomain}-`)));
  const cfg = parseConfig({
    trustDomain: o.trustDomain,
    dataDir,
    signing: { workers: 0 },
    log: { level: 'info' },
    ...(o.workload ? { workload: o.workload } : {}),
    authorization: { controllers: o.controllers ?? [] },
    server: { grpc: { address: '127.0.0.1:0', ...(o.maxMessageBytes ? { maxMessageBytes: o.maxMessageBytes } : {}) } },
  });
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  const clock = new SystemClock();
  const core = await openCore(cfg, { log, clock, workers: 0, store: reentrant(await FileStore.open(dataDir)) });
  core.authority.start();
  const closers: (() => Promise<void>)[] = [async () => core.close()];
  const closeAll = async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    if (ownDir) await rm(dataDir, { recursive: true, force: true });
  };
  try {
    const registry = new BundleRegistry(core.authority.bundle(), { ownRefreshHintSeconds: 300 });
    const unattach = registry.attachAuthority(core.authority);
    closers.push(async () => unattach());
    const authorizer = Authorizer.fromConfig(cfg);
    const grpc = await buildGrpcServerWithSds(
      {
        grpc: { address: '127.0.0.1:0', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], clientCaFile: '', maxMessageBytes: cfg.server.grpc.maxMessageBytes },
        uds: { path: '', identity: '' },
      },
      { authority: core.authority, authorizer, clock, log, metrics: core.metrics, bundles: registryBundleProvider(registry) },
    );
    const authenticate = callAuthenticator(grpc.authenticator);
    const workload = { ttlSeconds: cfg.workload.ttl, maxTtlSeconds: cfg.workload.maxTtl };
    registerControllerServices(grpc.server, {
      authority: core.authority,
      authorizer,
      authenticate,
      log,
      metrics: core.metrics,
      bundles: registry,
      workload,
      maxMessageBytes: cfg.server.grpc.maxMessageBytes,
    });
    registerIstioService(grpc.server, { authority: core.authority, authorizer, authenticate, log, metrics: core.metrics, workload });
    await grpc.server.start();
    closers.push(() => grpc.close(1000));

    let endpoint: BundleEndpoint | undefined;
    if (o.bundleEndpoint !== undefined) {
      endpoint = await startBundleEndpoint(bundleEndpointSchema.parse(o.bundleEndpoint), {
        registry,
        log,
        clock,
        metrics: core.metrics,
        authority: core.authority,
        ...(o.fileCheckIntervalMs ? { fileCheckIntervalMs: o.fileCheckIntervalMs } : {}),
      });
      const ep = endpoint;
      closers.push(() => ep.close());
    }
    const federate = async (raw: unknown): Promise<FederationManager> => {
      const fed = new FederationManager(federationSchema.parse(raw), {
        registry,
        log,
        clock,
        metrics: core.metrics,
        store: core.store,
        ...(o.fileCheckIntervalMs ? { fileCheckIntervalMs: o.fileCheckIntervalMs } : {}),
        fetchTimeoutMs: 3000,
      });
      closers.push(() => fed.close());
      await fed.start();
      return fed;
    };
    const federation = o.federation !== undefined ? await federate(o.federation) : undefined;
    let files: FilePublisher | undefined;
    if (o.bundle !== undefined) {
      files = await startFilePublisher(bundleFilesSchema.parse(o.bundle), { registry, log, metrics: core.metrics });
      const f = files;
      closers.push(() => f.close());
    }
    const credentialsFor = async (spiffeId: string) => {
      const s = await core.authority.issue({ spiffeId, source: 'cli' });
      return { certPem: s.chainPem, keyPem: s.privateKeyPem! };
    };
    const rootsPem = () => core.authority.bundle().pem;
    const inst: Instance = {
      trustDomain: o.trustDomain,
      core,
      registry,
      grpc,
      grpcPort: grpc.port,
      endpoint,
      federation,
      federate: async (raw) => {
        inst.federation = await federate(raw);
        return inst.federation;
      },
      files,
      dataDir,
      logs,
      log,
      rootsPem,
      credentialsFor,
      clientsAs: async (id) => {
        const creds = id ? await credentialsFor(id) : undefined;
        return apiClients(grpc.port, { rootsPem: rootsPem(), ...(creds ? creds : {}) });
      },
      close: closeAll,
    };
    return inst;
  } catch (e) {
    await closeAll();
    throw e;
  }
}
