import { X509Certificate, type KeyObject } from 'node:crypto';
import { CaError } from '../util/errors.js';
import { pemToDers } from '../x509/pem.js';
import { dnLine } from '../x509/cert-parse.js';

/**
 * Checks for chains that come back from an upstream signer (cert-manager, the Kubernetes certificates API):
 * a signer can be misconfigured or hijacked, so nothing it returns is used before it is proven to link to the
 * trust anchors and to certify the key we asked for.
 */

/** Parses PEM certificates, naming `what` on failure; an input without any certificate is an error. */
export function parseCertificates(component: string, what: string, pem: string): Buffer[] {
  let ders: Buffer[];
  try {
    ders = pemToDers(pem);
  } catch (e) {
    throw new CaError('FAILED_PRECONDITION', `${component}: ${what} is not valid PEM: ${(e as Error).message}`, { cause: e });
  }
  if (ders.length === 0) throw new CaError('FAILED_PRECONDITION', `${component}: ${what} holds no certificate`);
  for (const [i, d] of ders.entries()) {
    try {
      new X509Certificate(d);
    } catch (e) {
      throw new CaError('FAILED_PRECONDITION', `${component}: ${what}: certificate ${i} does not parse: ${(e as Error).message}`, { cause: e });
    }
  }
  return ders;
}

/** Trust anchors must be CA certificates; duplicates are dropped (first kept). */
export function checkAnchors(component: string, what: string, ders: readonly Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const [i, d] of ders.entries()) {
    const x = new X509Certificate(d);
    if (!x.ca) throw new CaError('FAILED_PRECONDITION', `${component}: ${what}: certificate ${i} ("${dnLine(x.subject)}") is not a CA certificate`);
    if (!out.some((o) => o.equals(d))) out.push(d);
  }
  return out;
}

/** Removes duplicate DER certificates, keeping the first of each. */
export function dedupeDers(ders: readonly Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const d of ders) if (!out.some((o) => o.equals(d))) out.push(d);
  return out;
}

const signedBy = (child: X509Certificate, parent: X509Certificate): boolean => {
  try {
    return child.checkIssued(parent) && child.verify(parent.publicKey);
  } catch {
    return false;
  }
};

/**
 * Verifies `chainDer` (leaf first, as a signer returned it) against `anchorsDer`: the leaf certifies
 * `publicKey`, each certificate is signed by the next, and the last one is signed by (or is) an anchor. Anchors
 * that appear inside the chain are removed. The leaf must be valid at `nowMs`. Returns the chain without anchors.
 * Throws CaError INTERNAL (not retried: the signer returned something unusable) naming the problem.
 */
export function verifyUpstreamChain(opts: {
  component: string;
  /** e.g. "CertificateRequest meshca-abc" */
  source: string;
  chainDer: readonly Buffer[];
  anchorsDer: readonly Buffer[];
  publicKey: KeyObject;
  nowMs: number;
  expectCa: boolean;
}): Buffer[] {
  const fail = (msg: string): never => {
    throw new CaError('INTERNAL', `${opts.component}: ${opts.source}: ${msg}`, { retryable: false });
  };
  if (opts.anchorsDer.length === 0) fail('no trust anchors to verify the returned certificate against');
  const anchors = opts.anchorsDer.map((d) => new X509Certificate(d));
  const chain = opts.chainDer.filter((d) => !opts.anchorsDer.some((a) => a.equals(d)));
  if (chain.length === 0) fail('returned no certificate other than the trust anchors');
  const certs = chain.map((d) => new X509Certificate(d));
  const leaf = certs[0]!;
  if (!leaf.publicKey.equals(opts.publicKey)) fail(`the certificate ("${dnLine(leaf.subject)}") is for a different key than the CSR's`);
  if (opts.expectCa && !leaf.ca) fail('the certificate is not a CA certificate (basicConstraints CA:false) although a signing CA was requested');
  if (!opts.expectCa && leaf.ca) fail('the leaf certificate is a CA certificate');
  const notAfter = new Date(leaf.validTo).getTime();
  if (notAfter <= opts.nowMs) fail(`the certificate expired at ${new Date(notAfter).toISOString()}`);
  for (let i = 0; i + 1 < certs.length; i++) {
    if (!signedBy(certs[i]!, certs[i + 1]!)) fail(`chain certificate ${i + 1} ("${dnLine(certs[i + 1]!.subject)}") did not sign "${dnLine(certs[i]!.subject)}"`);
  }
  const top = certs[certs.length - 1]!;
  if (!anchors.some((a) => signedBy(top, a))) {
    fail(`the chain does not lead to a trust anchor: no anchor signed "${top.subject}" (issuer "${top.issuer}")`);
  }
  return chain;
}
