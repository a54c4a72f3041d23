import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import type { Config } from './config/schema.js';
import { createBackend, signingCaLifetime } from '../providers/index.js';
import { coveredTtlSeconds } from './authority/rotation.js';
import type { AuthorityBackend } from '../providers/types.js';
import { LocalAuthority } from './authority/authority.js';
import { FileStore } from './store/file-store.js';
import type { StateStore } from './store/types.js';
import type { Clock } from './util/clock.js';
import { LeafSignerPool } from './x509/signer-pool.js';

export interface Core {
  readonly authority: LocalAuthority;
  readonly backend: AuthorityBackend;
  readonly store: StateStore;
  readonly signer: LeafSignerPool;
  readonly metrics: Registry;
  close(): Promise<void>;
}

export interface CoreDeps {
  readonly log: Logger;
  readonly clock: Clock;
  /** Worker threads for signing; one-shot CLI commands pass 0. Default: config signing.workers. */
  readonly workers?: number;
  readonly metrics?: Registry;
  /** Overrides the dataDir store (tests, HA stores). */
  readonly store?: StateStore;
}

/** Resolves signing.workers: "auto" = one worker per core (none on a single core). */
export function signingWorkers(cfg: Config): number {
  if (cfg.signing.workers !== 'auto') return cfg.signing.workers;
  const n = availableParallelism();
  return n > 1 ? n : 0;
}

export interface TtlNotCovered {
  /** The config key of the signing CA's lifetime (authority.internal.signingCaTtl, authority.vault.intermediateTtl, ...). */
  readonly signingCaTtlKey: string;
  readonly signingCaTtlSeconds: number;
  /** The shortest leaf a client asking for workload.ttl may get: the active CA's least remaining life. */
  readonly shortestLeafSeconds: number;
}

/**
 * Whether workload.ttl can be cut short by meshca's own signing CA: undefined when it always fits (ttl <= 1/6 of the
 * signing CA's lifetime, see coveredTtlSeconds) or when meshca holds no signing CA (mode leaf).
 */
export function ttlNotCovered(cfg: Config): TtlNotCovered | undefined {
  const ca = signingCaLifetime(cfg.authority);
  if (!ca.held) return undefined;
  const covered = coveredTtlSeconds(ca.seconds);
  if (cfg.workload.ttl <= covered) return undefined;
  return { signingCaTtlKey: ca.key, signingCaTtlSeconds: ca.seconds, shortestLeafSeconds: covered };
}

/** dataDir, or the Kubernetes Secret named by state.kubernetes (loaded only then: the client is heavy). */
async function openStore(cfg: Config, log: Logger, clock: Clock): Promise<StateStore> {
  const k = cfg.state.kubernetes;
  if (!k) return FileStore.open(cfg.dataDir);
  const { connectKube } = await import('./kube/client.js');
  const { KubeSecretStore } = await import('./store/kube-secret-store.js');
  const kube = await connectKube({ component: 'state', configKey: 'state.kubernetes.kubeconfig', ...(k.kubeconfig ? { kubeconfig: k.kubeconfig } : {}) });
  return KubeSecretStore.open({ kube, namespace: k.secret.namespace, name: k.secret.name, log: log.child({ component: 'state' }), clock });
}

/**
 * Opens the CA: the state store, the selected backend and the authority (initialising a new root only when the
 * store is empty). Shared by `serve` and the one-shot commands, so all of them see the same CA.
 */
export async function openCore(cfg: Config, deps: CoreDeps): Promise<Core> {
  const metrics = deps.metrics ?? new Registry();
  const log = deps.log;
  const store: StateStore = deps.store ?? (await openStore(cfg, log, deps.clock));
  const backend = await createBackend(cfg.authority, {
    trustDomain: cfg.trustDomain,
    clock: deps.clock,
    log: log.child({ backend: cfg.authority.type }),
    store,
    metrics,
  });
  const signer = new LeafSignerPool({ workers: deps.workers ?? signingWorkers(cfg), trustDomain: cfg.trustDomain });
  try {
    const authority = await LocalAuthority.create(
      {
        trustDomain: cfg.trustDomain,
        workload: {
          ttlSeconds: cfg.workload.ttl,
          maxTtlSeconds: cfg.workload.maxTtl,
          keyType: cfg.workload.keyType,
          renewFraction: cfg.workload.renewFraction,
          backdateSeconds: cfg.workload.backdate,
        },
        signingCaTtlSeconds: signingCaLifetime(cfg.authority).seconds,
        caKeyType: cfg.authority.type === 'internal' ? cfg.authority.internal.keyType : 'ec-p256',
      },
      { backend, store, clock: deps.clock, log: log.child({ component: 'authority' }), metrics, signer },
    );
    return {
      authority,
      backend,
      store,
      signer,
      metrics,
      close: async () => {
        await authority.close();
        await backend.close();
        await signer.close();
        await store.close?.();
      },
    };
  } catch (e) {
    await signer.close();
    await backend.close().catch(() => undefined);
    throw e;
  }
}
