import type { ProviderFactory } from '../types.js';
import type { CertManagerConfig } from './config.js';
import { createCertManagerBackend } from './backend.js';

export { certManagerConfigSchema, type CertManagerConfig } from './config.js';
export { CertManagerBackend, createCertManagerBackend, type CertManagerDeps } from './backend.js';

/**
 * `authority.type: cert-manager`. The Kubernetes client is imported only when init() runs, so registering this
 * provider costs nothing for other backends.
 */
export const certManagerProvider: ProviderFactory<CertManagerConfig> = {
  name: 'cert-manager',
  create: (config, ctx) => createCertManagerBackend(config, ctx),
};

