import 'reflect-metadata';
import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
import { openCore, ttlNotCovered, type Core } from './core.js';
import { Authorizer } from './identity/authorization.js';
import { startOpsServer } from './servers/ops-http.js';
import { splitHostPort } from './util/address.js';
import { buildGrpcServerWithSds, type RunningGrpcServer } from './servers/sds-server.js';
import { callAuthenticator } from './servers/call-auth.js';
import { registerControllerServices } from './servers/controller/index.js';
import { registerIstioService } from './servers/istio/service.js';
import { BundleRegistry } from './bundle/registry.js';
import { registryBundleProvider } from './bundle/sds-provider.js';
import { startBundleEndpoint } from './bundle/endpoint.js';
import { FederationManager } from './bundle/federation.js';
import { startFilePublisher } from './bundle/file-publisher.js';
import { createLogger } from './telemetry/logger.js';
import { SystemClock, type Clock } from './util/clock.js';
import { errorMessage } from './util/errors.js';
import { formatDuration } from './util/duration.js';

/** Hard limit for a SIGTERM drain; the brief promises exit within 20 s. */
const DRAIN_LIMIT_MS = 15_000;
/** Open gRPC calls get this long to finish before they are cut. */
const GRPC_DRAIN_MS = 5_000;
const OWN_REFRESH_HINT_SECONDS = 300;

export interface RunningServer {
  readonly core: Core;
  readonly registry: BundleRegistry;
  readonly grpc: RunningGrpcServer;
  readonly httpPort: number;
  readonly grpcPort: number;
  readonly bundleEndpointPort: number | undefined;
  readonly federation: FederationManager | undefined;
  /** Drains and stops everything; resolves when all listeners are closed. */
  stop(): Promise<void>;
}

export interface StartOptions {
  readonly log?: Logger;
  readonly clock?: Clock;
}

/**
 * The composition root: opens the CA core and starts the listeners. Only this module sees every part.
 * Order: core (state, backend, authority) → bundle registry → gRPC (SDS, controller API, Istio CA) → bundle
 * distribution (federation, bundle endpoint, files, Kubernetes publishers) → ops HTTP. Stopped in reverse.
 */
