import { z } from 'zod';
import { duration, listenAddress, trustDomain } from '../config/fields.js';
import { parseSpiffeId } from '../identity/spiffe-id.js';

/**
 * Config sections for trust-bundle distribution. Wired into the root schema as:
 *   server.bundleEndpoint  -> bundleEndpointSchema.optional()   (absent: no bundle endpoint)
 *   federation             -> federationSchema.prefault({})
 *   bundle                 -> bundleFilesSchema.prefault({})
 * Cross-section rule (needs the root): no federation.trustDomains[].trustDomain may equal trustDomain; see
 * checkFederationAgainstOwn().
 */

const spiffeId = z.string().superRefine((v, ctx) => {
  try {
    parseSpiffeId(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});

export const BUNDLE_PROFILES = ['https_web', 'https_spiffe'] as const;
export type BundleProfile = (typeof BUNDLE_PROFILES)[number];
const profile = z.enum(BUNDLE_PROFILES, { message: 'must be https_web or https_spiffe' });

/** server.bundleEndpoint: the SPIFFE bundle endpoint serving our own trust domain's bundle. */
export const bundleEndpointSchema = z
  .strictObject({
    address: listenAddress.default('0.0.0.0:8543'),
    profile: profile.default('https_spiffe'),
    /** https_web: PEM serving certificate chain and key (Web PKI); re-read when the files change. */
    certFile: z.string().min(1).optional(),
    keyFile: z.string().min(1).optional(),
    /**
     * https_spiffe: SPIFFE ID of the endpoint's own SVID; default spiffe://<trustDomain>/meshca/bundle-endpoint. It must
     * be a workload ID of our own trust domain (checked by the root schema, which knows trustDomain).
     */
    spiffeId: spiffeId.optional(),
    /** spiffe_refresh_hint served in the bundle. */
    refreshHint: duration({ min: 1, max: 7 * 86400 }).default(300),
  })
  .superRefine((v, ctx) => {
    if (v.profile === 'https_web') {
      if (!v.certFile) ctx.addIssue({ code: 'custom', path: ['certFile'], message: 'is required for profile https_web' });
      if (!v.keyFile) ctx.addIssue({ code: 'custom', path: ['keyFile'], message: 'is required for profile https_web' });
      if (v.spiffeId) ctx.addIssue({ code: 'custom', path: ['spiffeId'], message: 'applies to profile https_spiffe only' });
    } else {
      if (v.certFile) ctx.addIssue({ code: 'custom', path: ['certFile'], message: 'applies to profile https_web only (https_spiffe uses a meshca-issued SVID)' });
      if (v.keyFile) ctx.addIssue({ code: 'custom', path: ['keyFile'], message: 'applies to profile https_web only (https_spiffe uses a meshca-issued SVID)' });
    }
  });

const bundleEndpointUrl = z.string().superRefine((v, ctx) => {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a URL` });
    return;
  }
  if (u.protocol !== 'https:') ctx.addIssue({ code: 'custom', message: 'must be an https:// URL' });
  if (u.username || u.password) ctx.addIssue({ code: 'custom', message: 'must not contain userinfo (SPIFFE federation forbids it)' });
  if (u.hash) ctx.addIssue({ code: 'custom', message: 'must not contain a fragment' });
});

/** One entry of federation.trustDomains. Either an endpoint (bundleEndpointUrl + profile) or a static bundleFile. */
export const federatedTrustDomainSchema = z
  .strictObject({
    trustDomain,
    bundleEndpointUrl: bundleEndpointUrl.optional(),
    profile: profile.optional(),
    /** https_spiffe: the SPIFFE ID the endpoint's server certificate must carry. */
    endpointSpiffeId: spiffeId.optional(),
    /** https_spiffe: PEM or SPIFFE bundle JSON used to verify the endpoint on first contact. */
    bootstrapBundleFile: z.string().min(1).optional(),
    /** https_web: PEM CA certificates to verify the endpoint with instead of the system roots. */
    caFile: z.string().min(1).optional(),
    /** Static bundle (SPIFFE bundle JSON or PEM) instead of an endpoint; re-read when it changes. */
    bundleFile: z.string().min(1).optional(),
  })
  .superRefine((v, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
    if (v.bundleFile) {
      for (const k of ['bundleEndpointUrl', 'profile', 'endpointSpiffeId', 'bootstrapBundleFile', 'caFile'] as const) {
        if (v[k] !== undefined) issue(k, 'cannot be combined with bundleFile (a static bundle is not fetched)');
      }
      return;
    }
    if (!v.bundleEndpointUrl) {
      issue('bundleEndpointUrl', 'is required (or set bundleFile for a static bundle)');
      return;
    }
    if (!v.profile) {
      issue('profile', 'is required with bundleEndpointUrl (https_web or https_spiffe)');
      return;
    }
    if (v.profile === 'https_spiffe') {
      if (!v.endpointSpiffeId) issue('endpointSpiffeId', 'is required for profile https_spiffe');
      if (!v.bootstrapBundleFile) issue('bootstrapBundleFile', 'is required for profile https_spiffe (trust for the first contact)');
      if (v.caFile) issue('caFile', 'applies to profile https_web only');
    } else {
      if (v.endpointSpiffeId) issue('endpointSpiffeId', 'applies to profile https_spiffe only');
      if (v.bootstrapBundleFile) issue('bootstrapBundleFile', 'applies to profile https_spiffe only');
    }
  });

export const federationSchema = z
  .strictObject({
    trustDomains: z.array(federatedTrustDomainSchema).default([]),
  })
  .superRefine((v, ctx) => {
    const seen = new Set<string>();
    v.trustDomains.forEach((t, i) => {
      if (seen.has(t.trustDomain)) ctx.addIssue({ code: 'custom', path: ['trustDomains', i, 'trustDomain'], message: `"${t.trustDomain}" is listed twice` });
      seen.add(t.trustDomain);
    });
  });

export const bundleFilesSchema = z.strictObject({
  files: z
    .array(
      z.strictObject({
        path: z.string().min(1),
        /** pem: concatenated CA certificates; jwks: SPIFFE bundle JSON. */
        format: z.enum(['pem', 'jwks'], { message: 'must be pem or jwks' }).default('pem'),
      }),
    )
    .default([]),
});

export type BundleEndpointConfig = z.output<typeof bundleEndpointSchema>;
export type FederatedTrustDomainConfig = z.output<typeof federatedTrustDomainSchema>;
export type FederationConfig = z.output<typeof federationSchema>;
export type BundleFilesConfig = z.output<typeof bundleFilesSchema>;

/** Problems of the federation section that need the own trust domain (for the root schema's superRefine). */
export function checkFederationAgainstOwn(ownTrustDomain: string, fed: FederationConfig): { path: (string | number)[]; message: string }[] {
  const out: { path: (string | number)[]; message: string }[] = [];
  fed.trustDomains.forEach((t, i) => {
    if (t.trustDomain === ownTrustDomain) {
      out.push({ path: ['federation', 'trustDomains', i, 'trustDomain'], message: `is this CA's own trust domain; only foreign trust domains can be federated` });
    }
  });
  return out;
}
