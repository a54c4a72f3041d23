import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { invalidArgument } from '../util/errors.js';

/**
 * Key usage words shared by cert-manager (`spec.usages`) and the Kubernetes certificates API (`spec.usages`).
 * Signers such as cert-manager's webhook reject a request whose usages disagree with the extensions in the CSR, so
 * requests ask for what the CSR itself asks for when it says anything, and for the profile defaults otherwise.
 */
export const INTERMEDIATE_USAGES = ['cert sign', 'crl sign'] as const;
export const LEAF_USAGES = ['digital signature', 'key encipherment', 'server auth', 'client auth'] as const;

const KU_WORDS: Array<[number, string]> = [
  [x509.KeyUsageFlags.digitalSignature, 'digital signature'],
  [x509.KeyUsageFlags.nonRepudiation, 'content commitment'],
  [x509.KeyUsageFlags.keyEncipherment, 'key encipherment'],
  [x509.KeyUsageFlags.dataEncipherment, 'data encipherment'],
  [x509.KeyUsageFlags.keyAgreement, 'key agreement'],
  [x509.KeyUsageFlags.keyCertSign, 'cert sign'],
  [x509.KeyUsageFlags.cRLSign, 'crl sign'],
  [x509.KeyUsageFlags.encipherOnly, 'encipher only'],
  [x509.KeyUsageFlags.decipherOnly, 'decipher only'],
];

const EKU_WORDS: Record<string, string> = {
  '1.3.6.1.5.5.7.3.1': 'server auth',
  '1.3.6.1.5.5.7.3.2': 'client auth',
  '1.3.6.1.5.5.7.3.3': 'code signing',
  '1.3.6.1.5.5.7.3.4': 'email protection',
  '1.3.6.1.5.5.7.3.5': 'ipsec end system',
  '1.3.6.1.5.5.7.3.6': 'ipsec tunnel',
  '1.3.6.1.5.5.7.3.7': 'ipsec user',
  '1.3.6.1.5.5.7.3.8': 'timestamping',
  '1.3.6.1.5.5.7.3.9': 'ocsp signing',
  '1.3.6.1.4.1.311.10.3.3': 'microsoft sgc',
  '2.16.840.1.113730.4.1': 'netscape sgc',
  '2.5.29.37.0': 'any',
};

export interface CsrUsages {
  /** Usage words from the CSR's keyUsage and extendedKeyUsage extensions; undefined when it has neither. */
  readonly usages: string[] | undefined;
  /** basicConstraints CA flag, when the CSR requests basicConstraints. */
  readonly isCA: boolean | undefined;
  /** Extended key usage OIDs in the CSR that have no usage word (the APIs cannot express them). */
  readonly unnamed: string[];
}

export function csrUsages(csrDer: Buffer): CsrUsages {
  const csr = new x509.Pkcs10CertificateRequest(csrDer);
  let usages: string[] | undefined;
  let isCA: boolean | undefined;
  const unnamed: string[] = [];
  for (const e of csr.extensions) {
    if (e instanceof x509.KeyUsagesExtension) usages = [...(usages ?? []), ...KU_WORDS.filter(([f]) => (e.usages & f) !== 0).map(([, w]) => w)];
    else if (e instanceof x509.ExtendedKeyUsageExtension) {
      const oids = e.usages.map(String);
      unnamed.push(...oids.filter((o) => !EKU_WORDS[o]));
      usages = [...(usages ?? []), ...oids.filter((o) => EKU_WORDS[o]).map((o) => EKU_WORDS[o]!)];
    } else if (e instanceof x509.BasicConstraintsExtension) isCA = e.ca;
  }
  return { usages, isCA, unnamed };
}

/** The usages to request for `csrDer`: the CSR's own when it names any, else the profile's defaults. */
export function requestUsages(csrDer: Buffer, kind: 'intermediate' | 'leaf'): string[] {
  const { usages: fromCsr, unnamed } = csrUsages(csrDer);
  // cert-manager and the certificates API take usage words only, and signers check them against the CSR: a CSR
  // asking for an extended key usage without a word would be refused by the API server (422) after a round trip.
  if (unnamed.length > 0) {
    throw invalidArgument(`CSR asks for extended key usage ${unnamed.join(', ')}, which cert-manager and the Kubernetes certificates API cannot express (remove it from the CSR)`);
  }
  const base = fromCsr && fromCsr.length > 0 ? fromCsr : kind === 'intermediate' ? [...INTERMEDIATE_USAGES] : [...LEAF_USAGES];
  const out = [...new Set(base)];
  if (kind === 'intermediate' && !out.includes('cert sign')) out.push('cert sign');
  return out;
}

/** Seconds as a Go duration string, the format cert-manager's spec.duration wants: 172800 → "48h0m0s". */
export function goDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m${s % 60}s`;
}
