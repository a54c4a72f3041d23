import { z } from 'zod';
import { duration } from '../config/fields.js';

/**
 * `state`: where CA state lives. Absent `state.kubernetes` = the `dataDir` directory (src/store/file-store.ts).
 * With `state.kubernetes`, CA state is one Kubernetes Secret shared by every replica (optimistic concurrency), and
 * rotation work is done only by the replica holding the Lease. Validated once here; defaults filled in.
 */

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

const namespace = z.string().refine((v) => v.length <= 63 && DNS_LABEL.test(v), {
  message: 'must be a Kubernetes namespace name (lower-case letters, digits and "-", at most 63 characters)',
});
const objectName = z.string().refine((v) => v.length <= 253 && DNS_SUBDOMAIN.test(v), {
  message: 'must be a Kubernetes object name (lower-case letters, digits, "-" and ".", at most 253 characters)',
});

export const kubernetesStateSchema = z
  .strictObject({
    secret: z.strictObject({
      namespace,
      name: objectName.default('meshca-ca-state'),
    }),
    /** Kubeconfig file; empty = in-cluster config, then $KUBECONFIG / ~/.kube/config. */
    kubeconfig: z.string().default(''),
    lease: z
      .strictObject({
        /** Default `<secret name>-rotation`. */
        name: objectName.optional(),
        /** Default the Secret's namespace. */
        namespace: namespace.optional(),
        /** leaseDurationSeconds: a stopped leader is replaced after at most this long. */
        duration: duration({ min: 2, max: 300 }).default(15),
        /** holderIdentity of this replica; default `<hostname>_<random>` (the pod name in a Deployment). */
        identity: z.string().max(128).default(''),
      })
      .prefault({}),
  })
  .transform((c) => ({
    ...c,
    lease: {
      ...c.lease,
      name: c.lease.name ?? `${c.secret.name.slice(0, 244)}-rotation`,
      namespace: c.lease.namespace ?? c.secret.namespace,
      duration: Math.max(1, Math.round(c.lease.duration)),
    },
  }));

export const stateSchema = z
  .strictObject({
    kubernetes: kubernetesStateSchema.optional(),
  })
  .prefault({});

export type KubernetesStateConfig = z.output<typeof kubernetesStateSchema>;
export type StateConfig = z.output<typeof stateSchema>;
