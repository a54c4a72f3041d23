import type { KeyObject } from 'node:crypto';
import { parseSpiffeId } from '../../identity/spiffe-id.js';
import { CaError, invalidArgument } from '../../util/errors.js';
import { parseCsr, type ParsedCsr } from '../../x509/csr.js';

/** A CSR that passed the checks common to the controller and Istio APIs. */
export interface CheckedCsr {
  readonly der: Buffer;
  readonly publicKey: KeyObject;
  /** The one URI SAN (canonical SPIFFE ID), or undefined when the CSR has none. */
  readonly spiffeId: string | undefined;
  readonly dnsNames: readonly string[];
  /** IP and e-mail SANs: never certified (the Istio CA ignores them; IdentityService refuses them). */
  readonly ipAddresses: readonly string[];
  readonly emails: readonly string[];
}

function shown(v: string): string {
  return v.length > 200 ? `${v.slice(0, 197)}...` : v;
}

/**
 * Parses a CSR (PEM text or DER) and applies the X509-SVID rules to what it asks for: its signature must verify
 * (parseCsr), it must not request a CA certificate, it may carry at most one URI SAN, and that URI must be a SPIFFE ID
 * in `trustDomain`. Every failure is CaError INVALID_ARGUMENT naming the problem and the offending value.
 * `parse` is the authority's off-thread parser when it has one (signing workers), else the inline parseCsr.
 */
export async function checkCsr(
  input: string | Buffer,
  trustDomain: string,
  parse: (input: string | Buffer) => Promise<ParsedCsr> = async (i) => parseCsr(i),
): Promise<CheckedCsr> {
  if ((typeof input === 'string' && input.trim().length === 0) || (Buffer.isBuffer(input) && input.length === 0)) {
    throw invalidArgument('CSR is empty');
  }
  let csr: ParsedCsr;
  try {
    csr = await parse(input);
  } catch (e) {
    if (e instanceof CaError) throw e;
    throw invalidArgument(`CSR cannot be parsed: ${(e as Error).message}`);
  }
  if (csr.requestsCa) throw invalidArgument('CSR requests a CA certificate (basicConstraints CA:true); meshca issues only leaf X509-SVIDs');
  if (csr.uris.length > 1) {
    throw invalidArgument(`CSR has ${csr.uris.length} URI SANs (${csr.uris.map(shown).join(', ')}); an X509-SVID carries exactly one`);
  }
  let spiffeId: string | undefined;
  const uri = csr.uris[0];
  if (uri !== undefined) {
    let id;
    try {
      id = parseSpiffeId(uri);
    } catch (e) {
      throw invalidArgument(`CSR URI SAN ${shown(uri)} is not a SPIFFE ID: ${(e as Error).message}`);
    }
    if (id.trustDomain !== trustDomain) {
      throw invalidArgument(`CSR URI SAN ${shown(uri)} is in trust domain "${id.trustDomain}", not this CA's trust domain "${trustDomain}"`);
    }
    if (id.path === '') throw invalidArgument(`CSR URI SAN ${shown(uri)} is a trust domain ID and names no workload`);
    spiffeId = id.uri;
  }
  return { der: csr.der, publicKey: csr.publicKey, spiffeId, dnsNames: csr.dnsNames, ipAddresses: csr.ipAddresses, emails: csr.emails };
}
