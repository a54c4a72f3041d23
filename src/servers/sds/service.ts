import { randomBytes } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Authority, AuthorityEvent, IssuedSvid } from '../../authority/types.js';
import type { Caller } from '../../auth/types.js';
import type { Authorizer } from '../../identity/authorization.js';
import type { SvidCache, SvidSubscription } from '../../cache/svid-cache.js';
import type { Clock } from '../../util/clock.js';
import { CaError, errorMessage, invalidArgument } from '../../util/errors.js';
import { toGrpcStatus, toServiceError } from '../status.js';
import type { AnyServerCall } from '../call-auth.js';
import type { BundleProvider, DomainBundle } from './bundles.js';
import { createSdsMetrics, type PushReason, type SdsMetrics } from './metrics.js';
import { WILDCARD, WILDCARD_NAMES, resolveNames, type Target } from './names.js';
import {
  SECRET_TYPE_URL,
  deltaResourceField,
  encodeDeltaResponse,
  encodeDiscoveryResponse,
  loadSdsProtos,
  multiBody,
  type SdsProtos,
} from './proto.js';
import { spiffeValidatorSecret, tlsCertificateSecret, trustedCaSecret, type EncodedSecret } from './secrets.js';

/**
 * envoy.service.secret.v3.SecretDiscoveryService: StreamSecrets (state of the world), DeltaSecrets (incremental) and
 * FetchSecrets (unary), plus the same two streams over ADS (AggregatedDiscoveryService, Secrets only; see
 * checkTypeUrl), following protocols.md §2:
 * - every response has type_url = Secret, a fresh version_info (SotW) / system_version_info (Delta) and a fresh nonce;
 *   SotW responses carry exactly one Secret, named exactly as requested (Envoy checks both and NACKs otherwise);
 * - an ACK (matching nonce, no error_detail, same names) gets no reply; SotW requests with a stale nonce are ignored;
 *   a NACK is logged and counted, the stream stays open, and name changes it carries are applied; nothing is re-sent
 *   unless content changes;
 * - SotW names are the full set: added names are sent (even if sent before), missing names are unsubscribed; a stream
 *   that has never named a resource is a wildcard subscription (legacy rule) and gets WILDCARD_NAMES
 *   (`default` + `ROOTCA`); an empty list after names means unsubscribe-all; `*` subscribes the wildcard set too;
 *   a name sent only for the wildcard is sent again when a request names it (it is newly requested);
 * - Delta: every name in resource_names_subscribe (`*` included) is answered (except, on the first message, names
 *   whose initial_resource_versions entry equals the current version); unsubscribes of unknown names are ignored; a
 *   pure unsubscribe gets no reply unless `*` is also subscribed, then the name is re-sent (still covered by the
 *   wildcard) or listed in removed_resources; a `spiffe://<td>` whose trust domain has no bundle (not yet, or no
 *   more) is listed in removed_resources and sent when its bundle appears;
 * - pushes: certificate renewal / re-issue (SvidCache) and bundle changes (BundleProvider); on an authority 'bundle'
 *   event validation contexts are pushed first, then the cache re-issues leaves;
 * - errors: a request that cannot be served (bad type_url, missing node.id, unknown name, unauthorised name,
 *   authentication failure, issuance failure) ENDS the call with that status (as SPIRE does): INVALID_ARGUMENT /
 *   PERMISSION_DENIED / UNAUTHENTICATED name what was wrong. A denied name never reaches the authority. No input can
 *   throw out of a handler.
 */
export interface SdsServiceOptions {
  readonly authority: Authority;
  readonly cache: SvidCache;
  readonly bundles: BundleProvider;
  readonly authorizer: Authorizer;
  /** Authenticates the caller of a call (see src/servers/call-auth.ts); rejects with CaError UNAUTHENTICATED. */
  readonly authenticate: (call: AnyServerCall) => Promise<Caller>;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Registry;
}

type Method = 'StreamSecrets' | 'DeltaSecrets' | 'FetchSecrets' | 'StreamAggregatedResources' | 'DeltaAggregatedResources';

