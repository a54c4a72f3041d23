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
  /**
   * Fast path for mTLS (optional; set by src/servers/call-auth.ts): the leaf alone, and whether the TLS layer already
   * validated the presented chain against the same anchors (our bundle + the bootstrap CA) at wall-clock time. When
   * tlsVerified is true an authenticator may check only the leaf and skip reading peerCertChainDer, which is then
   * computed lazily (extracting the full chain costs ~0.5-1 ms per connection).
   */
  readonly peerLeafDer?: Buffer;
  readonly tlsVerified?: boolean;
  /** OpenSSL's verification error code when tlsVerified is false (socket.authorizationError, e.g. CERT_HAS_EXPIRED). */
  readonly tlsError?: string;
}
