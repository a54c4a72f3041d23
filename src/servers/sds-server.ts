import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Authority } from '../authority/types.js';
import type { Authenticator } from '../auth/types.js';
import { CompositeAuthenticator } from '../auth/composite.js';
import { MtlsAuthenticator } from '../auth/mtls.js';
import { SvidCache } from '../cache/svid-cache.js';
import type { Authorizer } from '../identity/authorization.js';
import { parseWorkloadId } from '../identity/spiffe-id.js';
import type { Clock } from '../util/clock.js';
import { CaError, failedPrecondition } from '../util/errors.js';
import { pemToDers } from '../x509/pem.js';
import { dnLine, isSelfSigned } from '../x509/cert-parse.js';
import { callAuthenticator } from './call-auth.js';
import { GrpcServer } from './grpc-server.js';
import { authorityBundleProvider, type BundleProvider } from './sds/bundles.js';
import { SdsService } from './sds/service.js';

/** The config keys this server reads (a slice of the meshca Config: server.grpc and server.uds). */
export interface GrpcServerConfig {
  readonly grpc: {
    readonly address: string;
    readonly dnsNames: readonly string[];
    readonly ipAddresses: readonly string[];
    /** Path of a PEM bundle trusted for client certificates only; '' = none. */
    readonly clientCaFile: string;
    readonly maxMessageBytes: number;
    readonly maxConcurrentStreams?: number;
  };
  readonly uds: { readonly path: string; readonly identity: string };
}

export interface GrpcServerDeps {
  readonly authority: Authority;
  readonly authorizer: Authorizer;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Registry;
  /** Bundles for ROOTCA / spiffe://<td> / ALL; default: our own domain from the authority (federation passes more). */
  readonly bundles?: BundleProvider;
  /** Bearer-token authenticator (Kubernetes ServiceAccount tokens); absent = bearer tokens are refused. */
  readonly tokenAuthenticator?: Authenticator;
  /** Passed to GrpcServer (tests, benchmarks). */
  readonly servingTtlSeconds?: number;
}

export interface RunningGrpcServer {
  readonly server: GrpcServer;
  readonly sds: SdsService;
  readonly cache: SvidCache;
  readonly authenticator: Authenticator;
  /** Bound TCP port. */
  readonly port: number;
  /** Graceful stop: drain open calls for up to timeoutMs, then cut them; releases every timer and listener. */
  close(timeoutMs?: number): Promise<void>;
}

/**
 * Builds meshca's gRPC server with the SDS service registered and starts it (issues the serving certificate, binds
 * server.grpc.address over TLS and server.uds.path if set). Other services (Istio CA, controller API) can be added
 * with `running.server.addService()` only BEFORE start, so use buildGrpcServerWithSds() + start() for those.
 */
export async function startGrpcServerWithSds(config: GrpcServerConfig, deps: GrpcServerDeps): Promise<RunningGrpcServer> {
  const built = await buildGrpcServerWithSds(config, deps);
  const { port } = await built.server.start();
  return { ...built, port };
}

/** Like startGrpcServerWithSds() but does not start: add more services to `server`, then `await server.start()`. */
export async function buildGrpcServerWithSds(
  config: GrpcServerConfig,
  deps: GrpcServerDeps,
): Promise<Omit<RunningGrpcServer, 'port'> & { readonly port: number }> {
  const { authority, clock, log, metrics } = deps;
  let clientCaPem: string | undefined;
  let bootstrapDers: Buffer[] = [];
  if (config.grpc.clientCaFile) {
    try {
      clientCaPem = await readFile(config.grpc.clientCaFile, 'utf8');
    } catch (e) {
      throw failedPrecondition(`server.grpc.clientCaFile ${config.grpc.clientCaFile} cannot be read: ${(e as Error).message}`);
    }
    try {
      bootstrapDers = pemToDers(clientCaPem);
    } catch (e) {
      throw failedPrecondition(`server.grpc.clientCaFile ${config.grpc.clientCaFile}: ${(e as CaError).message}`);
    }
    if (bootstrapDers.length === 0) throw failedPrecondition(`server.grpc.clientCaFile ${config.grpc.clientCaFile} holds no CERTIFICATE block`);
    // OpenSSL verifies client chains up to a self-signed anchor, and its refusal is final (src/auth/mtls.ts): an
    // intermediate here would make every client of that CA fail, so say so at start.
    bootstrapDers.forEach((der, i) => {
      const x = new X509Certificate(der);
      if (!x.ca || !isSelfSigned(x)) {
        throw failedPrecondition(
          `server.grpc.clientCaFile ${config.grpc.clientCaFile}: certificate ${i + 1} ("${dnLine(x.subject)}") is not a self-signed root CA; ` +
            'list the root of the bootstrap certificates (clients send their intermediates with their certificate)',
        );
      }
    });
  }
  let udsIdentity: string | undefined;
  if (config.uds.path) {
    try {
      udsIdentity = parseWorkloadId(config.uds.identity, authority.trustDomain).uri;
    } catch (e) {
      throw failedPrecondition(`server.uds.identity: ${(e as CaError).message}`);
    }
  }
  const mtls = new MtlsAuthenticator({
    trustDomain: authority.trustDomain,
    bundle: () => authority.bundle(),
    bootstrapCasDer: bootstrapDers,
    clock,
    log: log.child({ component: 'mtls' }),
    metrics,
  });
  const authenticator = new CompositeAuthenticator({
    mtls,
    ...(deps.tokenAuthenticator ? { token: deps.tokenAuthenticator } : {}),
    ...(udsIdentity ? { udsIdentity } : {}),
    log,
    metrics,
  });
  const cache = new SvidCache({ authority, clock, log: log.child({ component: 'svid-cache' }) });
  const sds = new SdsService({
    authority,
    cache,
    bundles: deps.bundles ?? authorityBundleProvider(authority),
    authorizer: deps.authorizer,
    authenticate: callAuthenticator(authenticator),
    clock,
    log: log.child({ component: 'sds' }),
    metrics,
  });
  const server = new GrpcServer({
    address: config.grpc.address,
    dnsNames: config.grpc.dnsNames,
    ipAddresses: config.grpc.ipAddresses,
    ...(clientCaPem ? { clientCaPem } : {}),
    maxMessageBytes: config.grpc.maxMessageBytes,
    ...(config.grpc.maxConcurrentStreams !== undefined ? { maxConcurrentStreams: config.grpc.maxConcurrentStreams } : {}),
    ...(config.uds.path ? { udsPath: config.uds.path } : {}),
    authority,
    clock,
    log: log.child({ component: 'grpc' }),
    ...(deps.servingTtlSeconds !== undefined ? { servingTtlSeconds: deps.servingTtlSeconds } : {}),
    stillTrusted: (chain) => mtls.reachesAnchor(chain),
  });
  server.addService(sds.definition, sds.implementation());
  server.addService(sds.adsDefinition, sds.adsImplementation());
  return {
    server,
    sds,
    cache,
    authenticator,
    get port() {
      return server.port;
    },
    async close(timeoutMs = 5000) {
      sds.close();
      await server.drain(timeoutMs);
      cache.close();
    },
  };
}
