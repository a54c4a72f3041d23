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

/** apimachinery's IsQualifiedName: LABEL_KEY, with the DNS prefix at most 253 characters. */
const isQualifiedName = (k: string): boolean => LABEL_KEY.test(k) && (!k.includes('/') || k.indexOf('/') <= 253);

/** The API server's limit on the total size of an object's annotations (keys + values). */
const ANNOTATIONS_MAX_BYTES = 256 * 1024;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;

/** A label map usable as an equality selector; keys and values follow the Kubernetes label rules. */
export const labelMap = z.record(z.string(), z.string()).superRefine((m, ctx) => {
  for (const [k, v] of Object.entries(m)) {
    if (!isQualifiedName(k)) ctx.addIssue({ code: 'custom', path: [k], message: `"${k}" is not a valid label key (an optional lowercase DNS prefix of at most 253 characters and "/", then at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)` });
    if (!LABEL_VALUE.test(v)) ctx.addIssue({ code: 'custom', path: [k], message: `"${v}" is not a valid label value (at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)` });
  }
});

/**
 * An annotation map as the API server's ValidateAnnotations checks it: keys are qualified names compared in lower
 * case (so `Example.COM/Owner` is valid), values are free text, and keys plus values total at most 256 KiB.
 */
export const annotationMap = z.record(z.string(), z.string()).superRefine((m, ctx) => {
  let bytes = 0;
  for (const [k, v] of Object.entries(m)) {
    if (!isQualifiedName(k.toLowerCase())) ctx.addIssue({ code: 'custom', path: [k], message: `"${k}" is not a valid annotation key (an optional DNS prefix of at most 253 characters and "/", then at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends; case does not matter)` });
    bytes += Buffer.byteLength(k) + Buffer.byteLength(v);
  }
  if (bytes > ANNOTATIONS_MAX_BYTES) ctx.addIssue({ code: 'custom', message: `annotations total ${bytes} bytes; the API server allows at most ${ANNOTATIONS_MAX_BYTES} (keys and values)` });
});

export const ctbApiVersion = z.enum(['auto', 'v1', 'v1beta1'], { message: 'must be auto, v1 or v1beta1' }).default('auto');
