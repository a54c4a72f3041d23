import { createHash, X509Certificate } from 'node:crypto';
import { isSelfSigned } from '../../src/x509/cert-parse.js';

/**
 * Pure helpers for the certificates Vault returns: PEM splitting, de-duplication (after sign-intermediate
 * `ca_chain` can repeat the signed cert, and `pem_bundle` repeats `ca_chain`), ordering and root detection.
 */

const PEM_RE = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;

/** Every CERTIFICATE block in the text, as DER, in order. */
export function pemBlocks(text: string): Buffer[] {
  const out: Buffer[] = [];
  for (const m of text.matchAll(PEM_RE)) out.push(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  return out;
}

/** Certificates from Vault fields that may be a PEM string, a list of PEM strings, or absent. Deduplicated. */
export function certsFrom(...fields: unknown[]): X509Certificate[] {
  const seen = new Set<string>();
  const out: X509Certificate[] = [];
  const add = (der: Buffer): void => {
    const k = der.toString('base64');
    if (seen.has(k)) return;
    seen.add(k);
    out.push(new X509Certificate(der));
  };
  for (const f of fields) {
    if (typeof f === 'string') pemBlocks(f).forEach(add);
    else if (Array.isArray(f)) for (const x of f) if (typeof x === 'string') pemBlocks(x).forEach(add);
  }
  return out;
}

export { isSelfSigned };

/** True when `parent` issued `child` (names match and the signature verifies). */
export function issuedBy(child: X509Certificate, parent: X509Certificate): boolean {
  return child.checkIssued(parent) && child.verify(parent.publicKey);
}

/**
 * Orders the non-root certificates that lead from `leaf` upward: leaf's issuer first. Stops at a self-signed
 * certificate (not included) or when no issuer is in the pool. Returns the path and the root it reached, if any.
 */
export function pathToRoot(leaf: X509Certificate, pool: readonly X509Certificate[]): { intermediates: X509Certificate[]; root?: X509Certificate } {
  const intermediates: X509Certificate[] = [];
  let cur = leaf;
  const used = new Set<X509Certificate>([leaf]);
  for (let i = 0; i < 10; i++) {
    const parent = pool.find((p) => !used.has(p) && !p.raw.equals(cur.raw) && issuedBy(cur, p));
    if (!parent) return { intermediates };
    if (isSelfSigned(parent)) return { intermediates, root: parent };
    intermediates.push(parent);
    used.add(parent);
    cur = parent;
  }
  return { intermediates };
}

/** Lower-case hex SHA-256 of a DER certificate. */
export function sha256Hex(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

/** The URI SANs of a certificate (Node prints "URI:a, DNS:b"). */
export function uriSans(c: X509Certificate): string[] {
  return (c.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
}
