import { chmod, mkdir, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { constants as cryptoConstants } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { TLSSocket, type SecureContextOptions } from 'node:tls';
import type { Http2Session } from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Authority, IssuedSvid } from '../authority/types.js';
import type { Clock, Timer } from '../util/clock.js';
import { errorMessage, failedPrecondition } from '../util/errors.js';
import { chainFrom } from './call-auth.js';

/**
 * meshca's gRPC server: a TLS listener on server.grpc.address with meshca's own SVID (spiffe://<td>/meshca plus
 * server.grpc.dnsNames / ipAddresses) and an optional plaintext Unix socket listener (file mode 0600).
 *
 * TLS: client certificates are requested but not enforced by OpenSSL (rejectUnauthorized: false); every call is
 * authenticated in the application layer (src/auth/mtls.ts via src/servers/call-auth.ts) so that a missing, foreign
 * or expired certificate is a clean UNAUTHENTICATED status naming the reason instead of a handshake reset. The CA list
 * in the CertificateRequest is our bundle plus the bootstrap CA. SSL_OP_NO_TICKET: no stateless tickets (TLS 1.2 and
 * 1.3). OpenSSL still sends two stateful TLS 1.3 tickets per handshake, which no client can use (Node keeps no server
 * session cache); only OpenSSL's NumTickets setting stops them, and OpenSSL reads that once at start-up, so operators
 * load examples/tuning/openssl.cnf through OPENSSL_CONF (README "Performance"; the Dockerfile sets it). Channelz is off.
 *
 * Rotation: the serving SVID is re-issued at its renewAt (retrying with backoff while the old one is valid) and the
 * secure context swapped in place; bundle changes update the advertised CA list. Existing connections keep their
 * context; new ones get the new one. Nothing restarts.
 */
export interface GrpcServerOptions {
  /** host:port; port 0 picks a free port (see port()). */
  readonly address: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  /** Extra PEM anchors for client certificates (contents of server.grpc.clientCaFile); advertised only. */
  readonly clientCaPem?: string;
  readonly maxMessageBytes: number;
  /** Streams one connection may hold (default 1000): a caller cannot pile unlimited streams, keys and timers on one. */
  readonly maxConcurrentStreams?: number;
  /** Unix socket path (server.uds.path); empty/absent = no UDS listener. */
  readonly udsPath?: string;
  readonly authority: Authority;
  readonly clock: Clock;
  readonly log: Logger;
  /** Serving SVID lifetime request; default: the authority's workload TTL. */
  readonly servingTtlSeconds?: number;
  /**
   * Whether a connection's client chain still reaches a trust anchor (MtlsAuthenticator.reachesAnchor). When a root
   * leaves the bundle, connections whose chain no longer does are closed: their calls were authenticated when they
   * began, and an open SDS stream would otherwise keep receiving renewed certificates.
   */
  readonly stillTrusted?: (chainDer: readonly Buffer[]) => boolean;
  /** Extra grpc-js channel options (tests, benchmarks). */
  readonly grpcOptions?: grpc.ServerOptions;
}

/** The wire form of ALPN ["h2"], shared by every connection (see releaseAlpnCopy). */
export const SHARED_ALPN_H2 = Buffer.from([2, 0x68, 0x32]);

/**
 * Node copies the server's ALPN list into a small pooled Buffer for every accepted TLS socket and keeps it on
 * socket._tlsOptions for the connection's life, though OpenSSL has its own copy once the socket is set up. One
 * live 3-byte slice pins a whole 8 KB pool slab: ~8 KB per SDS connection in a heap snapshot at 1,000 streams.
 * After the handshake the reference is replaced by one shared Buffer so the slab can be reused.
 */
export function releaseAlpnCopy(socket: TLSSocket): void {
  const opts = (socket as unknown as { _tlsOptions?: { ALPNProtocols?: unknown } })._tlsOptions;
  if (opts && Buffer.isBuffer(opts.ALPNProtocols) && opts.ALPNProtocols.equals(SHARED_ALPN_H2)) opts.ALPNProtocols = SHARED_ALPN_H2;
}

