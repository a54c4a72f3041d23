import 'reflect-metadata';
import { webcrypto, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { toPem } from './pem.js';

/**
 * A PKCS#10 CSR for a leaf whose key meshca generated, for backends that sign CSRs per leaf (Vault leaf mode,
 * cert-manager leaf mode, Kubernetes CSRs). Not on the hot path: those backends' round trips dominate.
 */
export async function createLeafCsr(opts: {
  key: { privateKey: KeyObject; publicKey: KeyObject };
  spiffeId: string;
  dnsNames: readonly string[];
}): Promise<{ der: Buffer; pem: string }> {
  const alg = webcryptoAlgorithm(opts.key.privateKey);
  const crypto = webcrypto as unknown as Crypto;
  const privateKey = await crypto.subtle.importKey('pkcs8', opts.key.privateKey.export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign']);
  const publicKey = await crypto.subtle.importKey('spki', opts.key.publicKey.export({ type: 'spki', format: 'der' }), alg, true, ['verify']);
  const names: x509.JsonGeneralName[] = [{ type: 'url', value: opts.spiffeId }, ...opts.dnsNames.map((d) => ({ type: 'dns' as const, value: d }))];
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      keys: { privateKey, publicKey },
      signingAlgorithm: alg,
      extensions: [new x509.SubjectAlternativeNameExtension(names, false)],
    },
    crypto,
  );
  const der = Buffer.from(csr.rawData);
  return { der, pem: toPem(der, 'CERTIFICATE REQUEST') };
}

function webcryptoAlgorithm(key: KeyObject): Algorithm & Record<string, unknown> {
  const t = key.asymmetricKeyType;
  const d = key.asymmetricKeyDetails;
  if (t === 'ec') {
    const curve = d?.namedCurve === 'secp384r1' ? 'P-384' : 'P-256';
    return { name: 'ECDSA', namedCurve: curve, hash: curve === 'P-384' ? 'SHA-384' : 'SHA-256' };
  }
  if (t === 'rsa') return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  if (t === 'ed25519') return { name: 'Ed25519' };
  throw new Error(`unsupported key type ${t ?? 'unknown'}`);
}
