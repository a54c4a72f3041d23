import { z } from 'zod';
import { duration } from '../config/fields.js';
import { ctbApiVersion, labelMap, signerNameField } from '../kube/fields.js';

/**
 * bundlePublishers: copies of meshca's own trust bundle kept current inside a Kubernetes cluster, with any signing
 * backend. Each target receives exactly the authority's bundle roots, which already include every root that still
 * validates a live certificate, so a rotation never removes a root early.
 */

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;

const clusterTrustBundlePublisherSchema = z.strictObject({
  /** Signer the bundle is linked to; writing it needs the `attest` verb on `signers` for this name. */
  signerName: signerNameField,
  /** The bundle is named `<signerName with / → :>:<nameSuffix>`. */
  nameSuffix: z
    .string()
    .default('meshca')
    .refine((v) => v.length <= 253 && DNS_SUBDOMAIN.test(v) && !v.includes(':'), { message: 'must be a lowercase RFC 1123 subdomain without ":"' }),
  apiVersion: ctbApiVersion,
  labels: labelMap.default({}),
});

const configMapPublisherSchema = z
  .strictObject({
    name: z
      .string()
      .default('meshca-ca-bundle')
      .refine((v) => v.length <= 253 && DNS_SUBDOMAIN.test(v), { message: 'must be a ConfigMap name (lowercase RFC 1123 subdomain)' }),
    /** Data key holding the PEM bundle; ca.crt like kube-root-ca.crt, so tools that read that layout work. */
    key: z
      .string()
      .default('ca.crt')
      .refine((v) => v.length <= 253 && CONFIG_KEY.test(v), { message: 'must be a ConfigMap key (letters, digits, "-", "_", ".")' }),
    namespaces: z.array(z.string().refine((v) => v.length <= 63 && DNS_LABEL.test(v), { message: 'must be a namespace name' })).default([]),
    /** Also every namespace whose labels match (equality, e.g. {"meshca.io/trust": "enabled"}); needs list on namespaces. */
    namespaceSelector: labelMap.optional(),
    labels: labelMap.default({}),
  })
  .superRefine((c, ctx) => {
    if (c.namespaces.length === 0 && !c.namespaceSelector) {
      ctx.addIssue({ code: 'custom', path: ['namespaces'], message: 'name at least one namespace, or set namespaceSelector' });
    }
  });

export const kubernetesPublishersSchema = z
  .strictObject({
    /** Kubeconfig file; empty = in-cluster service account (then $KUBECONFIG / ~/.kube/config). */
    kubeconfig: z.string().default(''),
    clusterTrustBundle: clusterTrustBundlePublisherSchema.optional(),
    configMaps: configMapPublisherSchema.optional(),
    /** Re-check every target this often, repairing edits and deletions by others. */
    resyncInterval: duration({ min: 5 }).default(300),
  })
  .superRefine((c, ctx) => {
    if (!c.clusterTrustBundle && !c.configMaps) {
      ctx.addIssue({ code: 'custom', message: 'set clusterTrustBundle and/or configMaps (or remove bundlePublishers.kubernetes)' });
    }
  });

export const bundlePublishersSchema = z
  .strictObject({
    kubernetes: kubernetesPublishersSchema.optional(),
  })
  .prefault({});

export type KubernetesPublishersConfig = z.output<typeof kubernetesPublishersSchema>;
export type BundlePublishersConfig = z.output<typeof bundlePublishersSchema>;
