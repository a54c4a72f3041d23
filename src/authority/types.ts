import type { KeyObject } from 'node:crypto';
import type { KeyType } from '../x509/types.js';
import type { ParsedCsr } from '../x509/csr.js';

/** A request to certify one SPIFFE ID. The ID has been parsed and authorised before it gets here. */
export interface IssueRequest {
  /** Canonical workload SPIFFE ID in this CA's trust domain. */
  readonly spiffeId: string;
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  /** Requested lifetime; the authority applies workload.ttl when absent and caps it at workload.maxTtl. */
  readonly ttlSeconds?: number;
  /** The caller's public key (from a verified CSR). When absent meshca generates a key of `keyType`. */
  readonly publicKey?: KeyObject;
  /** Used only when publicKey is absent; defaults to workload.keyType. */
  readonly keyType?: KeyType;
  /** Verified CSR, passed through to leaf-mode backends that sign CSRs themselves. */
  readonly csrDer?: Buffer;
  /** Who asked, for metrics and audit: "sds", "api", "istio", "cli", "serving". */
  readonly source?: string;
}

/** An issued X.509-SVID. */
export interface IssuedSvid {
  readonly spiffeId: string;
  /** Leaf first, then intermediates up to but excluding the trust anchors. DER. */
  readonly chainDer: readonly Buffer[];
  /** Same chain as concatenated PEM. */
  readonly chainPem: string;
  /** PKCS#8 PEM private key; only when meshca generated the key. Never log it. */
  readonly privateKeyPem?: string;
  readonly keyType: KeyType | 'caller';
  readonly serialHex: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** When to replace it: issuance time + renewFraction x lifetime, jittered +/-10%. */
  readonly renewAt: Date;
  /** Identifier of the signing CA generation that signed it (changes when the signing CA rotates). */
  readonly caGeneration: number;
}

/** Trust anchors of one trust domain, versioned. */
export interface TrustBundle {
  readonly trustDomain: string;
  /** Self-signed roots (or operator-chosen anchors), DER, stable order. */
  readonly rootsDer: readonly Buffer[];
  /** Concatenated PEM of rootsDer. */
  readonly pem: string;
  /** Increases on every change (SPIFFE spiffe_sequence). */
  readonly sequence: number;
}

export type AuthorityEvent =
  /** The trust bundle changed: push it before any leaf signed by a new CA. */
  | { readonly type: 'bundle'; readonly bundle: TrustBundle }
  /** A new signing CA became active; leaves signed by the old one should be replaced at their renewal time. */
  | { readonly type: 'signing-ca'; readonly generation: number }
  /** An operator asked to re-issue every leaf now (meshca rotate). */
  | { readonly type: 'reissue-all'; readonly generation: number };

export interface AuthorityHealth {
  readonly ready: boolean;
  /** Set when degraded or not ready, e.g. "vault: sealed". */
  readonly reason?: string;
}

/**
 * The CA core as servers see it. Implemented by src/authority/authority.ts.
 */
export interface Authority {
  readonly trustDomain: string;
  issue(req: IssueRequest): Promise<IssuedSvid>;
  /** The current trust bundle of our own trust domain. */
  bundle(): TrustBundle;
  /** Listens to bundle and signing-CA changes. Returns unsubscribe. */
  onEvent(listener: (ev: AuthorityEvent) => void): () => void;
  /**
   * Optional: parses and verifies a CSR (PEM or DER) off the calling thread when the authority has signing workers.
   * Same result and errors as src/x509/csr.ts parseCsr.
   */
  parseCsr?(input: string | Buffer): Promise<ParsedCsr>;
  /** Operator "rotate now": new signing CA (and, with root=true, a new root), then a reissue-all event. */
  rotate(opts?: { root?: boolean }): Promise<void>;
  health(): AuthorityHealth;
}
