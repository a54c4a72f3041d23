import { X509Certificate } from 'node:crypto';
import { CaError } from '../util/errors.js';
import type { Kube } from './client.js';
import { isNotFound, kubeCaError } from './errors.js';
import type { KubeObject, ListResult } from './list-watch.js';
import { pemToDers, toPem } from '../x509/pem.js';
import { dnLine } from '../x509/cert-parse.js';

/**
 * ClusterTrustBundle helpers shared by the cluster-trust-bundle backend and the CTB publisher. The API is served as
 * certificates.k8s.io/v1beta1 (Kubernetes 1.33–1.36, off by default) or v1 (1.37+); @kubernetes/client-node has no
 * typed v1 client, so every version is spoken to as custom objects (same paths, plain JSON).
 */
export type CtbVersion = 'v1' | 'v1beta1';
export const CTB_GROUP = 'certificates.k8s.io';
export const CTB_PLURAL = 'clustertrustbundles';

export interface ClusterTrustBundle extends KubeObject {
  spec?: { signerName?: string; trustBundle?: string };
}

export const ctbCollectionPath = (v: CtbVersion): string => `/apis/${CTB_GROUP}/${v}/${CTB_PLURAL}`;

/** Name of a signer-linked bundle: signerName with "/" → ":", then ":", then a suffix without ":". */
export function signerLinkedName(signerName: string, suffix: string): string {
  return `${signerName.replace(/\//g, ':')}:${suffix}`;
}

async function serves(kube: Kube, v: CtbVersion): Promise<boolean> {
  try {
    const list = v === 'v1' ? await kube.certificates().getAPIResources() : await kube.certificatesV1beta1().getAPIResources();
    return (list.resources ?? []).some((r) => r.name === CTB_PLURAL);
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}

/**
 * Which ClusterTrustBundle version the server serves, by discovery: v1 preferred. With `wanted` v1 or v1beta1 that
 * version must be served. Throws FAILED_PRECONDITION (with what to enable) when none is, and a retryable
 * UNAVAILABLE when the API server cannot be reached.
 */
export async function detectCtbVersion(kube: Kube, wanted: 'auto' | CtbVersion, component: string, configKey: string): Promise<CtbVersion> {
  const candidates: CtbVersion[] = wanted === 'auto' ? ['v1', 'v1beta1'] : [wanted];
  try {
    for (const v of candidates) if (await serves(kube, v)) return v;
  } catch (e) {
    throw kubeCaError(component, `discover ClusterTrustBundle API versions at ${kube.server}`, e);
  }
  const which = wanted === 'auto' ? 'neither certificates.k8s.io/v1 nor v1beta1' : `certificates.k8s.io/${wanted}`;
  throw new CaError(
    'FAILED_PRECONDITION',
    `${component}: the API server does not serve ClusterTrustBundles at ${which} (${configKey} is ${wanted}). ` +
      'Kubernetes 1.37+ serves v1; 1.33–1.36 need the ClusterTrustBundle feature gate and --runtime-config=certificates.k8s.io/v1beta1/clustertrustbundles=true',
    { retryable: false },
  );
}

export async function listCtbs(kube: Kube, v: CtbVersion, sel: { fieldSelector?: string; labelSelector?: string }): Promise<ListResult<ClusterTrustBundle>> {
  const l = (await kube.custom().listClusterCustomObject({
    group: CTB_GROUP,
    version: v,
    plural: CTB_PLURAL,
    ...(sel.fieldSelector ? { fieldSelector: sel.fieldSelector } : {}),
    ...(sel.labelSelector ? { labelSelector: sel.labelSelector } : {}),
  })) as { items?: ClusterTrustBundle[]; metadata?: { resourceVersion?: string } };
  return { items: l.items ?? [], resourceVersion: l.metadata?.resourceVersion ?? '' };
}

/**
 * The anchors in a set of bundles: every CA CERTIFICATE block, deduplicated, in a stable order (bundle name, then
 * position). A bundle that does not parse is reported through `onBad` and skipped, so one broken object cannot
 * take every anchor away.
 */
export function anchorsFromBundles(bundles: Iterable<ClusterTrustBundle>, onBad: (name: string, why: string) => void): Buffer[] {
  const sorted = [...bundles].sort((a, b) => String(a.metadata?.name).localeCompare(String(b.metadata?.name)));
  const out: Buffer[] = [];
  for (const b of sorted) {
    let ders: Buffer[];
    try {
      ders = pemToDers(String(b.spec?.trustBundle ?? ''));
      for (const d of ders) if (!new X509Certificate(d).ca) throw new Error('holds a certificate that is not a CA');
    } catch (e) {
      onBad(String(b.metadata?.name), (e as Error).message);
      continue;
    }
    for (const d of ders) if (!out.some((o) => o.equals(d))) out.push(d);
  }
  return out;
}

/** A trustBundle value the API accepts: CA certificates only, no duplicates, plain PEM blocks. */
export function trustBundleText(roots: readonly Buffer[]): string {
  const uniq: Buffer[] = [];
  for (const d of roots) if (!uniq.some((u) => u.equals(d))) uniq.push(d);
  for (const d of uniq) {
    const x = new X509Certificate(d);
    if (!x.ca) throw new CaError('INTERNAL', `trust bundle holds "${dnLine(x.subject) || '(empty subject)'}", which is not a CA certificate; a ClusterTrustBundle accepts CA certificates only`);
  }
  if (uniq.length === 0) throw new CaError('INTERNAL', 'trust bundle is empty; a ClusterTrustBundle needs at least one anchor');
  return uniq.map((d) => toPem(d)).join('');
}

export function sameDers(a: readonly Buffer[], b: readonly Buffer[]): boolean {
  return a.length === b.length && a.every((d) => b.some((x) => x.equals(d)));
}
