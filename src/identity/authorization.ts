import { matchesIdPattern, parseSpiffeId } from './spiffe-id.js';
import type { Caller } from '../auth/types.js';
import { LISTED_ITEMS, showList } from '../util/show-list.js';

/** One entry of `authorization.controllers` after config validation. */
export interface ControllerRule {
  /** Caller SPIFFE ID: exact, or a path prefix ending in "/*". */
  readonly id: string;
  /** SPIFFE ID patterns (exact or "/*" prefix) this controller may obtain identities for. */
  readonly allow: readonly string[];
  /** Longest TTL this controller may request, seconds. */
  readonly maxTtlSeconds: number;
  /** Whether meshca may generate the private key for this controller (bootstrap credentials). */
  readonly generateKeys: boolean;
  /**
   * DNS SANs this controller may put in the certificates it obtains: exact names, or "*.<suffix>" for every name
   * under <suffix> (any depth, wildcard names included). Absent = any DNS name; [] = none.
   */
  readonly dnsNames?: readonly string[];
}

/** One `authorization.controllers` entry as the config schema yields it. */
interface ConfiguredController {
  readonly id: string;
  readonly allow: readonly string[];
  readonly maxTtl: number;
  readonly generateKeys: boolean;
  readonly dnsNames?: readonly string[] | undefined;
}

export interface AuthzRequest {
  readonly caller: Caller;
  /** Canonical target SPIFFE ID (already validated, in our trust domain). */
  readonly target: string;
  /** True when meshca would generate and return the private key. */
  readonly generateKey: boolean;
  /**
   * 'sds': Envoy asking for a secret it will use itself; meshca always generates the key there, so the
   * generateKeys permission is not required for the caller's own identity.
   * 'api': the controller or Istio API.
   */
  readonly channel: 'sds' | 'api';
  /** DNS SANs the certificate would carry (default none). */
  readonly dnsNames?: readonly string[];
}

export type AuthzDecision =
  | { readonly allowed: true; readonly rule: 'self' | 'controller'; readonly controllerId?: string; readonly maxTtlSeconds?: number }
  | { readonly allowed: false; readonly reason: string };

/**
 * Decides whether a caller may obtain an identity. The rules:
 * - any authenticated caller may obtain its own identity (over SDS with a generated key; over the API with a CSR,
 *   or with a generated key only if a controller rule lets it generate keys);
 * - a caller matching controller rules may obtain identities matching any of their `allow` patterns, with a
 *   generated key only when such a rule has generateKeys; when several rules allow a request, the longest maxTtl
 *   applies (rules add permissions, never take them away);
 * - DNS SANs are identities too (for peers that verify host names): a certificate carries them only when a
 *   controller rule that grants the request permits every one of them (its dnsNames), so a workload that is not a
 *   controller never gets a DNS name it chose itself;
 * - meshca's own identities (`reserved`: its serving ID spiffe://<td>/meshca, everything under spiffe://<td>/meshca/,
 *   the bundle endpoint's ID) go to no caller, whatever a controller's allow patterns say, not even one presenting
 *   such an identity (meshca issues its own certificates without asking the Authorizer): a holder could pose as
 *   meshca to every proxy that pins that ID. The same holds for meshca's serving DNS names (`reservedDns`);
 * - everything else is denied with a reason naming the caller and the target.
 * Pure: no I/O; the audit log is written by the caller of decide().
 */
export class Authorizer {
  constructor(
    private readonly rules: readonly ControllerRule[],
    /** SPIFFE IDs or "<prefix>/*" patterns (matchesIdPattern) that only meshca itself holds. */
    private readonly reserved: readonly string[] = [],
    /** DNS names on meshca's own serving certificate (lower case). */
    private readonly reservedDns: readonly string[] = [],
  ) {}