/**
 * The request's type_url must name Secrets. On SecretDiscoveryService an empty one is implicit (discovery.proto: the
 * type "is implicit in requests made via singleton xDS APIs ... but is required for ADS"); on ADS it is required,
 * and meshca's ADS serves Secrets only.
 */
function checkTypeUrl(typeUrl: string, method: Method): void {
  if (typeUrl === SECRET_TYPE_URL) return;
  const ads = method === 'StreamAggregatedResources' || method === 'DeltaAggregatedResources';
  if (typeUrl === '' && !ads) return;
  if (typeUrl === '') throw invalidArgument(`type_url is required on AggregatedDiscoveryService (meshca serves only ${SECRET_TYPE_URL})`);
  const service = ads ? 'AggregatedDiscoveryService' : 'SecretDiscoveryService';
  throw invalidArgument(`type_url ${JSON.stringify(typeUrl)} is not served here: meshca's ${service} serves only ${SECRET_TYPE_URL}`);
}

interface Sub {
  readonly target: Target;
  /** Content version (EncodedSecret.version) last sent on this stream for this name. */
  sentVersion: string | undefined;
  /**
   * Latest content for this name (lets Delta re-send on a repeated subscribe). Delta streams only: SotW never reads
   * it, and a certificate's EncodedSecret is per stream (~2 KB of buffers), so SotW lets it go once written.
   */
  last: EncodedSecret | undefined;
  cert: SvidSubscription | undefined;
  /** True once something was pushed for this subscription (the initial send is then skipped). */
  started: boolean;
  /** Delta: the name is listed in removed_resources (its trust domain has no bundle) until it exists again. */
  removed: boolean;
  /** SotW: subscribed only through the wildcard (the last request did not name it). */
  wildcardOnly: boolean;
}

/** Per-stream state common to SotW and Delta. */
abstract class StreamBase {
  readonly subs = new Map<string, Sub>();
  caller: Caller | undefined;
  nodeId: string | undefined;
  closed = false;
  lastNonce: string | undefined;
  private chain: Promise<void> = Promise.resolve();
  /** Whether push() keeps the content it sends in Sub.last (only Delta re-sends it). */
  protected abstract readonly keepsLast: boolean;

  constructor(
    readonly svc: SdsService,
    readonly method: Method,
    readonly call: grpc.ServerDuplexStream<unknown, Buffer>,
  ) {}

  /** Requests are handled strictly in order; handlers never await issuance, only authentication. */
  enqueue(fn: () => Promise<void> | void): void {
    this.chain = this.chain.then(async () => {
      if (this.closed) return;
      try {
        await fn();
      } catch (e) {
        this.fail(e);
      }
    });
  }

  log(): Logger {
    return this.svc.log.child({ method: this.method, caller: this.caller?.spiffeId, node: this.nodeId });
  }

  /** Ends the call with the error's status (once) and releases everything. */
  fail(e: unknown): void {
    if (this.closed) return;
    const st = toGrpcStatus(e);
    this.svc.m.streamErrors.inc({ method: this.method, code: String(st.code) });
    const lvl = e instanceof CaError && e.code !== 'INTERNAL' ? 'info' : 'error';
    this.log()[lvl]({ code: st.code, err: errorMessage(e), detail: e instanceof CaError ? e.detail : undefined }, 'sds stream ended with error');
    this.release();
    try {
      this.call.emit('error', toServiceError(e));
    } catch {
      /* the call is already gone */
    }
  }

  /** Ends the call with UNAVAILABLE because the server is stopping (not an error of this stream: not logged or counted). */
  shutdown(): void {
    if (this.closed) return;
    this.release();
    try {
      this.call.emit('error', toServiceError(new CaError('UNAVAILABLE', 'meshca is shutting down; reconnect', { retryable: true })));
    } catch {
      /* the call is already gone */
    }
  }

