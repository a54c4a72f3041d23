import { TLSSocket, type DetailedPeerCertificate } from 'node:tls';
import type * as grpc from '@grpc/grpc-js';
import type { AuthInput, Authenticator, Caller } from '../auth/types.js';

/** Any grpc-js server call object handed to a handler. */
export type AnyServerCall =
  | grpc.ServerUnaryCall<unknown, unknown>
  | grpc.ServerReadableStream<unknown, unknown>
  | grpc.ServerWritableStream<unknown, unknown>
  | grpc.ServerDuplexStream<unknown, unknown>;

interface SocketInfo {
  readonly tls: boolean;
  /** Leaf DER, undefined without a client certificate. */
  readonly leafDer: Buffer | undefined;
  /** OpenSSL accepted the chain against the context's CA list (bundle + bootstrap CA) during the handshake. */
  readonly authorized: boolean;
  /** OpenSSL's verification error code when not authorized. */
  readonly tlsError?: string | undefined;
  /** Full presented chain, extracted only when an authenticator asks for it. */
  chain: () => readonly Buffer[];
}

/** Peer info per connection: extracted once, all streams of one HTTP/2 connection share it. */
const perSocket = new WeakMap<object, SocketInfo>();

/**
 * Finds the transport socket under a grpc-js server call. grpc-js's public getAuthContext() hides the certificate
 * unless OpenSSL already verified it, but meshca verifies client certificates itself (mtls.ts, at Clock time, against
 * a bundle that rotates, reporting WHY a certificate is refused), so TLS runs with rejectUnauthorized: false and the
 * chain is read from the HTTP/2 session's socket. The walk follows grpc-js's call wrappers (`call` -> `nextCall` ->
 * `stream.session.socket`); test/integration/sds-auth.test.ts fails loudly if a grpc-js upgrade changes them.
 */
function socketOf(call: AnyServerCall): object | undefined {
  let cur: unknown = call;
  for (let i = 0; i < 6 && cur && typeof cur === 'object'; i++) {
    const o = cur as { stream?: { session?: { socket?: object } }; call?: unknown; nextCall?: unknown };
    const sock = o.stream?.session?.socket;
    if (sock) return sock;
    cur = o.call ?? o.nextCall;
  }
  return undefined;
}

/** The client chain a TLS socket presented, leaf first (empty without a client certificate). */
export function chainFrom(socket: TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  let c = socket.getPeerCertificate(true) as DetailedPeerCertificate | Record<string, never>;
  const seen = new Set<string>();
  while (c && 'raw' in c && c.raw) {
    const fp = c.fingerprint256;
    if (seen.has(fp)) break;
    seen.add(fp);
    out.push(Buffer.from(c.raw));
    if (!c.issuerCertificate || c.issuerCertificate === c) break;
    c = c.issuerCertificate;
  }
  return out;
}

/**
 * A TLS connection's peer info. A class (chain() extracted on first use and kept) rather than an object with a lazy
 * closure: it lives as long as the connection, and the closures and their contexts were ~200 bytes per connection.
 */
class TlsSocketInfo implements SocketInfo {
  readonly tls = true;
  private chainDer: Buffer[] | undefined;

  constructor(
    private readonly socket: TLSSocket,
    readonly leafDer: Buffer | undefined,
    readonly authorized: boolean,
    readonly tlsError: string | undefined,
  ) {}

  chain(): readonly Buffer[] {
    return (this.chainDer ??= chainFrom(this.socket));
  }
}

function infoOf(call: AnyServerCall): SocketInfo {
  const socket = socketOf(call);
  let info = socket ? perSocket.get(socket) : undefined;
  if (info) return info;
  if (socket instanceof TLSSocket) {
    // getPeerCertificate(false), not getPeerX509Certificate(): on Node 20 the latter also copies the presented
    // intermediates through OpenSSL's decoders, measured at 130-280 us per connection against ~50 us here.
    const peer = socket.getPeerCertificate(false) as { raw?: Buffer } | null;
    const leafDer = peer?.raw && peer.raw.length > 0 ? peer.raw : undefined;
    const error = socket.authorizationError as unknown;
    info = new TlsSocketInfo(socket, leafDer, socket.authorized, error === null || error === undefined ? undefined : String((error as { code?: string }).code ?? error));
  } else if (socket) {
    info = { tls: false, leafDer: undefined, authorized: false, chain: () => [] };
  } else {
    // Internals changed: fall back to the public API (only OpenSSL-verified peers are visible there).
    const ctx = (call as { getAuthContext?: () => { transportSecurityType?: string; sslPeerCertificate?: { raw?: Buffer } } }).getAuthContext?.();
    const raw = ctx?.sslPeerCertificate?.raw;
    const chain = raw ? [Buffer.from(raw)] : [];
    info = { tls: ctx?.transportSecurityType === 'ssl' || raw !== undefined, leafDer: chain[0], authorized: raw !== undefined, chain: () => chain };
  }
  if (socket) perSocket.set(socket, info);
  return info;
}

export function authInputOf(call: AnyServerCall): AuthInput {
  const info = infoOf(call);
  const auth = call.metadata.get('authorization');
  const authorization = auth.length > 0 ? String(auth[0]) : undefined;
  // meshca's TCP listener is always TLS; a plaintext socket can only be the Unix socket listener.
  return {
    get peerCertChainDer() {
      return info.chain();
    },
    viaUds: !info.tls,
    ...(info.leafDer ? { peerLeafDer: info.leafDer, tlsVerified: info.authorized } : {}),
    ...(info.tlsError ? { tlsError: info.tlsError } : {}),
    ...(authorization !== undefined ? { authorization } : {}),
  };
}

/** The `authenticate` function SDS and the other gRPC services take. */
export function callAuthenticator(authenticator: Authenticator): (call: AnyServerCall) => Promise<Caller> {
  return (call) => authenticator.authenticate(authInputOf(call));
}
