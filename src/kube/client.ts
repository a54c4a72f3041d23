import { access } from 'node:fs/promises';
import type * as K8s from '@kubernetes/client-node';
import { CaError } from '../util/errors.js';

/** The @kubernetes/client-node module, loaded on demand (it costs ~0.5 s to import). */
export type KubeModule = typeof K8s;
export type KubeConfig = K8s.KubeConfig;

let modulePromise: Promise<KubeModule> | undefined;

/**
 * Imports @kubernetes/client-node once per process. Only code paths that need Kubernetes call this, so the CLI and
 * non-Kubernetes backends never pay for loading it.
 */
export function loadKubeModule(): Promise<KubeModule> {
  modulePromise ??= import('@kubernetes/client-node');
  return modulePromise;
}

export interface KubeConnectOptions {
  /** Path of a kubeconfig file; empty = in-cluster, then $KUBECONFIG / ~/.kube/config. */
  readonly kubeconfig?: string;
  /** A ready KubeConfig (tests inject the fake API server's). Wins over `kubeconfig`. */
  readonly kubeConfig?: KubeConfig;
  /** Used in error messages: the config key the kubeconfig came from, e.g. "authority.certManager.kubeconfig". */
  readonly configKey?: string;
  /** Prefix for error messages, e.g. "cert-manager". */
  readonly component: string;
  /** Deadline of a request that brings no signal of its own; default KUBE_REQUEST_TIMEOUT_MS. */
  readonly requestTimeoutMs?: number;
}

/**
 * One Kubernetes connection: the loaded module, the KubeConfig and lazily built API clients. Callers keep one per
 * component; clients are cheap and stateless apart from the KubeConfig.
 */
export interface Kube {
  readonly k8s: KubeModule;
  readonly kc: KubeConfig;
  /** API server URL, for log fields and error messages. */
  readonly server: string;
  core(): K8s.CoreV1Api;
  certificates(): K8s.CertificatesV1Api;
  certificatesV1beta1(): K8s.CertificatesV1beta1Api;
  custom(): K8s.CustomObjectsApi;
  authentication(): K8s.AuthenticationV1Api;
  coordination(): K8s.CoordinationV1Api;
  watcher(): K8s.Watch;
}

/**
 * Longest a single API request (not a watch) may take before it is aborted. client-node 1.x sends through fetch
 * with no timeout of its own, so a stalled API server or proxy would otherwise hold a request (and whatever waits on
 * it: a rotation, a Lease renewal) until TCP gives up, minutes later.
 */
export const KUBE_REQUEST_TIMEOUT_MS = 30_000;

/**
 * Per-call options for a generated API client that send the request with `signal` (for a shorter deadline than
 * KUBE_REQUEST_TIMEOUT_MS, or to cancel). client-node's object API takes middleware in its own Observable form.
 */
export function requestWithSignal(kube: Kube, signal: AbortSignal): K8s.ConfigurationOptions {
  const { Observable } = kube.k8s;
  return {
    middleware: [
      {
        pre: (ctx: K8s.RequestContext) => (ctx.setSignal(signal), new Observable(Promise.resolve(ctx))),
        post: (res: K8s.ResponseContext) => new Observable(Promise.resolve(res)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

const SA_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * Loads a KubeConfig: the injected one, else the configured file, else in-cluster (KUBERNETES_SERVICE_HOST and the
 * mounted service account token), else $KUBECONFIG or ~/.kube/config. Throws FAILED_PRECONDITION naming the config
 * key when none of these yields a cluster.
 */
export async function connectKube(opts: KubeConnectOptions): Promise<Kube> {
  const k8s = await loadKubeModule();
  const key = opts.configKey ?? 'kubeconfig';
  let kc: KubeConfig;
  if (opts.kubeConfig) {
    kc = opts.kubeConfig;
  } else if (opts.kubeconfig) {
    kc = new k8s.KubeConfig();
    try {
      kc.loadFromFile(opts.kubeconfig);
    } catch (e) {
      throw new CaError('FAILED_PRECONDITION', `${opts.component}: ${key}: cannot load kubeconfig ${opts.kubeconfig}: ${(e as Error).message}`, { cause: e });
    }
  } else if (process.env.KUBERNETES_SERVICE_HOST && (await exists(SA_TOKEN))) {
    kc = new k8s.KubeConfig();
    kc.loadFromCluster();
  } else {
    kc = new k8s.KubeConfig();
    try {
      kc.loadFromDefault();
    } catch (e) {
      throw new CaError('FAILED_PRECONDITION', `${opts.component}: cannot load a kubeconfig ($KUBECONFIG or ~/.kube/config): ${(e as Error).message}`, { cause: e });
    }
    // loadFromDefault falls back to an unauthenticated http://localhost:8080 when it finds nothing at all.
    const c = kc.getCurrentCluster();
    if (!c || (c.name === 'cluster' && c.server === 'http://localhost:8080')) {
      throw new CaError(
        'FAILED_PRECONDITION',
        `${opts.component}: not running in a Kubernetes pod and no kubeconfig found; set ${key} to a kubeconfig file`,
      );
    }
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new CaError('FAILED_PRECONDITION', `${opts.component}: ${key}: the kubeconfig has no current cluster (check current-context)`);
  const cache = new Map<unknown, unknown>();
  // As KubeConfig.makeApiClient, plus a default deadline on every request that does not bring its own signal.
  const config = k8s.createConfiguration({
    baseServer: new k8s.ServerConfiguration(cluster.server, {}),
    authMethods: { default: kc },
    promiseMiddleware: [
      {
        pre: async (ctx) => {
          if (!ctx.getSignal()) ctx.setSignal(AbortSignal.timeout(opts.requestTimeoutMs ?? KUBE_REQUEST_TIMEOUT_MS));
          return ctx;
        },
        post: async (res) => res,
      },
    ],
  });
  const client = <T>(ctor: new (config: K8s.Configuration) => T): T => {
    let c = cache.get(ctor) as T | undefined;
    if (!c) {
      c = new ctor(config);
      cache.set(ctor, c);
    }
    return c;
  };
  return {
    k8s,
    kc,
    server: cluster.server,
    core: () => client(k8s.CoreV1Api),
    certificates: () => client(k8s.CertificatesV1Api),
    certificatesV1beta1: () => client(k8s.CertificatesV1beta1Api),
    custom: () => client(k8s.CustomObjectsApi),
    authentication: () => client(k8s.AuthenticationV1Api),
    coordination: () => client(k8s.CoordinationV1Api),
    watcher: () => new k8s.Watch(kc),
  };
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}