  /** From the validated config (durations already in seconds). */
  static fromConfig(cfg: {
    readonly trustDomain: string;
    readonly authorization: { readonly controllers: readonly ConfiguredController[] };
    readonly server?: {
      readonly grpc?: { readonly dnsNames?: readonly string[] };
      readonly bundleEndpoint?: { readonly spiffeId?: string | undefined } | undefined;
    };
  }): Authorizer {
    return new Authorizer(
      cfg.authorization.controllers.map((c) => ({
        id: c.id,
        allow: c.allow,
        maxTtlSeconds: c.maxTtl,
        generateKeys: c.generateKeys,
        ...(c.dnsNames ? { dnsNames: c.dnsNames } : {}),
      })),
      reservedIds(cfg.trustDomain, cfg.server?.bundleEndpoint?.spiffeId),
      (cfg.server?.grpc?.dnsNames ?? []).map((d) => d.toLowerCase()),
    );
  }

  /** Rules that apply to this caller, in config order. */
  controllerRulesFor(callerId: string): ControllerRule[] {
    return this.rules.filter((r) => matchesIdPattern(callerId, r.id));
  }

  isController(callerId: string): boolean {
    return this.controllerRulesFor(callerId).length > 0;
  }

  decide(req: AuthzRequest): AuthzDecision {
    const { caller, target, generateKey, channel } = req;
    const dnsNames = req.dnsNames ?? [];
    const rules = this.controllerRulesFor(caller.spiffeId);
    const permitsDns = (r: ControllerRule): boolean => dnsNames.every((d) => dnsNameAllowed(d, r.dnsNames));
    const reservedBy = this.reserved.find((p) => matchesIdPattern(target, p));
    if (reservedBy !== undefined) {
      return { allowed: false, reason: `identity ${target} is reserved for meshca itself (${reservedBy}); no caller may obtain it, whatever authorization.controllers allows` };
    }
    const dnsTaken = dnsNames.filter((d) => this.reservedDns.some((r) => dnsNamesOverlap(d, r)));
    if (dnsTaken.length > 0) {
      return { allowed: false, reason: `DNS name${dnsTaken.length > 1 ? 's' : ''} ${dnsTaken.join(', ')} ${dnsTaken.length > 1 ? 'are' : 'is'} meshca's own (server.grpc.dnsNames); no caller may obtain ${dnsTaken.length > 1 ? 'them' : 'it'}` };
    }
    if (target === caller.spiffeId) {
      if (dnsNames.length === 0 && (!generateKey || channel === 'sds')) return { allowed: true, rule: 'self' };
      const keyOk = rules.filter((x) => !generateKey || channel === 'sds' || x.generateKeys);
      const r = longestTtl(keyOk.filter(permitsDns));
      if (r) return { allowed: true, rule: 'self', controllerId: r.id, maxTtlSeconds: r.maxTtlSeconds };
      if (keyOk.length === 0 && generateKey && channel !== 'sds') {
        return { allowed: false, reason: `caller ${caller.spiffeId} may request its own identity only with a CSR` };
      }
      return { allowed: false, reason: dnsDenied(caller.spiffeId, target, dnsNames, keyOk) };
    }
    // Every rule that matches the caller counts (an exact-ID entry and a prefix entry may both apply): the caller may
    // do what any one of them allows, and gets the longest maxTtl among the rules that allow this request.
    const covering = rules.filter((r) => r.allow.some((p) => matchesIdPattern(target, p)));
    const keyOk = covering.filter((x) => !generateKey || x.generateKeys);
    const r = longestTtl(keyOk.filter(permitsDns));
    if (r) return { allowed: true, rule: 'controller', controllerId: r.id, maxTtlSeconds: r.maxTtlSeconds };
    if (keyOk.length > 0) return { allowed: false, reason: dnsDenied(caller.spiffeId, target, dnsNames, keyOk) };
    if (covering.length > 0) {
      return {
        allowed: false,
        reason: `controller ${caller.spiffeId} may not have meshca generate keys for ${target} (authorization.controllers ${covering
          .map((r) => `id ${r.id}`)
          .join(', ')} ${covering.length === 1 ? 'has' : 'have'} generateKeys: false)`,
      };
    }
    return {
      allowed: false,
      reason:
        rules.length === 0
          ? `caller ${caller.spiffeId} is not authorized for identity ${target} (it is not a controller listed in authorization.controllers)`
          : `controller ${caller.spiffeId} is not authorized for identity ${target} (no allow pattern matches)`,
    };
  }
}