  /** Idempotent cleanup: cancels every subscription and unregisters the stream. */
  release(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.subs.values()) s.cert?.close();
    this.subs.clear();
    this.svc.unregister(this);
  }

  /** Handles the node of the first request. */
  takeNode(node: { id?: string } | null | undefined): void {
    if (this.nodeId !== undefined) return;
    const id = node?.id ?? '';
    if (id === '') throw invalidArgument('the first request of an SDS stream must carry node.id (Envoy sets node.id and node.cluster)');
    this.nodeId = id;
  }

  /** Subscribes a resolved name and sends it once its content is ready. */
  addSub(target: Target, sentVersion: string | undefined): void {
    const sub: Sub = { target, sentVersion, last: undefined, cert: undefined, started: false, removed: false, wildcardOnly: false };
    this.subs.set(target.name, sub);
    if (target.kind !== 'cert') {
      let enc: EncodedSecret;
      try {
        enc = this.svc.bundleSecret(target);
      } catch (e) {
        if (this.missing(sub, e)) return;
        throw e;
      }
      this.push(sub, enc, 'subscription', sentVersion === undefined);
      return;
    }
    sub.cert = this.svc.cache.subscribe(this.caller!.spiffeId, this.nodeId!, target.spiffeId, (svid, reason) => {
      if (this.subs.get(target.name) !== sub) return;
      this.push(sub, this.svc.certSecret(target.name, svid), reason, false);
    });
    sub.cert.current.then(
      (svid) => {
        if (this.subs.get(target.name) !== sub || sub.started) return;
        this.push(sub, this.svc.certSecret(target.name, svid), 'subscription', sentVersion === undefined);
      },
      (e: unknown) => {
        if (this.subs.get(target.name) === sub) this.fail(e);
      },
    );
  }

  removeSub(name: string): void {
    const s = this.subs.get(name);
    if (!s) return;
    s.cert?.close();
    this.subs.delete(name);
  }

  /**
   * Sends `enc` for `sub` unless the same content was already sent and `force` is false. Returns whether it was
   * sent; metrics are counted here unless `count` is false (a fan-out loop counts once at the end).
   */
  push(sub: Sub, enc: EncodedSecret, reason: PushReason, force: boolean, count = true): boolean {
    if (this.closed) return false;
    sub.started = true;
    if (this.keepsLast) sub.last = enc;
    if (!force && sub.sentVersion === enc.version) return false;
    sub.sentVersion = enc.version;
    sub.removed = false;
    this.write(enc);
    if (count) {
      this.svc.m.pushes.inc({ reason });
      this.svc.m.secretsPushed.inc({ type: enc.kind });
    }
    return true;
  }

  abstract write(enc: EncodedSecret): void;

  /**
   * A bundle name whose trust domain has no bundle (bundleSecret threw `e`). Returns true when handled. SotW has no
   * "not found" signal (protocols.md §2): a federated trust domain meshca is configured for is held, silently, and
   * sent when its bundle appears; any other (a federation entry removed) ends the call with NOT_FOUND, as SPIRE does.
   */
  missing(sub: Sub, e: unknown): boolean {
    if (!(e instanceof CaError && e.code === 'NOT_FOUND')) return false;
    if (sub.target.kind !== 'bundle' || !this.svc.expectsTrustDomain(sub.target.trustDomain)) return false;
    sub.started = true;
    sub.last = undefined;
    sub.sentVersion = undefined;
    return true;
  }
}

interface Frame {
  readonly nonce: string;
  readonly bytes: Buffer;
}

class SotwStream extends StreamBase {
  protected readonly keepsLast = false;
  /** False until a request named a resource: until then an empty list is the legacy wildcard. */
  private everNamed = false;

  write(enc: EncodedSecret): void {
    const f = this.svc.frame('sotw', enc);
    this.lastNonce = f.nonce;
    this.call.write(f.bytes);
  }

