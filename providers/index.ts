import { z } from 'zod';
import type { AuthorityBackend, BackendContext } from './types.js';
import { internalConfigSchema } from './internal/config.js';
import { createInternalBackend } from './internal/backend.js';

/**
 * The explicit map of signing backends: config section + factory. No init-time registration.
 * Backends with heavy dependencies (Kubernetes client) are loaded with import() only when selected.
 */
export const AUTHORITY_TYPES = ['internal'] as const;

export const authoritySchema = z
  .strictObject({
    type: z.enum(AUTHORITY_TYPES).default('internal'),
    internal: internalConfigSchema.prefault({}),
  })
  .prefault({});

export type AuthorityConfig = z.output<typeof authoritySchema>;

export async function createBackend(cfg: AuthorityConfig, ctx: BackendContext): Promise<AuthorityBackend> {
  switch (cfg.type) {
    case 'internal':
      return createInternalBackend(cfg.internal, ctx);
  }
}

/** Lifetime meshca requests for its own signing CA under the selected backend. */
export function signingCaTtlSeconds(cfg: AuthorityConfig): number {
  switch (cfg.type) {
    case 'internal':
      return cfg.internal.signingCaTtl;
  }
}
