import { z } from 'zod';
import { parseDurationSeconds } from '../util/duration.js';
import { parseSpiffeId, validateTrustDomain } from '../identity/spiffe-id.js';
import { KEY_TYPES } from '../x509/types.js';
import { isDnsName } from '../x509/profile.js';

/** Reusable schema pieces for config sections (core and providers). */

/** A duration string ("20s", "5m", "1h") or number of seconds, parsed to seconds. */
export function duration(opts: { min?: number; max?: number } = {}) {
  return z.union([z.string(), z.number()], { error: 'must be a duration such as 20s, 5m, 1h or 24h' }).transform((v, ctx) => {
    let s: number;
    try {
      s = parseDurationSeconds(v, 'duration');
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (use forms like 20s, 5m, 1h, 24h)` });
      return z.NEVER;
    }
    if (opts.min !== undefined && s < opts.min) {
      ctx.addIssue({ code: 'custom', message: `${v} is shorter than the minimum ${opts.min}s` });
      return z.NEVER;
    }
    if (opts.max !== undefined && s > opts.max) {
      ctx.addIssue({ code: 'custom', message: `${v} is longer than the maximum ${opts.max}s` });
      return z.NEVER;
    }
    return s;
  });
}

export const keyType = z.enum(KEY_TYPES, { message: `must be one of ${KEY_TYPES.join(', ')}` });

export const trustDomain = z.string().superRefine((v, ctx) => {
  try {
    validateTrustDomain(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});

/** A SPIFFE ID or an ID pattern ending in "/*". */
export const spiffeIdPattern = z.string().superRefine((v, ctx) => {
  const base = v.endsWith('/*') ? v.slice(0, -2) : v;
  try {
    parseSpiffeId(base);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});

/** host:port, [v6]:port, or :port; port 0-65535 (0 = any free port). */
export const listenAddress = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]*):\d{1,5}$/, { message: 'must be host:port, e.g. 127.0.0.1:8443' })
  // Only about the port: an address without one already failed the pattern above (one line per problem).
  .refine((v) => {
    const port = /:(\d+)$/.exec(v)?.[1];
    return port === undefined || Number(port) <= 65535;
  }, { message: 'port must be between 0 and 65535' });

/** A DNS name for a certificate SAN (the same rule `meshca issue --dns` applies). */
export const dnsName = z.string().refine(isDnsName, { message: 'must be a DNS name (letters, digits, "-", "_" in dot-separated labels)' });