  async handle(req: SotwRequest): Promise<void> {
    this.svc.m.requests.inc({ method: this.method });
    checkTypeUrl(req.type_url, this.method);
    // node is decoded lazily (lazy-node.ts): read it only until the stream has one.
    if (this.nodeId === undefined) this.takeNode(req.node);
    const nonce = req.response_nonce;
    if (nonce !== '' && nonce !== this.lastNonce) {
      // Common (an ACK of the previous response crossing the next one): no child logger unless debug is on.
      if (this.svc.log.isLevelEnabled('debug')) this.log().debug({ nonce, latest: this.lastNonce }, 'sds: ignoring request with a stale nonce');
      return;
    }
    if (req.error_detail) this.svc.nack(this, req.error_detail, req.version_info, nonce);
    const names = req.resource_names;
    let wildcard = names.includes(WILDCARD);
    if (names.length === 0 && !this.everNamed) wildcard = true;
    if (names.length > 0) this.everNamed = true;
    const named = new Set(names.filter((n) => n !== WILDCARD));
    const desired = new Set(named);
    if (wildcard) for (const n of WILDCARD_NAMES) desired.add(n);
    const added = [...desired].filter((n) => !this.subs.has(n));
    // xds_protocol.rst: "the server must resend any newly requested resources, even if it previously sent those
    // resources without having been asked for them": a name the wildcard covered, now requested by name.
    const nowNamed = [...named].filter((n) => this.subs.get(n)?.wildcardOnly === true);
    // Resolve (and authorise) before changing anything: a bad name ends the stream, nothing is half-applied.
    const targets = resolveNames(added, this.caller!, this.svc.nameContext);
    for (const name of [...this.subs.keys()]) if (!desired.has(name)) this.removeSub(name);
    for (const t of targets) this.addSub(t, undefined);
    for (const n of nowNamed) this.resubscribe(n);
    for (const [n, sub] of this.subs) sub.wildcardOnly = !named.has(n);
  }

  /**
   * Sends a live name again from fresh content (SotW keeps no copy of what it sent): a new subscription replaces the
   * old one, which is closed only afterwards so the node's certificate entry (and key) stays in the cache.
   */
  private resubscribe(name: string): void {
    const old = this.subs.get(name);
    if (!old) return;
    this.addSub(old.target, undefined);
    old.cert?.close();
  }
}

class DeltaStream extends StreamBase {
  protected readonly keepsLast = true;
  private first = true;
  private wildcard = false;
  private readonly explicit = new Set<string>();

  write(enc: EncodedSecret): void {
    const f = this.svc.frame('delta', enc);
    this.lastNonce = f.nonce;
    this.call.write(f.bytes);
  }

  private writeRemoved(names: string[]): void {
    const nonce = this.svc.nextNonce();
    this.lastNonce = nonce;
    this.call.write(encodeDeltaResponse(this.svc.nextVersion(), [], names, nonce));
  }

  /**
   * protocols.md §2 "Delta not-found or deleted": a subscribed trust domain without a bundle is listed in
   * removed_resources (once) and stays subscribed; it is sent again when its bundle appears.
   */
  override missing(sub: Sub, e: unknown): boolean {
    if (!(e instanceof CaError && e.code === 'NOT_FOUND')) return false;
    sub.started = true;
    sub.last = undefined;
    if (!sub.removed) {
      sub.removed = true;
      sub.sentVersion = undefined;
      this.writeRemoved([sub.target.name]);
    }
    return true;
  }

  async handle(req: DeltaRequest): Promise<void> {
    this.svc.m.requests.inc({ method: this.method });
    checkTypeUrl(req.type_url, this.method);
    // node is decoded lazily (lazy-node.ts): read it only until the stream has one.
    if (this.nodeId === undefined) this.takeNode(req.node);
    const first = this.first;
    this.first = false;
    // A request with a nonce is an ACK or (with error_detail) a NACK; subscription changes apply even if stale.
    if (req.error_detail) this.svc.nack(this, req.error_detail, '', req.response_nonce);
    const subscribe = req.resource_names_subscribe;
    const unsubscribe = req.resource_names_unsubscribe;
    if (first && subscribe.length === 0) this.wildcard = true; // legacy wildcard
    const resend = new Set<string>();
    const removedOut: string[] = [];
    for (const n of unsubscribe) {
      if (n === WILDCARD) {
        this.wildcard = false;
        continue;
      }
      if (!this.explicit.delete(n)) continue; // unknown name: ignored
      if (this.wildcard) {
        if (WILDCARD_NAMES.includes(n)) resend.add(n);
        else removedOut.push(n);
      }
    }
    for (const n of subscribe) {
      if (n === WILDCARD) this.wildcard = true;
      else this.explicit.add(n);
    }
    const desired = new Set(this.explicit);
    if (this.wildcard) for (const n of WILDCARD_NAMES) desired.add(n);
    const added = [...desired].filter((n) => !this.subs.has(n));
    const targets = resolveNames(added, this.caller!, this.svc.nameContext, true);
    for (const name of [...this.subs.keys()]) if (!desired.has(name)) this.removeSub(name);
    const initial = first ? req.initial_resource_versions : {};
    for (const t of targets) this.addSub(t, initial[t.name] !== undefined && initial[t.name] !== '' ? initial[t.name] : undefined);
    // Names subscribed again (already live) are answered again with their current content.
    for (const n of subscribe) if (n !== WILDCARD && !added.includes(n)) resend.add(n);
    // So is `*` subscribed again: every name it covers.
    if (subscribe.includes(WILDCARD)) for (const n of WILDCARD_NAMES) if (!added.includes(n)) resend.add(n);
    for (const n of resend) {
      const s = this.subs.get(n);
      if (s?.last) this.push(s, s.last, 'subscription', true);
      else if (s?.removed) removedOut.push(n);
    }
    if (removedOut.length > 0) this.writeRemoved(removedOut);
  }
}

