/**
 * Who is calling. Produced by an authenticator (mTLS peer certificate, Kubernetes ServiceAccount token, or the
 * node-local Unix socket) and consumed by the authoriser. Servers never look at transport details beyond this.
 */
export interface Caller {
  /** The caller's SPIFFE ID, canonical form, in our trust domain. */
  readonly spiffeId: string;
  readonly via: 'mtls' | 'k8s-token' | 'uds';
}

/** Turns gRPC call metadata + peer into a Caller, or throws CaError UNAUTHENTICATED naming why. */
export interface Authenticator {
  authenticate(input: AuthInput): Promise<Caller>;
}

export interface AuthInput {
  /** DER of the verified-or-not client certificate chain presented on TLS, leaf first (empty when none). */
  readonly peerCertChainDer: readonly Buffer[];
  /** Value of the `authorization` metadata header, if any. */
  readonly authorization?: string;
  /** True when the call arrived on the node-local Unix socket. */
  readonly viaUds: boolean;
}
