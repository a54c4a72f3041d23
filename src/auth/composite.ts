import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Authenticator, AuthInput, Caller } from './types.js';
import { unauthenticated } from '../util/errors.js';
import { authFailuresCounter } from './mtls.js';

/**
 * Picks the authenticator for a call:
 * 1. the node-local Unix socket (viaUds): Caller{spiffeId: server.uds.identity, via:'uds'}. The socket file is 0600,
 *    so only processes of meshca's own user can connect; they act as that configured identity;
 * 2. an `authorization: Bearer <token>` header: the token authenticator (Kubernetes ServiceAccount tokens) when one
 *    is configured. Without one, a caller that also presented a TLS client certificate is authenticated by that
 *    certificate alone (istio-agent sends its ServiceAccount token on every call, also when it renews over mTLS, and
 *    istiod accepts the certificate; the unverifiable token grants nothing); with no certificate either the call is
 *    UNAUTHENTICATED, saying that token authentication is not configured;
 * 3. otherwise the TLS client certificate (mtls.ts).
 */
export interface CompositeAuthenticatorOptions {
  readonly mtls: Authenticator;
  readonly token?: Authenticator;
  /** SPIFFE ID given to Unix-socket callers (server.uds.identity); UDS calls are refused when absent. */
  readonly udsIdentity?: string;
  readonly log: Logger;
  readonly metrics: Registry;
}

export class CompositeAuthenticator implements Authenticator {
  constructor(private readonly opts: CompositeAuthenticatorOptions) {}

  async authenticate(input: AuthInput): Promise<Caller> {
    if (input.viaUds) {
      if (!this.opts.udsIdentity) return this.refuse('uds-not-configured', 'the Unix socket listener has no server.uds.identity configured');
      return { spiffeId: this.opts.udsIdentity, via: 'uds' };
    }
    const auth = input.authorization;
    if (auth !== undefined && /^bearer\s/i.test(auth)) {
      if (this.opts.token) return this.opts.token.authenticate(input);
      if (!input.peerLeafDer && input.peerCertChainDer.length === 0) {
        return this.refuse('token-not-configured', 'bearer token authentication is not configured on this server; use an mTLS client certificate');
      }
      this.opts.log.debug('auth: bearer token ignored (token authentication is not configured); using the client certificate');
    }
    return this.opts.mtls.authenticate(input);
  }

  private refuse(reason: string, message: string): never {
    authFailuresCounter(this.opts.metrics).inc({ reason });
    this.opts.log.warn({ reason, err: message }, 'auth: caller refused');
    throw unauthenticated(message);
  }
}
