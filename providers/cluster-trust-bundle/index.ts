import type { ProviderFactory } from '../types.js';
import type { ClusterTrustBundleConfig } from './config.js';
import { createClusterTrustBundleBackend } from './backend.js';

export { clusterTrustBundleConfigSchema, type ClusterTrustBundleConfig } from './config.js';
export { ClusterTrustBundleBackend, createClusterTrustBundleBackend, type ClusterTrustBundleDeps } from './backend.js';

/**
 * `authority.type: cluster-trust-bundle`. The Kubernetes client is imported only when init() runs, so registering
 * this provider costs nothing for other backends.
 */
export const clusterTrustBundleProvider: ProviderFactory<ClusterTrustBundleConfig> = {
  name: 'cluster-trust-bundle',
  create: (config, ctx) => createClusterTrustBundleBackend(config, ctx),
};
