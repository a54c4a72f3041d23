import { X509Certificate } from 'node:crypto';
import type { TrustBundle } from '../authority/types.js';

/** One JWK of a SPIFFE bundle (x509-svid use): public key parameters plus x5c with exactly one DER CA cert. */
export interface SpiffeJwk {
  kty: string;
  use: 'x509-svid' | 'jwt-svid';
  x5c?: string[];
  kid?: string;
  crv?: string;
  x?: string;
  y?: string;
  n?: string;
  e?: string;
}

export interface SpiffeBundleDoc {
  keys: SpiffeJwk[];
  spiffe_sequence?: number;
  spiffe_refresh_hint?: number;
}

/**
 * The SPIFFE bundle (JWK Set) of a trust bundle: one `use: x509-svid` key per CA certificate, with `x5c` holding
 * exactly that certificate and no `kid` (SPIFFE_Trust_Domain_and_Bundle.md).
 */
export function bundleToJwks(bundle: TrustBundle, refreshHintSeconds: number): SpiffeBundleDoc {
  const keys = bundle.rootsDer.map((der): SpiffeJwk => {
    // The key comes from a parsed certificate (not freshly generated), so JWK export is safe on Node 20.
    const jwk = new X509Certificate(der).publicKey.export({ format: 'jwk' }) as Record<string, string>;
    const out: SpiffeJwk = { kty: jwk.kty!, use: 'x509-svid', x5c: [der.toString('base64')] };
    for (const k of ['crv', 'x', 'y', 'n', 'e'] as const) if (jwk[k] !== undefined) out[k] = jwk[k];
    return out;
  });
  return { keys, spiffe_sequence: bundle.sequence, spiffe_refresh_hint: Math.max(1, Math.round(refreshHintSeconds)) };
}
