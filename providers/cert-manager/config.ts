import { z } from 'zod';
import { duration } from '../../src/config/fields.js';
import { annotationMap, labelMap } from '../../src/kube/fields.js';

/**
 * authority.certManager: meshca asks a cert-manager Issuer or ClusterIssuer for its signing intermediate (mode
 * intermediate, one CertificateRequest per signing-CA rotation) or for every leaf (mode leaf). Validated once here;
 * the backend never re-checks. Durations are strings ("48h") or seconds and come out as seconds.
 */

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** A Kubernetes kind: an UpperCamelCase identifier. */
const KIND = /^[A-Z][A-Za-z0-9]{0,62}$/;

export const certManagerConfigSchema = z.strictObject({
  /** Kubeconfig file; empty = in-cluster service account (then $KUBECONFIG / ~/.kube/config). */
  kubeconfig: z.string().default(''),
  /** Namespace the CertificateRequests are created in (and where a namespaced Issuer lives). */
  namespace: z
    .string({ message: 'is required: the namespace meshca creates CertificateRequests in' })
    .refine((v) => v.length <= 63 && DNS_LABEL.test(v), { message: 'must be a Kubernetes namespace name (lowercase RFC 1123 label, at most 63 characters)' }),
  issuerRef: z.strictObject({
    name: z
      .string({ message: 'is required: the name of the issuer (a cert-manager Issuer or ClusterIssuer, or an external issuer)' })
      .refine((v) => v.length <= 253 && DNS_SUBDOMAIN.test(v), { message: 'must be a Kubernetes object name (lowercase RFC 1123 subdomain)' }),
    /** Issuer or ClusterIssuer for cert-manager.io; an external issuer's own kind (AWSPCAIssuer, GoogleCASClusterIssuer, ...) for its group. */
    kind: z
      .string()
      .default('Issuer')
      .refine((v) => KIND.test(v), { message: 'must be a Kubernetes kind such as Issuer, ClusterIssuer or AWSPCAIssuer' }),
    group: z
      .string()
      .default('cert-manager.io')
      .refine((v) => DNS_SUBDOMAIN.test(v), { message: 'must be an API group such as cert-manager.io or awspca.cert-manager.io' }),
  }, { message: 'is required: {name, kind?, group?}' })
    .superRefine((r, ctx) => {
      // cert-manager's own group has exactly these two kinds; external issuers (other groups) bring their own.
      if (r.group === 'cert-manager.io' && r.kind !== 'Issuer' && r.kind !== 'ClusterIssuer' && KIND.test(r.kind)) {
        ctx.addIssue({ code: 'custom', path: ['kind'], message: `must be Issuer or ClusterIssuer for group cert-manager.io (an external issuer's kind, such as AWSPCAIssuer, goes with its own group)` });
      }
    }),
  mode: z.enum(['intermediate', 'leaf'], { message: 'must be intermediate or leaf' }).default('intermediate'),
  /** Lifetime requested for meshca's signing CA (spec.duration); the issuer may shorten it. */
  signingCaTtl: duration({ min: 600 }).default(48 * 3600),
  /**
   * PEM file of the trust anchors (roots). When empty, the anchor is the CertificateRequest's status.ca, which
   * cert-manager fills only best effort: issuance then fails clearly if the issuer leaves it empty.
   */
  caFile: z.string().default(''),
  /** How long one CertificateRequest may take from creation to a certificate (approval included). */
  requestTimeout: duration({ min: 1, max: 3600 }).default(120),
  /** Extra labels and annotations for the CertificateRequests (e.g. for approver-policy selectors). */
  labels: labelMap.default({}),
  annotations: annotationMap.default({}),
});

export type CertManagerConfig = z.output<typeof certManagerConfigSchema>;
