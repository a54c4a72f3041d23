import { z } from 'zod';
import { duration } from '../../src/config/fields.js';

/**
 * authority.clusterTrustBundle: sign through the Kubernetes certificates API (a CertificateSigningRequest to
 * `signerName`) and take the trust anchors from the ClusterTrustBundles that signer publishes. Validated once
 * here; the backend never re-checks. Durations are strings ("48h") or seconds and come out as seconds.
 */

/** Kubernetes' signerName rule: `<fully qualified domain>/<path>`; the path may have several segments. */
const SIGNER_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+)\/([-a-zA-Z0-9_.~]+(\/[-a-zA-Z0-9_.~]+)*)$/;

export const signerNameField = z
  .string({ message: 'is required: the signerName of the Kubernetes signer, e.g. example.com/meshca' })
  .superRefine((v, ctx) => {
    if (!SIGNER_NAME.test(v)) {
      ctx.addIssue({ code: 'custom', message: `"${v}" is not a signer name: use a fully qualified domain and a path, e.g. example.com/meshca` });
    } else if (v.length > 571) {
      ctx.addIssue({ code: 'custom', message: 'must be at most 571 characters' });
    } else if (v.startsWith('kubernetes.io/') || v.split('/')[0]!.endsWith('.kubernetes.io')) {
      ctx.addIssue({ code: 'custom', message: `"${v}" is a reserved Kubernetes signer (kubernetes.io/*); run your own signer under your own domain` });
    }
  });

const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;

/** A label map usable as an equality selector; keys and values follow the Kubernetes label rules. */
export const labelMap = z.record(z.string(), z.string()).superRefine((m, ctx) => {
  for (const [k, v] of Object.entries(m)) {
    if (!LABEL_KEY.test(k)) ctx.addIssue({ code: 'custom', path: [k], message: `"${k}" is not a valid label key` });
    if (!LABEL_VALUE.test(v)) ctx.addIssue({ code: 'custom', path: [k], message: `"${v}" is not a valid label value (at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)` });
  }
});

export const ctbApiVersion = z.enum(['auto', 'v1', 'v1beta1'], { message: 'must be auto, v1 or v1beta1' }).default('auto');

export const clusterTrustBundleConfigSchema = z.strictObject({
  /** Kubeconfig file; empty = in-cluster service account (then $KUBECONFIG / ~/.kube/config). */
  kubeconfig: z.string().default(''),
  signerName: signerNameField,
  mode: z.enum(['intermediate', 'leaf'], { message: 'must be intermediate or leaf' }).default('intermediate'),
  /** expirationSeconds asked for meshca's signing CA (mode intermediate). The API's minimum is 600 s. */
  signingCaTtl: duration({ min: 600 }).default(48 * 3600),
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
