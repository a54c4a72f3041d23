import type { KeyObject } from 'node:crypto';

/** Key algorithms meshca can generate and sign with (config: workload.keyType). */
export const KEY_TYPES = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'ed25519'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

/** A certificate authority whose private key this process holds and signs with. */
export interface SigningCa {
  /** This CA's certificate, DER. */
  readonly certDer: Buffer;
  /** Certificates above certDer, nearest first, up to but excluding the trust anchor. May be empty. DER. */
  readonly chainDer: readonly Buffer[];
  readonly key: KeyObject;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** What a caller asks to be certified. All validation of the ID happens before this point. */
export interface LeafTemplate {
  /** Canonical SPIFFE ID URI; becomes the one URI SAN. */
  readonly spiffeId: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly publicKey: KeyObject;
  readonly notBefore: Date;
  readonly notAfter: Date;
}
