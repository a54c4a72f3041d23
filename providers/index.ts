import { z } from 'zod';
import type { AuthorityBackend, BackendContext } from './types.js';
import { internalConfigSchema } from './internal/config.js';
import { createInternalBackend } from './internal/backend.js';
import { vaultConfigSchema } from './vault/config.js';

/**
 * The explicit map of signing backends: config section + factory. No init-time registration.
 * Backends with heavy dependencies are loaded with import() only when selected, so the CLI starts fast.
 */
export const AUTHORITY_TYPES = ['internal', 'vault'] as const;

export const authoritySchema = z
  .strictObject({
    type: z.enum(AUTHORITY_TYPES).default('internal'),
    internal: internalConfigSchema.prefault({}),
    vault: vaultConfigSchema.optional(),
  })
  .superRefine((c, ctx) => {
    if (c.type !== 'internal' && c[c.type] === undefined) {
      ctx.addIssue({ code: 'custom', path: [c.type], message: `is required when authority.type is ${c.type}` });
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
  }
}

/** Lifetime meshca requests for its own signing CA under the selected backend. */
export function signingCaTtlSeconds(cfg: AuthorityConfig): number {
  switch (cfg.type) {
    case 'internal':
      return cfg.internal.signingCaTtl;
    case 'vault':
      return cfg.vault!.intermediateTtl;
  }
}
