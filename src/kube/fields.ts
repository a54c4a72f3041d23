import { z } from 'zod';

/** Config schema pieces for Kubernetes objects, shared by the Kubernetes backends and the bundle publishers. */

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

/** An annotation map: keys follow the label-key rules (qualified names); values are free text. */
export const annotationMap = z.record(z.string(), z.string()).superRefine((m, ctx) => {
  for (const k of Object.keys(m)) {
    if (!LABEL_KEY.test(k)) ctx.addIssue({ code: 'custom', path: [k], message: `"${k}" is not a valid annotation key (an optional DNS prefix and "/", then at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)` });
  }
});

export const ctbApiVersion = z.enum(['auto', 'v1', 'v1beta1'], { message: 'must be auto, v1 or v1beta1' }).default('auto');
