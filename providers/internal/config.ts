import { z } from 'zod';
import { duration, keyType } from '../../src/config/fields.js';

/**
 * authority.internal: a self-signed root generated on first start and kept in dataDir, or the operator's own CA
 * files (Istio's cacerts layout). With operator files, meshca mints its signing CA under caCertFile/caKeyFile.
 */
export const internalConfigSchema = z
  .strictObject({
    rootTtl: duration({ min: 3600 }).default(8760 * 3600),
    signingCaTtl: duration({ min: 60 }).default(48 * 3600),
    /** Key type of the generated root and of meshca's signing CA. */
    keyType: keyType.default('ec-p256'),
    caCertFile: z.string().default(''),
    caKeyFile: z.string().default(''),
    certChainFile: z.string().default(''),
    rootCertFile: z.string().default(''),
  })
  .superRefine((c, ctx) => {
    const any = c.caCertFile || c.caKeyFile || c.rootCertFile || c.certChainFile;
    if (any) {
      for (const k of ['caCertFile', 'caKeyFile', 'rootCertFile'] as const) {
        if (!c[k]) ctx.addIssue({ code: 'custom', path: [k], message: 'is required when the operator supplies CA files (caCertFile, caKeyFile, rootCertFile)' });
      }
    }
    if (c.signingCaTtl >= c.rootTtl) ctx.addIssue({ code: 'custom', path: ['signingCaTtl'], message: 'must be shorter than rootTtl' });
  });

export type InternalConfig = z.output<typeof internalConfigSchema>;
