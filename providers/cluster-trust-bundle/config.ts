import { z } from 'zod';
import { duration } from '../../src/config/fields.js';
import { ctbApiVersion, labelMap, signerNameField } from '../../src/kube/fields.js';

/**
 * authority.clusterTrustBundle: sign through the Kubernetes certificates API (a CertificateSigningRequest to
 * `signerName`) and take the trust anchors from the ClusterTrustBundles that signer publishes. Validated once
 * here; the backend never re-checks. Durations are strings ("48h") or seconds and come out as seconds.
 */

/** spec.expirationSeconds is an int32; the API server refuses a larger number (400). */
export const MAX_EXPIRATION_SECONDS = 2 ** 31 - 1;

export const clusterTrustBundleConfigSchema = z.strictObject({
  /** Kubeconfig file; empty = in-cluster service account (then $KUBECONFIG / ~/.kube/config). */
  kubeconfig: z.string().default(''),
  signerName: signerNameField,
  mode: z.enum(['intermediate', 'leaf'], { message: 'must be intermediate or leaf' }).default('intermediate'),
  /** expirationSeconds asked for meshca's signing CA (mode intermediate): at least 600 s, and an int32. */
  signingCaTtl: duration({ min: 600, max: MAX_EXPIRATION_SECONDS }).default(48 * 3600),
  /**
   * Approve our own CertificateSigningRequests. Needs `update` on certificatesigningrequests/approval and the
   * `approve` verb on `signers` for signerName; leave false when a policy approver (or the signer) approves.
   */
  approve: z.boolean().default(false),
  /** How long one CertificateSigningRequest may take from creation to a certificate (approval included). */
  requestTimeout: duration({ min: 1, max: 3600 }).default(120),
  trustBundle: z
    .strictObject({
      /** Only ClusterTrustBundles of signerName with all these labels are anchors ({} = all of the signer's). */
      labels: labelMap.default({}),
      /** ClusterTrustBundle API version; auto asks discovery (v1 from Kubernetes 1.37, v1beta1 from 1.33). */
      apiVersion: ctbApiVersion,
    })
    .prefault({}),
  /** Extra labels for the CertificateSigningRequests. */
  labels: labelMap.default({}),
});

export type ClusterTrustBundleConfig = z.output<typeof clusterTrustBundleConfigSchema>;
