import { z } from 'zod';
import { dnsName, duration, keyType, listenAddress, spiffeIdPattern, trustDomain } from './fields.js';
import { parseWorkloadId } from '../identity/spiffe-id.js';
import { reservedPatternOf } from '../identity/authorization.js';
import { authoritySchema } from '../../providers/index.js';
import { bundlePublishersSchema } from '../publish/config.js';
import { authConfigSchema } from '../auth/config.js';
import { stateSchema } from '../store/config.js';
import { bundleEndpointSchema, bundleFilesSchema, checkFederationAgainstOwn, federationSchema } from '../bundle/config.js';

/**
 * The whole meshca configuration. Every key is documented in README.md ("Configuration reference"); unknown keys are
 * errors that name their path. The parsed result is deep-frozen by load.ts and never re-checked by the core.
 */
const grpcSchema = z.strictObject({
  address: listenAddress.default('127.0.0.1:8443'),
  dnsNames: z.array(dnsName).default(['localhost']),
  ipAddresses: z.array(z.ipv4().or(z.ipv6())).default(['127.0.0.1']),
  /** Extra PEM bundle trusted for client certificates only (proxies' bootstrap certificates). */
  clientCaFile: z.string().default(''),
  maxMessageBytes: z.number().int().min(16 * 1024).max(64 * 1024 * 1024).default(4 * 1024 * 1024),
  /** Concurrent streams one client connection may hold (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: z.number().int().min(10).max(100_000).default(1000),
});

const udsSchema = z
  .strictObject({
    path: z.string().default(''),
    /** SPIFFE ID given to callers on the Unix socket (the socket is 0600: only its owner can connect). */
    identity: z.string().default(''),
  })
  .superRefine((v, ctx) => {
    if (v.path && !v.identity) ctx.addIssue({ code: 'custom', path: ['identity'], message: 'is required when server.uds.path is set' });
  });

const httpSchema = z.strictObject({
  address: listenAddress.default('127.0.0.1:8080'),
});

const workloadSchema = z.strictObject({
  ttl: duration({ min: 10 }).default(3600),
  maxTtl: duration({ min: 10 }).default(86400),
  keyType: keyType.default('ec-p256'),
  renewFraction: z.number().gt(0).lt(1).default(0.5),
  backdate: duration({ max: 120 }).default(30),
});

const controllerSchema = z.strictObject({
  id: spiffeIdPattern,
  allow: z.array(spiffeIdPattern).min(1),
  maxTtl: duration({ min: 10 }).default(86400),
  generateKeys: z.boolean().default(false),
  /** DNS SANs it may request: exact names or "*.<suffix>"; absent = any, [] = none (authorization.ts). */
  dnsNames: z.array(dnsName).optional(),
});

export const configSchema = z
  .strictObject({
    trustDomain: trustDomain.default('cluster.local'),
    dataDir: z.string().min(1).default('./.meshca'),
    /** Where CA state lives when not in dataDir (HA on Kubernetes: one Secret shared by every replica). */
    state: stateSchema,
    server: z
      .strictObject({
        grpc: grpcSchema.prefault({}),
        uds: udsSchema.prefault({}),
        http: httpSchema.prefault({}),
        /** SPIFFE bundle endpoint (absent = not served). */
        bundleEndpoint: bundleEndpointSchema.optional(),
      })
      .prefault({}),
    workload: workloadSchema.prefault({}),
    authority: authoritySchema,
    federation: federationSchema.prefault({}),
    bundle: bundleFilesSchema.prefault({}),
    bundlePublishers: bundlePublishersSchema,
    auth: authConfigSchema,
    authorization: z
      .strictObject({ controllers: z.array(controllerSchema).default([]) })
      .prefault({}),
    signing: z
      .strictObject({
        /** Worker threads that sign leaves; 0 signs on the main thread; "auto" = one per core. */
        workers: z
          .union([z.literal('auto'), z.number().int().min(0).max(64)], { error: 'must be "auto" or an integer from 0 to 64' })
          .default('auto'),
      })
      .prefault({}),
    log: z
      .strictObject({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info') })
      .prefault({}),
  })
  .superRefine((c, ctx) => {
    for (const issue of checkFederationAgainstOwn(c.trustDomain, c.federation)) {
      ctx.addIssue({ code: 'custom', path: issue.path, message: issue.message });
    }
    // IDs meshca itself gives out must be workload IDs of its own trust domain; checked here so that a wrong one is a
    // config error (exit 2) rather than a start-up failure.
    const served: [string[], string | undefined][] = [
      [['server', 'uds', 'identity'], c.server.uds.path ? c.server.uds.identity : undefined],
      [['server', 'bundleEndpoint', 'spiffeId'], c.server.bundleEndpoint?.spiffeId],
    ];
    for (const [path, id] of served) {
      if (!id) continue;
      try {
        parseWorkloadId(id, c.trustDomain);
      } catch (e) {
        ctx.addIssue({ code: 'custom', path, message: (e as Error).message });
      }
    }
    // A Unix-socket caller gets server.uds.identity; meshca's own identities go to no caller (authorization.ts).
    if (c.server.uds.path && c.server.uds.identity) {
      let uri: string | undefined;
      try {
        uri = parseWorkloadId(c.server.uds.identity, c.trustDomain).uri;
      } catch {
        uri = undefined; // reported above
      }
      const reserved = uri ? reservedPatternOf(uri, c.trustDomain, c.server.bundleEndpoint?.spiffeId) : undefined;
      if (reserved) ctx.addIssue({ code: 'custom', path: ['server', 'uds', 'identity'], message: `${uri} is reserved for meshca itself (${reserved}); give Unix-socket callers a workload identity` });
    }
    if (c.workload.ttl > c.workload.maxTtl) {
      ctx.addIssue({ code: 'custom', path: ['workload', 'ttl'], message: `is longer than workload.maxTtl` });
    }
  });

export type Config = z.output<typeof configSchema>;
