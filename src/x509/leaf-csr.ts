import type { KeyObject } from 'node:crypto';
import { sign as cryptoSign } from 'node:crypto';
import { bitString, oid, seq, set, tlv } from './der.js';
import { signatureAlgorithmFor, spkiDerOf } from './keys.js';
import { toPem } from './pem.js';
import { ATTR, EKU, EMPTY_NAME, KU, extKeyUsageExt, keyUsageExt, subjectAltNameExt } from './profile.js';

/**
 * A PKCS#10 CSR for a leaf whose key meshca generated, for backends that sign CSRs per leaf (Vault leaf mode,
 * cert-manager leaf mode, Kubernetes CSRs): empty subject, extensionRequest with a SAN holding the SPIFFE ID
 * (the one URI) and the DNS names, and keyUsage digitalSignature + keyEncipherment and extKeyUsage serverAuth +
 * clientAuth: exactly the usages (src/kube/usages.ts LEAF_USAGES, as csi-driver-spiffe requests) that cert-manager's
 * and the certificates API's `spec.usages` then carry, since their webhooks compare the two. Not on the hot path:
 * those backends' round trips dominate.
 */
export async function createLeafCsr(opts: {
  key: { privateKey: KeyObject; publicKey: KeyObject };
  spiffeId: string;
  dnsNames: readonly string[];
}): Promise<{ der: Buffer; pem: string }> {
  const alg = signatureAlgorithmFor(opts.key.privateKey);
  const exts = seq(
    subjectAltNameExt(false, [opts.spiffeId], opts.dnsNames),
    keyUsageExt([KU.digitalSignature, KU.keyEncipherment]),
    extKeyUsageExt([EKU.serverAuth, EKU.clientAuth]),
  );
  const cri = seq(
    Buffer.from([0x02, 0x01, 0x00]),
    EMPTY_NAME,
    spkiDerOf(opts.key.publicKey),
    tlv(0xa0, seq(oid(ATTR.extensionRequest), set(exts))),
  );
  const der = seq(cri, alg.algorithmIdentifier, bitString(cryptoSign(alg.hash, cri, opts.key.privateKey)));
  return { der, pem: toPem(der, 'CERTIFICATE REQUEST') };
}
