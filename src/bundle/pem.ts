import { X509Certificate } from 'node:crypto';
import { invalidArgument } from '../util/errors.js';

/** PEM of DER certificates, each block ending in "\n". */
export function certPem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

export function chainPem(ders: readonly Buffer[]): string {
  return ders.map(certPem).join('');
}

/**
 * DER certificates of a PEM bundle. Only CERTIFICATE blocks are accepted; anything else (keys, garbage between
 * blocks is ignored as PEM allows explanatory text) throws, as does a block that is not a certificate.
 */
export function pemCertificates(pem: string, what: string): Buffer[] {
  const out: Buffer[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
  for (let m = re.exec(pem); m; m = re.exec(pem)) {
    if (m[1] !== 'CERTIFICATE') throw invalidArgument(`${what}: holds a "${m[1]}" PEM block; only certificates are allowed`);
    const der = Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64');
    try {
      new X509Certificate(der);
    } catch (e) {
      throw invalidArgument(`${what}: certificate ${out.length + 1} cannot be parsed (${(e as Error).message})`);
    }
    out.push(der);
  }
  return out;
}
