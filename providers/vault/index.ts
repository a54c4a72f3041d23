import type { ProviderFactory } from '../types.js';
import { VaultBackend } from './backend.js';
import type { VaultConfig } from './config.js';

export { vaultConfigSchema, type VaultConfig } from './config.js';
export { VaultBackend, type VaultBackendOptions } from './backend.js';

/** authority.type "vault": a HashiCorp Vault PKI mount signs meshca's intermediate or every leaf. */
export const vaultProvider: ProviderFactory<VaultConfig> = {
  name: 'vault',
  create: (config, ctx) => new VaultBackend(config, ctx),
};
