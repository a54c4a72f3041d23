import type * as grpc from '@grpc/grpc-js';
import type { BundleRegistry, RegisteredBundle } from '../../bundle/registry.js';
import { spiffeBundleJson } from '../../bundle/jwks.js';
import { counter } from '../../telemetry/metrics.js';
import { CaError, errorMessage } from '../../util/errors.js';
import type { AnyServerCall } from '../call-auth.js';
import { toServiceError } from '../status.js';
import type { ControllerServiceDeps } from './identity-service.js';

/** meshca.v1.TrustBundle as a plain object for @grpc/proto-loader. */
export interface ProtoTrustBundle {
  trust_domain: string;
  sequence: number;
  x509_authorities: Buffer[];
  x509_authorities_pem: string;
  spiffe_bundle_json: string;
  refresh_hint_seconds: number;
  source: string;
}

const SOURCES = {
  own: 'BUNDLE_SOURCE_OWN',
  'federated-endpoint': 'BUNDLE_SOURCE_FEDERATED_ENDPOINT',
  'federated-file': 'BUNDLE_SOURCE_FEDERATED_FILE',
} as const;

export function toProtoBundle(b: RegisteredBundle): ProtoTrustBundle {
  // Once per bundle version, not once per watcher: a change pushed to thousands of WatchBundle streams encoded the
  // JWKS (a certificate parse and key export per root) for each of them.
  const hit = protoByBundle.get(b);
  if (hit && hit.sequence === b.sequence) return hit.proto;
  const proto = encodeProtoBundle(b);
  protoByBundle.set(b, { sequence: b.sequence, proto });
  return proto;
}

const protoByBundle = new WeakMap<RegisteredBundle, { readonly sequence: number; readonly proto: ProtoTrustBundle }>();

function encodeProtoBundle(b: RegisteredBundle): ProtoTrustBundle {
  return {
    trust_domain: b.trustDomain,
    sequence: b.sequence,
    x509_authorities: [...b.rootsDer],
    x509_authorities_pem: b.pem,
    spiffe_bundle_json: spiffeBundleJson({ rootsDer: b.rootsDer, jwtAuthorities: b.jwtAuthorities, sequence: b.sequence, refreshHintSeconds: b.refreshHintSeconds }),
    refresh_hint_seconds: Math.round(b.refreshHintSeconds),
    source: SOURCES[b.source],
  };
}

/** The requested bundles, or NOT_FOUND naming the unknown trust domains. Empty request = all. */
function select(registry: BundleRegistry, requested: readonly string[]): RegisteredBundle[] {
  if (requested.length === 0) return registry.all();
  const uniq = [...new Set(requested)];
  const missing = uniq.filter((td) => !registry.get(td));
  if (missing.length > 0) {
    throw new CaError('NOT_FOUND', `no bundle for trust domain(s) ${missing.map((t) => JSON.stringify(t)).join(', ')}; known: ${registry.all().map((b) => b.trustDomain).join(', ')}`);
  }
  return uniq.map((td) => registry.get(td)!);
}

/**
 * A call that presents an `authorization` header must authenticate (a bad or wrong-audience Bearer token is
 * UNAUTHENTICATED on every API, issue #6); a call without one needs no credentials.
 */
async function checkPresentedToken(deps: Pick<ControllerServiceDeps, 'authenticate'>, call: AnyServerCall): Promise<void> {
  if (call.metadata.get('authorization').length > 0) await deps.authenticate(call);
}

/**
 * meshca.v1.BundleService handlers. Bundles are public: no authentication is required (the listener's TLS still
 * applies), but a presented `authorization` header must be valid. WatchBundle sends the complete current state
 * first, then again after every change of a watched trust domain (a watch of all domains also sees domains added
 * later); it ends only when the client cancels or the server drains.
 */
export function bundleServiceHandlers(deps: Pick<ControllerServiceDeps, 'bundles' | 'log' | 'metrics' | 'authenticate' | 'draining'>): grpc.UntypedServiceImplementation {
  const registry = deps.bundles;
  const log = deps.log.child({ component: 'bundle-service' });
  const requests = counter(deps.metrics, 'meshca_api_requests_total', 'Controller and Istio API calls by method and result code', ['method', 'code']);
  return {
    GetBundle: (call: grpc.ServerUnaryCall<{ trust_domains?: string[] }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      checkPresentedToken(deps, call as AnyServerCall)
        .then(() => {
          const bundles = select(registry, call.request.trust_domains ?? []);
          requests.inc({ method: 'GetBundle', code: 'OK' });
          cb(null, { own_trust_domain: registry.ownTrustDomain, bundles: bundles.map(toProtoBundle) });
        })
        .catch((e: unknown) => {
          requests.inc({ method: 'GetBundle', code: e instanceof CaError ? e.code : 'INTERNAL' });
          cb(toServiceError(e));
        });
    },
    WatchBundle: (call: grpc.ServerWritableStream<{ trust_domains?: string[] }, unknown>) => {
      checkPresentedToken(deps, call as AnyServerCall)
        .then(() => watch(call))
        .catch((e: unknown) => {
          requests.inc({ method: 'WatchBundle', code: e instanceof CaError ? e.code : 'INTERNAL' });
          call.emit('error', toServiceError(e));
        });
    },
  };

  function watch(call: grpc.ServerWritableStream<{ trust_domains?: string[] }, unknown>): void {
    // The client may have gone while its token was being reviewed: subscribing now would never be undone.
    if (call.cancelled || call.destroyed) return;
    const requested = [...new Set(call.request.trust_domains ?? [])];
    const initial = select(registry, requested); // throws NOT_FOUND etc.: the caller ends the stream with it
    requests.inc({ method: 'WatchBundle', code: 'OK' });
    const watched = (td: string) => requested.length === 0 || requested.includes(td);
    const send = (bundles: RegisteredBundle[], changed: string[]) => {
      if (call.cancelled || call.destroyed) return;
      call.write({ own_trust_domain: registry.ownTrustDomain, bundles: bundles.map(toProtoBundle), changed_trust_domains: changed });
    };
    send(initial, initial.map((b) => b.trustDomain));
    const unsub = registry.onChange((c) => {
      if (!watched(c.trustDomain)) return;
      try {
        // Removed domains drop out of the complete state; a watched-by-name domain that disappears is simply absent.
        const now = requested.length === 0 ? registry.all() : requested.map((td) => registry.get(td)).filter((b): b is RegisteredBundle => !!b);
        send(now, [c.trustDomain]);
      } catch (e) {
        log.error({ err: errorMessage(e) }, 'WatchBundle push failed');
      }
    });
    // Draining: end with UNAVAILABLE so the client reconnects, rather than waiting to be cut off.
    const onDrain = () => {
      end();
      call.emit('error', toServiceError(new CaError('UNAVAILABLE', 'meshca is shutting down; reconnect', { retryable: true })));
    };
    const end = () => {
      unsub();
      deps.draining?.removeEventListener('abort', onDrain);
    };
    call.on('cancelled', end);
    call.on('close', end);
    call.on('error', end);
    call.on('finish', end);
    if (deps.draining?.aborted) onDrain();
    else deps.draining?.addEventListener('abort', onDrain, { once: true });
  }
}