interface RpcStatus {
  code: number;
  message: string;
}
interface SotwRequest {
  version_info: string;
  node: { id?: string } | null;
  resource_names: string[];
  type_url: string;
  response_nonce: string;
  error_detail: RpcStatus | null;
}
interface DeltaRequest {
  node: { id?: string } | null;
  type_url: string;
  resource_names_subscribe: string[];
  resource_names_unsubscribe: string[];
  initial_resource_versions: Record<string, string>;
  response_nonce: string;
  error_detail: RpcStatus | null;
}

export class SdsService {
  readonly protos: SdsProtos;
  readonly m: SdsMetrics;
  readonly cache: SvidCache;
  readonly log: Logger;
  readonly nameContext;
  private readonly streams = new Set<StreamBase>();
  private readonly bundleCache = new Map<string, { key: string; enc: EncodedSecret }>();
  private readonly unsubscribe: Array<() => void> = [];
  private readonly noncePrefix = randomBytes(4).toString('hex');
  private readonly versionPrefix: string;
  private nonceCounter = 0;
  /** Set while pushBundles() runs: one encoded response per (stream kind, secret), shared by every stream. */
  private fanout: Record<'sotw' | 'delta', Map<EncodedSecret, Frame>> | undefined;
  private versionCounter = 0;

  constructor(private readonly opts: SdsServiceOptions) {
    this.protos = loadSdsProtos();
    this.cache = opts.cache;
    this.log = opts.log;
    this.versionPrefix = opts.clock.nowMs().toString(36);
    this.nameContext = { trustDomain: opts.authority.trustDomain, bundles: opts.bundles, authorizer: opts.authorizer };
    this.m = createSdsMetrics(opts.metrics, () => opts.cache.nearestExpiry(), () => opts.clock.nowMs());
    // Ordering contract: on a bundle change validation contexts go out (synchronously) before any leaf is re-issued.
    this.unsubscribe.push(
      opts.authority.onEvent((ev: AuthorityEvent) => {
        try {
          if (ev.type === 'bundle') this.pushBundles();
          opts.cache.handleAuthorityEvent(ev);
        } catch (e) {
          this.log.error({ err: errorMessage(e), event: ev.type }, 'sds: handling an authority event failed');
        }
      }),
    );
    this.unsubscribe.push(opts.bundles.onChange(() => this.pushBundles()));
  }

  get definition(): grpc.ServiceDefinition {
    return this.protos.service;
  }

  /** Handlers for server.addService(definition, implementation()). */
  implementation(): grpc.UntypedServiceImplementation {
    return {
      StreamSecrets: (call: grpc.ServerDuplexStream<unknown, Buffer>) => this.openStream(new SotwStream(this, 'StreamSecrets', call)),
      DeltaSecrets: (call: grpc.ServerDuplexStream<unknown, Buffer>) => this.openStream(new DeltaStream(this, 'DeltaSecrets', call)),
      FetchSecrets: (call: grpc.ServerUnaryCall<SotwRequest, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        this.fetch(call, cb).catch((e: unknown) => cb(toServiceError(e) as grpc.ServiceError));
      },
    };
  }

