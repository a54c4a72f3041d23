import { z } from 'zod';
import type { AuthorityBackend, BackendContext } from './types.js';
import { internalConfigSchema } from './internal/config.js';
import { createInternalBackend } from './internal/backend.js';
import { vaultConfigSchema } from './vault/config.js';
import { certManagerConfigSchema } from './cert-manager/config.js';
import { clusterTrustBundleConfigSchema } from './cluster-trust-bundle/config.js';

/**
 * The explicit map of signing backends: config section + factory. No init-time registration.
 * Backends with heavy dependencies are loaded with import() only when selected, so the CLI starts fast.
 */
export const AUTHORITY_TYPES = ['internal', 'vault', 'cert-manager', 'cluster-trust-bundle'] as const;

/** authority.type → the key of its config section. */
const SECTION = { internal: 'internal', vault: 'vault', 'cert-manager': 'certManager', 'cluster-trust-bundle': 'clusterTrustBundle' } as const;

export const authoritySchema = z
  .strictObject({
    type: z.enum(AUTHORITY_TYPES).default('internal'),
    internal: internalConfigSchema.prefault({}),
    vault: vaultConfigSchema.optional(),
    certManager: certManagerConfigSchema.optional(),
    clusterTrustBundle: clusterTrustBundleConfigSchema.optional(),
  })
  .superRefine((c, ctx) => {
    const section = SECTION[c.type];
    if (c[section] === undefined) {
      ctx.addIssue({ code: 'custom', path: [section], message: `is required when authority.type is ${c.type}` });
    }
  })
  .prefault({});

export type AuthorityConfig = z.output<typeof authoritySchema>;

export async function createBackend(cfg: AuthorityConfig, ctx: BackendContext): Promise<AuthorityBackend> {
  switch (cfg.type) {
    case 'internal':
      return createInternalBackend(cfg.internal, ctx);
    case 'vault': {
      const { vaultProvider } = await import('./vault/index.js');
      return vaultProvider.create(cfg.vault!, ctx);
    }
    case 'cert-manager': {
      const { certManagerProvider } = await import('./cert-manager/index.js');
      return certManagerProvider.create(cfg.certManager!, ctx);
    }
    case 'cluster-trust-bundle': {
      const { clusterTrustBundleProvider } = await import('./cluster-trust-bundle/index.js');
      return clusterTrustBundleProvider.create(cfg.clusterTrustBundle!, ctx);
    }
  }
}

/** meshca's own signing CA under the selected backend (signingCaLifetime). */
export interface SigningCaLifetime {
  /** The lifetime meshca requests for it, in seconds. */
  readonly seconds: number;
  /** The config key of that lifetime (authority.internal.signingCaTtl, authority.vault.intermediateTtl, ...). */
  readonly key: string;
  /** False in mode leaf: there the backend signs every leaf, meshca holds and rotates no signing CA, and the lifetime is unused. */
  readonly held: boolean;
}

export function signingCaLifetime(cfg: AuthorityConfig): SigningCaLifetime {
  switch (cfg.type) {
    case 'internal':
      return { seconds: cfg.internal.signingCaTtl, key: 'authority.internal.signingCaTtl', held: true };
    case 'vault':
      return { seconds: cfg.vault!.intermediateTtl, key: 'authority.vault.intermediateTtl', held: cfg.vault!.mode !== 'leaf' };
    case 'cert-manager':
      return { seconds: cfg.certManager!.signingCaTtl, key: 'authority.certManager.signingCaTtl', held: cfg.certManager!.mode !== 'leaf' };
    case 'cluster-trust-bundle':
      return { seconds: cfg.clusterTrustBundle!.signingCaTtl, key: 'authority.clusterTrustBundle.signingCaTtl', held: cfg.clusterTrustBundle!.mode !== 'leaf' };
  }
}