/**
 * The identities only meshca holds: its serving ID, everything under it (the bundle endpoint's default ID), and a
 * bundle endpoint ID configured elsewhere.
 */
export function reservedIds(trustDomain: string, bundleEndpointId?: string): string[] {
  const own = `spiffe://${trustDomain}/meshca`;
  const out = [own, `${own}/*`];
  // As meshca issues it: the config keeps the ID as written, and the parser accepts an upper-case scheme.
  const endpoint = bundleEndpointId ? parseSpiffeId(bundleEndpointId).uri : undefined;
  if (endpoint && endpoint !== own && !endpoint.startsWith(`${own}/`)) out.push(endpoint);
  return out;
}

/**
 * Whether a certificate for DNS name `a` would be accepted for `b` or the other way round (RFC 6125: "*" stands for
 * exactly one left-most label; case-insensitive): equal names, or a wildcard whose base is the other name less its
 * first label ("*.svc.example" and "meshca.svc.example").
 */
export function dnsNamesOverlap(a: string, b: string): boolean {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  if (x === y) return true;
  const base = (n: string): string | undefined => (n.startsWith('*.') ? n.slice(2) : undefined);
  const parent = (n: string): string | undefined => (n.includes('.') ? n.slice(n.indexOf('.') + 1) : undefined);
  const bx = base(x);
  const by = base(y);
  if (bx !== undefined && by === undefined) return parent(y) === bx;
  if (by !== undefined && bx === undefined) return parent(x) === by;
  return false;
}

/**
 * The reserved pattern (reservedIds) that `id` falls under, if any: for the checks outside the Authorizer (meshca
 * issue, server.uds.identity), which have the config but no Authorizer.
 */
export function reservedPatternOf(id: string, trustDomain: string, bundleEndpointId?: string): string | undefined {
  return reservedIds(trustDomain, bundleEndpointId).find((p) => matchesIdPattern(id, p));
}

/** Whether DNS name `name` is within `patterns` (exact, or "*.<suffix>": any name under suffix); absent = any. */
export function dnsNameAllowed(name: string, patterns: readonly string[] | undefined): boolean {
  if (patterns === undefined) return true;
  const n = name.toLowerCase();
  return patterns.some((p) => {
    const q = p.toLowerCase();
    return q.startsWith('*.') ? n.endsWith(q.slice(1)) && n.length > q.length - 1 : n === q;
  });
}

function dnsDenied(callerId: string, target: string, dnsNames: readonly string[], rules: readonly ControllerRule[]): string {
  const asked = `DNS names ${showList(dnsNames)}`;
  if (rules.length === 0) {
    return `caller ${callerId} may not put ${asked} in the certificate for ${target}: only callers listed in authorization.controllers may, within their rule's dnsNames`;
  }
  const granted = rules
    .slice(0, LISTED_ITEMS)
    .map((r) => `id ${r.id} allows dnsNames [${(r.dnsNames ?? []).join(', ')}]`)
    .join('; ');
  return `controller ${callerId} may not put ${asked} in the certificate for ${target} (authorization.controllers: ${granted})`;
}

/** Of the rules that grant a request, the one with the longest maxTtl (rules add permissions); undefined if none. */
function longestTtl<R extends { readonly maxTtlSeconds: number }>(granting: readonly R[]): R | undefined {
  return granting.reduce<R | undefined>((best, x) => (best === undefined || x.maxTtlSeconds > best.maxTtlSeconds ? x : best), undefined);
}

/**
 * The lifetime granted for a request of `requestedSeconds` (0 or less = workload.ttl), and the cap it was held to:
 * the granting rule's maxTtl and workload.maxTtl, whichever is shorter. The same for every API that takes a TTL.
 */
export function grantedTtl(
  requestedSeconds: number,
  decision: { readonly maxTtlSeconds?: number },
  workload: { readonly ttlSeconds: number; readonly maxTtlSeconds: number },
): { readonly ttl: number; readonly cap: number } {
  const cap = Math.min(decision.maxTtlSeconds ?? workload.maxTtlSeconds, workload.maxTtlSeconds);
  return { ttl: Math.min(requestedSeconds > 0 ? requestedSeconds : workload.ttlSeconds, cap), cap };
}