export async function startServer(cfg: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger(cfg.log.level);
  const clock = opts.clock ?? new SystemClock();
  warnIfTtlNotCovered(cfg, log);
  const core = await openCore(cfg, { log, clock });
  const { authority, metrics } = core;
  const closers: { name: string; close: () => Promise<void> }[] = [{ name: 'core', close: () => core.close() }];
  const draining = new AbortController();
  /** Ops HTTP: closed after everything else, so /readyz answers 503 for the whole drain. */
  let opsServer: { close(): Promise<void> } | undefined;
  const stopAll = async () => {
    // /readyz answers 503 from here on (load balancers and probes see the drain), open WatchBundle streams end with
    // UNAVAILABLE (SDS streams do when the gRPC server closes), and ops HTTP closes last.
    draining.abort();
    const last = opsServer ? [{ name: 'ops-http', close: () => opsServer!.close() }] : [];
    for (const c of [...closers.reverse(), ...last]) await c.close().catch((e) => log.warn({ err: errorMessage(e), part: c.name }, 'close failed'));
  };
  try {
    if (cfg.state.kubernetes) {
      // HA: every replica signs and serves; only the Lease holder rotates; replicas follow the Secret by watch.
      const k = cfg.state.kubernetes;
      const { connectKube } = await import('./kube/client.js');
      const { LeaseElector, createHaCoordinator } = await import('./kube/lease.js');
      const kube = await connectKube({ component: 'state', configKey: 'state.kubernetes.kubeconfig', ...(k.kubeconfig ? { kubeconfig: k.kubeconfig } : {}) });
      const elector = new LeaseElector({
        kube,
        namespace: k.lease.namespace,
        name: k.lease.name,
        ...(k.lease.identity ? { identity: k.lease.identity } : {}),
        leaseDurationSeconds: k.lease.duration,
        clock,
        log: log.child({ component: 'lease' }),
        metrics,
      });
      const ha = createHaCoordinator({ store: core.store, elector, authority, log });
      closers.push({ name: 'ha', close: () => ha.stop({ release: true }) });
    } else {
      authority.start();
    }
    const registry = new BundleRegistry(authority.bundle(), { ownRefreshHintSeconds: cfg.server.bundleEndpoint?.refreshHint ?? OWN_REFRESH_HINT_SECONDS });
    const detach = registry.attachAuthority(authority);
    closers.push({ name: 'registry', close: async () => detach() });

    const authorizer = Authorizer.fromConfig(cfg);
    const workload = { ttlSeconds: cfg.workload.ttl, maxTtlSeconds: cfg.workload.maxTtl };
    const tokenAuthenticator = cfg.auth.kubernetesTokens.enabled
      ? await (await import('./auth/token.js')).createTokenAuthenticator(cfg.auth.kubernetesTokens, { trustDomain: cfg.trustDomain, clock, log, metrics })
      : undefined;
    const grpc = await buildGrpcServerWithSds(cfg.server, {
      ...(tokenAuthenticator ? { tokenAuthenticator } : {}),
      authority,
      authorizer,
      clock,
      log,
      metrics,
      bundles: registryBundleProvider(registry),
    });
    const authenticate = callAuthenticator(grpc.authenticator);
    registerControllerServices(grpc.server, {
      authority,
      authorizer,
      authenticate,
      log,
      metrics,
      bundles: registry,
      workload,
      maxMessageBytes: cfg.server.grpc.maxMessageBytes,
      draining: draining.signal,
    });
    registerIstioService(grpc.server, { authority, authorizer, authenticate, log, metrics, workload });
    const { port: grpcPort } = await grpc.server.start();
    closers.push({ name: 'grpc', close: () => grpc.close(GRPC_DRAIN_MS) });
    log.info({ address: `${splitHostPort(cfg.server.grpc.address).host}:${grpcPort}`, uds: cfg.server.uds.path || undefined }, 'gRPC listening (SDS, IdentityService, BundleService, IstioCertificateService)');

    let federation: FederationManager | undefined;
    if (cfg.federation.trustDomains.length > 0) {
      federation = new FederationManager(cfg.federation, { registry, log, clock, metrics, store: core.store });
      await federation.start();
      const f = federation;
      closers.push({ name: 'federation', close: () => f.close() });
    }
    let bundleEndpointPort: number | undefined;
    if (cfg.server.bundleEndpoint) {
      const ep = await startBundleEndpoint(cfg.server.bundleEndpoint, { registry, log, clock, metrics, authority });
      bundleEndpointPort = ep.port;
      closers.push({ name: 'bundle-endpoint', close: () => ep.close() });
      log.info({ address: `${ep.host}:${ep.port}`, profile: cfg.server.bundleEndpoint.profile }, 'SPIFFE bundle endpoint listening');
    }
    if (cfg.bundle.files.length > 0) {
      const files = await startFilePublisher(cfg.bundle, { registry, log, metrics });
      closers.push({ name: 'bundle-files', close: () => files.close() });
    }
    if (cfg.bundlePublishers.kubernetes) {
      const { startPublishers } = await import('./publish/index.js');
      const pubs = await startPublishers(cfg.bundlePublishers, { authority, log, clock });
      closers.push({ name: 'publishers', close: () => pubs.close() });
    }

    const { host, port } = splitHostPort(cfg.server.http.address);
    const ops = await startOpsServer({ host, port, metrics, health: () => (draining.signal.aborted ? { ready: false, reason: 'shutting down' } : authority.health()) });
    opsServer = ops;
    log.info({ address: `${host}:${ops.port}` }, 'ops HTTP listening (/healthz, /readyz, /metrics)');

    let stopped: Promise<void> | undefined;
    return {
      core,
      registry,
      grpc,
      httpPort: ops.port,
      grpcPort,
      bundleEndpointPort,
      federation,
      stop: () => (stopped ??= stopAll()),
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/**
 * A config that is valid but will cut leaves short part of the time (meshca_signing_ca_cannot_cover_ttl 1 for the
 * last 1/6 of each signing CA's life) is told at start, when the operator is looking, not only by a metric later.
 */
function warnIfTtlNotCovered(cfg: Config, log: Logger): void {
  const gap = ttlNotCovered(cfg);
  if (!gap) return;
  const ttl = formatDuration(cfg.workload.ttl);
  const caTtl = formatDuration(gap.signingCaTtlSeconds);
  const shortest = formatDuration(gap.shortestLeafSeconds);
  log.warn(
    { workloadTtl: ttl, signingCaTtlKey: gap.signingCaTtlKey, signingCaTtl: caTtl, shortestLeaf: shortest },
    `workload.ttl ${ttl} is longer than 1/6 of ${gap.signingCaTtlKey} ${caTtl}: the active signing CA may have only ` +
      `${shortest} left, so a leaf may be as short as ${shortest}; set ${gap.signingCaTtlKey} to at least 6 x workload.ttl ` +
      `(${formatDuration(cfg.workload.ttl * 6)}) or lower workload.ttl`,
  );
}

/** `meshca serve`: start, then drain and exit on SIGTERM/SIGINT. */
export async function runServe(cfg: Config): Promise<void> {
  const log = createLogger(cfg.log.level);
  const server = await startServer(cfg, { log });
  log.info({ trustDomain: cfg.trustDomain, dataDir: cfg.dataDir, authority: cfg.authority.type }, 'meshca ready');
  await new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      log.info({ signal: sig }, 'draining');
      const hard = setTimeout(() => {
        log.error('drain took too long; exiting');
        process.exit(1);
      }, DRAIN_LIMIT_MS);
      hard.unref();
      server.stop().then(
        () => {
          log.info('stopped');
          resolve();
        },
        (e) => {
          log.error({ err: errorMessage(e) }, 'stop failed');
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  process.exit(0);
}