  get adsDefinition(): grpc.ServiceDefinition {
    return this.protos.adsService;
  }

  /**
   * Handlers for envoy.service.discovery.v3.AggregatedDiscoveryService: the same streams as StreamSecrets and
   * DeltaSecrets (an Envoy whose SDS config source is ADS sends all its secret names on one stream); requests must
   * carry the Secret type_url.
   */
  adsImplementation(): grpc.UntypedServiceImplementation {
    return {
      StreamAggregatedResources: (call: grpc.ServerDuplexStream<unknown, Buffer>) => this.openStream(new SotwStream(this, 'StreamAggregatedResources', call)),
      DeltaAggregatedResources: (call: grpc.ServerDuplexStream<unknown, Buffer>) => this.openStream(new DeltaStream(this, 'DeltaAggregatedResources', call)),
    };
  }

  /** Open SotW + Delta streams. */
  openStreams(): number {
    return this.streams.size;
  }

  /**
   * Stops listening to the authority and bundles and ends every open stream with UNAVAILABLE ("shutting down"), so
   * that Envoy reconnects (to another replica, or to this one once it is back) instead of seeing the connection drop.
   */
  close(): void {
    for (const u of this.unsubscribe.splice(0)) u();
    const streams = [...this.streams];
    for (const s of streams) s.shutdown();
    if (streams.length > 0) this.log.info({ streams: streams.length }, 'sds: ended open streams with UNAVAILABLE (shutting down)');
  }

  nextNonce(): string {
    return this.noncePrefix + (++this.nonceCounter).toString(36);
  }

  /**
   * The response that carries `enc` on a stream of `kind`, with a fresh version and nonce. During a fan-out every
   * stream gets the same bytes: a nonce only has to be unique within a stream (protocols.md §2), and each stream gets
   * one response per secret per push, so encoding once instead of 10,000 times is safe.
   */
  frame(kind: 'sotw' | 'delta', enc: EncodedSecret): Frame {
    const hit = this.fanout?.[kind].get(enc);
    if (hit) return hit;
    const nonce = this.nextNonce();
    const version = this.nextVersion();
    const bytes =
      kind === 'sotw'
        ? encodeDiscoveryResponse(version, enc.sotwBody, nonce)
        : encodeDeltaResponse(version, [deltaResourceField(enc.name, enc.version, enc.any)], [], nonce);
    const f = { nonce, bytes };
    this.fanout?.[kind].set(enc, f);
    return f;
  }

  nextVersion(): string {
    return `${this.versionPrefix}-${(++this.versionCounter).toString(36)}`;
  }

  unregister(s: StreamBase): void {
    if (this.streams.delete(s)) this.m.streamsOpen.dec({ method: s.method });
  }

  nack(s: StreamBase, status: RpcStatus, version: string, nonce: string): void {
    this.m.nacks.inc({ method: s.method });
    s.log().warn({ nonce, version, code: status.code, reason: status.message?.slice(0, 1000) }, 'sds: client NACKed a response');
  }

  certSecret(name: string, svid: IssuedSvid): EncodedSecret {
    return tlsCertificateSecret(this.protos, name, svid);
  }

  /** A configured federated trust domain (its bundle may not be here yet). */
  expectsTrustDomain(trustDomain: string): boolean {
    return this.opts.bundles.expects?.(trustDomain) ?? false;
  }

  /** Encoded validation context for a bundle target, cached per name and bundle sequence(s). */
  bundleSecret(target: Target): EncodedSecret {
    if (target.kind === 'cert') throw new Error('sds: bundleSecret called for a certificate');
    let key: string;
    let make: () => EncodedSecret;
    if (target.kind === 'all') {
      const all = this.opts.bundles.all();
      key = all.map((b) => `${b.trustDomain}#${b.sequence}#${b.pem.length}`).join(',');
      make = () => spiffeValidatorSecret(this.protos, target.name, all);
    } else {
      const b = this.domainBundle(target.trustDomain);
      key = `${b.sequence}#${b.pem.length}`;
      make = () => trustedCaSecret(this.protos, target.name, b);
    }
    const hit = this.bundleCache.get(target.name);
    if (hit && hit.key === key) return hit.enc;
    const enc = make();
    this.bundleCache.set(target.name, { key, enc });
    return enc;
  }