/** ServerCredentials whose secure context can be replaced while the server runs. */
class RotatingServerCredentials extends grpc.ServerCredentials {
  constructor(ctx: SecureContextOptions) {
    super({ requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' }, ctx);
  }
  update(ctx: SecureContextOptions): void {
    this.updateSecureContextOptions(ctx);
  }
  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 60_000;

export class GrpcServer {
  readonly server: grpc.Server;
  private creds: RotatingServerCredentials | undefined;
  private svid: IssuedSvid | undefined;
  private timer: Timer | undefined;
  private retryMs = RETRY_MIN_MS;
  private boundPort = 0;
  private started = false;
  private stopped = false;
  private readonly unsubscribe: () => void;
  private readonly alpnHooked = new WeakSet<object>();
  private roots: Set<string>;

  constructor(private readonly opts: GrpcServerOptions) {
    this.server = new grpc.Server({
      'grpc.enable_channelz': 0,
      'grpc.max_receive_message_length': opts.maxMessageBytes,
      'grpc.max_send_message_length': opts.maxMessageBytes,
      'grpc.max_concurrent_streams': opts.maxConcurrentStreams ?? 1000,
      // Keep idle SDS streams alive through NATs and notice dead peers: ping every 5 min, allow client pings >= 1 min.
      'grpc.keepalive_time_ms': 300_000,
      'grpc.keepalive_timeout_ms': 20_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 60_000,
      ...(opts.grpcOptions ?? {}),
    });
    this.roots = rootKeys(opts.authority.bundle().rootsDer);
    this.unsubscribe = opts.authority.onEvent((ev) => {
      if (ev.type === 'bundle') {
        if (this.creds && this.svid) this.creds.update(this.context(this.svid));
        const before = this.roots;
        this.roots = rootKeys(opts.authority.bundle().rootsDer);
        if ([...before].some((r) => !this.roots.has(r))) void this.closeUntrusted();
      }
      if (ev.type === 'reissue-all') this.schedule(0);
    });
  }

  addService(def: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): void {
    this.server.addService(def, impl);
  }

  /** The bound TCP port (after start()). */
  get port(): number {
    return this.boundPort;
  }

  /** The serving SVID currently installed (after start()). */
  get servingSvid(): IssuedSvid | undefined {
    return this.svid;
  }

  /** Issues the serving certificate, binds the TLS listener (and the UDS listener), starts serving. */
  async start(): Promise<{ port: number }> {
    if (this.started) throw failedPrecondition('grpc server already started');
    this.started = true;
    this.svid = await this.issueServing();
    this.creds = new RotatingServerCredentials(this.context(this.svid));
    this.schedule(this.svid.renewAt.getTime() - this.opts.clock.nowMs());
    this.boundPort = await this.bind(this.opts.address, this.creds);
    if (this.opts.udsPath) await this.bindUds(this.opts.udsPath);
    this.opts.log.info({ address: this.opts.address, port: this.boundPort, uds: this.opts.udsPath || undefined }, 'grpc server listening');
    return { port: this.boundPort };
  }

  /** Graceful stop: refuse new calls, wait up to timeoutMs for open calls (SDS streams never end by themselves), then cut. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.timer?.cancel();
    this.unsubscribe();
    // Captured before tryShutdown starts removing listeners from grpc-js's bookkeeping.
    const sessions = this.openSessions();
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.server.forceShutdown();
        // grpc-js 1.14 with channelz off tracks sessions only per listener and forceShutdown() does not destroy
        // those, so open SDS streams would keep their sockets (and the process) alive: destroy them here.
        for (const s of sessions) if (!s.destroyed) s.destroy();
        resolve();
      }, Math.max(0, timeoutMs));
      t.unref();
      this.server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
    if (this.opts.udsPath) await rm(this.opts.udsPath, { force: true }).catch(() => undefined);
  }

  /** Closes the connections whose client chain no longer reaches an anchor (a root left the bundle). */
  private async closeUntrusted(): Promise<void> {
    const check = this.opts.stillTrusted;
    if (!check || this.stopped) return;
    let closed = 0;
    const sessions = this.openSessions();
    for (let i = 0; i < sessions.length; i++) {
      const s = sessions[i]!;
      const socket = s.socket as unknown;
      if (!s.destroyed && socket instanceof TLSSocket && !check(chainFrom(socket))) {
        s.destroy();
        closed++;
      }
      if (i % 200 === 199) await new Promise((r) => setImmediate(r)); // 10,000 connections: do not stall the loop
    }
    if (closed > 0) this.opts.log.warn({ closed, checked: sessions.length }, 'grpc server: closed connections whose client certificate no longer chains to a trust anchor');
  }

  /** HTTP/2 sessions grpc-js currently holds (empty if its private state changes shape). */
  private openSessions(): Http2Session[] {
    const out: Http2Session[] = [];
    for (const info of this.grpcHttp2Servers().values()) for (const s of info?.sessions ?? []) out.push(s);
    return out;
  }

  /** grpc-js's private map of its HTTP/2 servers to their sessions; empty if its shape changes. */
  private grpcHttp2Servers(): Map<unknown, { sessions?: Set<Http2Session> } | undefined> {
    const servers = (this.server as unknown as { http2Servers?: unknown }).http2Servers;
    return servers instanceof Map ? servers : new Map();
  }

  private async issueServing(): Promise<IssuedSvid> {
    const spiffeId = `spiffe://${this.opts.authority.trustDomain}/meshca`;
    return this.opts.authority.issue({
      spiffeId,
      dnsNames: this.opts.dnsNames,
      ipAddresses: this.opts.ipAddresses,
      source: 'serving',
      ...(this.opts.servingTtlSeconds !== undefined ? { ttlSeconds: this.opts.servingTtlSeconds } : {}),
    });
  }

  private context(svid: IssuedSvid): SecureContextOptions {
    if (!svid.privateKeyPem) throw failedPrecondition('serving SVID came back without a private key');
    const ca = this.opts.authority.bundle().pem + (this.opts.clientCaPem ? `\n${this.opts.clientCaPem}` : '');
    return {
      cert: svid.chainPem,
      key: svid.privateKeyPem,
      ca,
      // No stateless session tickets; TLS 1.3's stateful ones need OPENSSL_CONF (see the class comment).
      secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
    };
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer?.cancel();
    this.timer = this.opts.clock.setTimer(() => void this.rotate(), Math.max(0, delayMs));
  }

  private async rotate(): Promise<void> {
    if (this.stopped) return;
    try {
      const svid = await this.issueServing();
      if (this.stopped) return;
      this.svid = svid;
      this.creds?.update(this.context(svid));
      this.retryMs = RETRY_MIN_MS;
      this.opts.log.info({ serial: svid.serialHex, notAfter: svid.notAfter.toISOString() }, 'grpc server: serving certificate rotated');
      this.schedule(svid.renewAt.getTime() - this.opts.clock.nowMs());
    } catch (e) {
      this.opts.log.error({ err: errorMessage(e), retryInMs: this.retryMs }, 'grpc server: serving certificate renewal failed');
      this.schedule(this.retryMs);
      this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
    }
  }

  private async bind(address: string, creds: grpc.ServerCredentials): Promise<number> {
    const port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(address, creds, (err, p) => (err ? reject(err) : resolve(p)));
    });
    for (const srv of this.grpcHttp2Servers().keys()) {
      if (srv instanceof EventEmitter && !this.alpnHooked.has(srv)) {
        this.alpnHooked.add(srv);
        srv.on('secureConnection', releaseAlpnCopy);
      }
    }
    return port;
  }


  private async bindUds(path: string): Promise<void> {
    // Created private (0700): with a group/world-writable directory another user could replace the socket.
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    // A stale socket from a crashed run would make bind fail; anything that is not a socket is left alone.
    const st = await stat(path).catch(() => undefined);
    if (st?.isSocket()) await rm(path);
    else if (st) throw failedPrecondition(`server.uds.path ${path} exists and is not a socket`);
    // umask-independent: create the socket, then tighten before any call is served (start() has not returned).
    const old = process.umask(0o177);
    try {
      await this.bind(`unix:${path}`, grpc.ServerCredentials.createInsecure());
    } finally {
      process.umask(old);
    }
    await chmod(path, 0o600);
  }
}

function rootKeys(rootsDer: readonly Buffer[]): Set<string> {
  return new Set(rootsDer.map((d) => d.toString('base64')));
}
