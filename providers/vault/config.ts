import { z } from 'zod';
import { duration } from '../../src/config/fields.js';

/**
 * authority.vault: sign meshca's intermediate (mode intermediate) or every leaf (mode leaf) with a Vault PKI
 * mount. Validated once here; the backend never re-checks. Durations are strings ("48h") or seconds, and come
 * out as seconds.
 */

const PREFIX = 'authority.vault';

/** A Vault mount path: no leading/trailing "/", no empty segments, no "..". */
const mountPath = z
  .string()
  .transform((v) => v.trim().replace(/^\/+|\/+$/g, ''))
  .refine((v) => v === '' || /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/.test(v) && !v.split('/').includes('..'), {
    message: 'must be a Vault mount path like "pki" or "pki/int" (letters, digits, "_", ".", "-", separated by "/")',
  });

const tlsSchema = z.strictObject({
  /** PEM file of the CA that signed Vault's server certificate (default: the system roots). */
  caFile: z.string().default(''),
  /** Name to verify in Vault's certificate when it differs from the address host (SNI too). */
  serverName: z.string().default(''),
  /** Client certificate and key for Vault listeners that require mTLS. */
  certFile: z.string().default(''),
  keyFile: z.string().default(''),
});

const authSchema = z.strictObject({
  method: z.enum(['token', 'approle', 'kubernetes'], { message: 'must be one of token, approle, kubernetes' }).default('token'),
  token: z.string().default(''),
  tokenFile: z.string().default(''),
  roleId: z.string().default(''),
  secretId: z.string().default(''),
  secretIdFile: z.string().default(''),
  role: z.string().default(''),
  serviceAccountTokenFile: z.string().default('/var/run/secrets/kubernetes.io/serviceaccount/token'),
  /** Auth mount path; default "approle" or "kubernetes" by method. Not used by token auth. */
  mount: mountPath.default(''),
});

export const vaultConfigSchema = z
  .strictObject({
    address: z.string().superRefine((v, ctx) => {
      let u: URL;
      try {
        u = new URL(v);
      } catch {
        ctx.addIssue({ code: 'custom', message: `"${v}" is not a URL; use e.g. https://vault.example:8200` });
        return;
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') ctx.addIssue({ code: 'custom', message: `must use http or https, not ${u.protocol}` });
      if (u.username || u.password) ctx.addIssue({ code: 'custom', message: 'must not contain credentials; use authority.vault.auth' });
      if (u.search || u.hash) ctx.addIssue({ code: 'custom', message: 'must not contain a query or fragment' });
    }),
    mode: z.enum(['intermediate', 'leaf'], { message: 'must be intermediate or leaf' }).default('intermediate'),
    pkiMount: mountPath.default('pki'),
    role: z.string().default(''),
    /**
     * Issuer reference (name or ID) on a multi-issuer mount: sign at <pkiMount>/issuer/<issuer>/sign-intermediate
     * or .../sign/<role> and read anchors from .../issuer/<issuer>/json. "" = the mount's default issuer.
     */
    issuer: z
      .string()
      .default('')
      .transform((v) => v.trim())
      .refine((v) => v === '' || (/^[A-Za-z0-9_.-]+$/.test(v) && v !== '.' && v !== '..'), {
        message: `${PREFIX}.issuer must be a Vault issuer name or ID (letters, digits, "_", ".", "-"; one path segment)`,
      }),
    intermediateTtl: duration({ min: 60 }).default(48 * 3600),
    rootFingerprint: z
      .string()
      .default('')
      .transform((v) => v.replace(/[:\s]/g, '').toLowerCase())
      .refine((v) => v === '' || /^[0-9a-f]{64}$/.test(v), { message: 'must be the hex SHA-256 of the root certificate DER (64 hex digits, colons allowed)' }),
    namespace: z
      .string()
      .default('')
      .transform((v) => v.trim().replace(/^\/+|\/+$/g, '')),
    tls: tlsSchema.prefault({}),
    auth: authSchema.prefault({}),
  })
  .superRefine((c, ctx) => {
    const issue = (path: (string | number)[], message: string): void => ctx.addIssue({ code: 'custom', path, message });
    if (c.mode === 'leaf') {
      if (!c.role) issue(['role'], `${PREFIX}.role is required in leaf mode (leaves are signed at <pkiMount>/sign/<role>)`);
      else if (!/^[A-Za-z0-9_.-]+$/.test(c.role)) issue(['role'], `${PREFIX}.role "${c.role}" is not a valid Vault role name`);
    }
    if (c.pkiMount === '') issue(['pkiMount'], `${PREFIX}.pkiMount must not be empty`);
    const a = c.auth;
    const p = `${PREFIX}.auth`;
    switch (a.method) {
      case 'token':
        if (!a.token && !a.tokenFile) issue(['auth', 'token'], `${p}.token or ${p}.tokenFile is required when method is token`);
        if (a.token && a.tokenFile) issue(['auth', 'tokenFile'], `set only one of ${p}.token and ${p}.tokenFile`);
        break;
      case 'approle':
        if (!a.roleId) issue(['auth', 'roleId'], `${p}.roleId is required when method is approle`);
        if (a.secretId && a.secretIdFile) issue(['auth', 'secretIdFile'], `set only one of ${p}.secretId and ${p}.secretIdFile`);
        break;
      case 'kubernetes':
        if (!a.role) issue(['auth', 'role'], `${p}.role is required when method is kubernetes`);
        if (!a.serviceAccountTokenFile) issue(['auth', 'serviceAccountTokenFile'], `${p}.serviceAccountTokenFile must not be empty when method is kubernetes`);
        break;
    }
    if (Boolean(c.tls.certFile) !== Boolean(c.tls.keyFile)) {
      issue(['tls', c.tls.certFile ? 'keyFile' : 'certFile'], `${PREFIX}.tls.certFile and ${PREFIX}.tls.keyFile must be set together`);
    }
    if (c.tls.caFile && c.address.startsWith('http:')) issue(['tls', 'caFile'], `${PREFIX}.tls is set but address uses http; use https`);
  });

export type VaultConfig = z.output<typeof vaultConfigSchema>;