  private domainBundle(td: string): DomainBundle {
    const own = this.opts.bundles.own();
    if (own.trustDomain === td) return own;
    const b = this.opts.bundles.all().find((x) => x.trustDomain === td);
    if (!b) throw new CaError('NOT_FOUND', `trust domain ${td} has no bundle any more`);
    return b;
  }

  /** Pushes every bundle-type subscription whose content changed. Synchronous. */
  pushBundles(): void {
    let sent = 0;
    this.fanout = { sotw: new Map(), delta: new Map() };
    try {
      for (const s of this.streams) {
        for (const sub of s.subs.values()) {
          if (sub.target.kind === 'cert' || !sub.started) continue;
          try {
            if (s.push(sub, this.bundleSecret(sub.target), 'bundle', false, false)) sent++;
          } catch (e) {
            if (s.missing(sub, e)) continue;
            s.fail(e);
            break;
          }
        }
      }
    } finally {
      this.fanout = undefined;
    }
    if (sent > 0) {
      this.m.pushes.inc({ reason: 'bundle' }, sent);
      this.m.secretsPushed.inc({ type: 'validation_context' }, sent);
    }
  }

  private openStream(s: SotwStream | DeltaStream): void {
    const call = s.call;
    this.streams.add(s);
    this.m.streamsOpen.inc({ method: s.method });
    // One listener for the three ways a call goes away (a closure per event and stream is memory held per stream).
    const release = (): void => s.release();
    call.on('error', release);
    call.on('cancelled', release);
    call.on('close', release);
    call.on('end', () => {
      // The client half-closed: finish the call with OK.
      s.release();
      try {
        call.end();
      } catch {
        /* already ended */
      }
    });
    s.enqueue(async () => {
      s.caller = await this.opts.authenticate(call);
    });
    call.on('data', (req: SotwRequest & DeltaRequest) => {
      s.enqueue(() => (s instanceof SotwStream ? s.handle(req) : (s as DeltaStream).handle(req)));
    });
  }

  private async fetch(call: grpc.ServerUnaryCall<SotwRequest, Buffer>, cb: grpc.sendUnaryData<Buffer>): Promise<void> {
    const method: Method = 'FetchSecrets';
    this.m.requests.inc({ method });
    try {
      const caller = await this.opts.authenticate(call);
      const req = call.request;
      checkTypeUrl(req.type_url, method);
      const names = req.resource_names.length === 0 ? [...WILDCARD_NAMES] : [...new Set(req.resource_names.filter((n) => n !== WILDCARD))];
      if (req.resource_names.includes(WILDCARD)) for (const n of WILDCARD_NAMES) if (!names.includes(n)) names.push(n);
      const targets = resolveNames(names, caller, this.nameContext);
      const nodeId = req.node?.id ?? '';
      if (nodeId === '' && targets.some((t) => t.kind === 'cert')) {
        throw invalidArgument('FetchSecrets for a certificate needs node.id (keys are per SDS client node)');
      }
      const encs = await Promise.all(
        targets.map(async (t) => {
          if (t.kind !== 'cert') return this.bundleSecret(t);
          const sub = this.cache.subscribe(caller.spiffeId, nodeId, t.spiffeId, () => undefined);
          try {
            return this.certSecret(t.name, await sub.current);
          } finally {
            sub.close();
          }
        }),
      );
      for (const e of encs) this.m.secretsPushed.inc({ type: e.kind });
      this.m.pushes.inc({ reason: 'subscription' }, encs.length);
      cb(null, encodeDiscoveryResponse(this.nextVersion(), multiBody(encs.map((e) => e.any)), this.nextNonce()));
    } catch (e) {
      const st = toGrpcStatus(e);
      this.m.streamErrors.inc({ method, code: String(st.code) });
      this.log.info({ method, code: st.code, err: errorMessage(e) }, 'sds fetch failed');
      cb(toServiceError(e) as grpc.ServiceError);
    }
  }
}
