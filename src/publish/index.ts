import type { Logger } from 'pino';
import type { Authority, TrustBundle } from '../authority/types.js';
import type { Clock, Timer } from '../util/clock.js';
import { errorMessage } from '../util/errors.js';
import { connectKube, type KubeConfig } from '../kube/client.js';
import type { BundlePublishersConfig } from './config.js';
import { ClusterTrustBundlePublisher } from './cluster-trust-bundle-publisher.js';
import { ConfigMapPublisher } from './configmap-publisher.js';

export { bundlePublishersSchema, kubernetesPublishersSchema, type BundlePublishersConfig, type KubernetesPublishersConfig } from './config.js';

export interface PublisherDeps {
  /** Only bundle() and onEvent() are used. */
  readonly authority: Pick<Authority, 'bundle' | 'onEvent' | 'trustDomain'>;
  readonly log: Logger;
  readonly clock: Clock;
  /** A ready KubeConfig (tests); otherwise bundlePublishers.kubernetes.kubeconfig, or in-cluster. */
  readonly kube?: KubeConfig;
}

export interface PublisherStatus {
  readonly ok: boolean;
  /** Last failure, e.g. missing `attest` permission. */
  readonly reason?: string;
  /** Sequence of the bundle last published to every target. */
  readonly publishedSequence?: number;
}

export interface Publishers {
  status(): PublisherStatus;
  /** Resolves when the bundle current at call time has been published (or the attempt failed). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

interface Target {
  readonly label: string;
  publish(bundle: TrustBundle): Promise<void>;
}

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 60_000;

/**
 * Starts the configured bundle publishers: publishes the authority's current bundle at once, again on every
 * `bundle` event, every resyncInterval (repairing edits and deletions by others), and after failures with
 * backoff on the Clock. Publishing is serialized and coalesced: only the newest bundle is ever written. With no
 * Kubernetes publisher configured this loads nothing and returns a no-op handle.
 */
export async function startPublishers(cfg: BundlePublishersConfig, deps: PublisherDeps): Promise<Publishers> {
  const k = cfg.kubernetes;
  if (!k) return { status: () => ({ ok: true }), flush: async () => undefined, close: async () => undefined };
  const kube = await connectKube({
    component: 'publish',
    configKey: 'bundlePublishers.kubernetes.kubeconfig',
    ...(k.kubeconfig ? { kubeconfig: k.kubeconfig } : {}),
    ...(deps.kube ? { kubeConfig: deps.kube } : {}),
  });
  const td = deps.authority.trustDomain;
  const targets: Target[] = [];
  if (k.clusterTrustBundle) {
    const p = new ClusterTrustBundlePublisher(kube, k.clusterTrustBundle, td, deps.log);
    targets.push({ label: `ClusterTrustBundle ${p.name}`, publish: (b) => p.publish(b) });
  }
  if (k.configMaps) {
    const p = new ConfigMapPublisher(kube, k.configMaps, td, deps.log);
    targets.push({ label: `ConfigMaps ${k.configMaps.name}`, publish: (b) => p.publish(b) });
  }

  let closed = false;
  let running: Promise<void> | undefined;
  let again = false;
  let failures = 0;
  let timer: Timer | undefined;
  let status: PublisherStatus = { ok: true };

  const schedule = (ms: number): void => {
    timer?.cancel();
    if (!closed) timer = deps.clock.setTimer(() => void kick(), ms);
  };

  async function runOnce(): Promise<void> {
    const bundle = deps.authority.bundle();
    if (bundle.rootsDer.length === 0) return;
    const errors: string[] = [];
    for (const t of targets) {
      try {
        await t.publish(bundle);
      } catch (e) {
        errors.push(errorMessage(e));
        deps.log.error({ target: t.label, err: errorMessage(e), sequence: bundle.sequence }, 'bundle publisher failed; will retry');
      }
    }
    if (errors.length === 0) {
      failures = 0;
      status = { ok: true, publishedSequence: bundle.sequence };
      schedule(k!.resyncInterval * 1000);
    } else {
      failures++;
      status = { ok: false, reason: errors.join('; '), ...(status.publishedSequence !== undefined ? { publishedSequence: status.publishedSequence } : {}) };
      schedule(Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(failures - 1, 10)));
    }
  }

  function kick(): Promise<void> {
    if (closed) return Promise.resolve();
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await runOnce();
      } while (again && !closed);
    })().finally(() => {
      running = undefined;
    });
    return running;
  }

  const unsubscribe = deps.authority.onEvent((ev) => {
    if (ev.type === 'bundle') void kick();
  });
  await kick();

  return {
    status: () => status,
    async flush() {
      if (running) {
        again = true;
        await running;
      } else await kick();
    },
    async close() {
      closed = true;
      unsubscribe();
      timer?.cancel();
      await running;
    },
  };
}
