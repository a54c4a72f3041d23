import type { Caller } from '../../auth/types.js';
import type { Authorizer } from '../../identity/authorization.js';
import { parseSpiffeId } from '../../identity/spiffe-id.js';
import { CaError, invalidArgument, permissionDenied } from '../../util/errors.js';
import type { BundleProvider } from './bundles.js';
import { LISTED_ITEMS, showList } from '../../util/show-list.js';

/**
 * SDS resource names meshca serves (the SPIRE agent's names, see protocols.md §3.1):
 * - `default` or the caller's own SPIFFE ID: the caller's certificate and key;
 * - `ROOTCA` or `spiffe://<our td>`: our trust anchors as validation_context.trusted_ca;
 * - `spiffe://<federated td>`: that domain's anchors (when the BundleProvider knows it);
 * - `ALL`: one SPIFFE validator (custom_validator_config) listing every trust domain;
 * - another workload SPIFFE ID of our trust domain: its certificate, only for controllers the Authorizer allows
 *   (channel 'sds', meshca generates the key); anyone else gets PERMISSION_DENIED before anything is minted.
 * Anything else is INVALID_ARGUMENT naming the resource(s).
 * WILDCARD_NAMES is what a wildcard subscription (`*`, or a SotW stream that never named a resource) receives.
 */
export const DEFAULT_SVID_NAME = 'default';
export const DEFAULT_BUNDLE_NAME = 'ROOTCA';
export const ALL_BUNDLES_NAME = 'ALL';
export const WILDCARD = '*';
export const WILDCARD_NAMES: readonly string[] = [DEFAULT_SVID_NAME, DEFAULT_BUNDLE_NAME];

export type Target =
  | { readonly kind: 'cert'; readonly name: string; readonly spiffeId: string }
  | { readonly kind: 'bundle'; readonly name: string; readonly trustDomain: string }
  | { readonly kind: 'all'; readonly name: string };

export interface NameContext {
  readonly trustDomain: string;
  readonly bundles: BundleProvider;
  readonly authorizer: Authorizer;
}

/**
 * Resolves every name or throws: INVALID_ARGUMENT listing all unknown/malformed names first (they are the caller's
 * bug), else PERMISSION_DENIED listing all names the caller may not have. With `unknownTrustDomains` (DeltaSecrets)
 * a well-formed `spiffe://<td>` of a trust domain without a bundle resolves to a bundle target that does not exist
 * (yet): Delta reports it in removed_resources and sends it once the bundle appears (protocols.md §2).
 */
export function resolveNames(names: readonly string[], caller: Caller, ctx: NameContext, unknownTrustDomains = false): Target[] {
  const out: Target[] = [];
  const invalid: string[] = [];
  const reasons: string[] = [];
  const denied: string[] = [];
  const deniedWhy: string[] = [];
  for (const name of names) {
    if (name === DEFAULT_SVID_NAME) {
      // The caller's own identity: the Authorizer allows it (own-identity rule) unless meshca reserves it.
      const d = ctx.authorizer.decide({ caller, target: caller.spiffeId, generateKey: true, channel: 'sds' });
      if (d.allowed) out.push({ kind: 'cert', name, spiffeId: caller.spiffeId });
      else {
        denied.push(name);
        deniedWhy.push(d.reason);
      }
      continue;
    }
    if (name === DEFAULT_BUNDLE_NAME) {
      out.push({ kind: 'bundle', name, trustDomain: ctx.trustDomain });
      continue;
    }
    if (name === ALL_BUNDLES_NAME) {
      out.push({ kind: 'all', name });
      continue;
    }
    if (!name.toLowerCase().startsWith('spiffe://')) {
      invalid.push(name);
      reasons.push('not a name meshca serves (default, ROOTCA, ALL, spiffe://<trust domain>, or a SPIFFE ID)');
      continue;
    }
    let id;
    try {
      id = parseSpiffeId(name);
    } catch (e) {
      invalid.push(name);
      reasons.push((e as CaError).message);
      continue;
    }
    if (id.uri !== name) {
      invalid.push(name);
      reasons.push(`not in canonical form (use ${id.uri})`);
      continue;
    }
    if (id.path === '') {
      if (
        unknownTrustDomains ||
        id.trustDomain === ctx.trustDomain ||
        ctx.bundles.expects?.(id.trustDomain) ||
        ctx.bundles.all().some((b) => b.trustDomain === id.trustDomain)
      ) {
        out.push({ kind: 'bundle', name, trustDomain: id.trustDomain });
      } else {
        invalid.push(name);
        reasons.push(`unknown trust domain "${id.trustDomain}"`);
      }
      continue;
    }
    if (id.trustDomain !== ctx.trustDomain) {
      invalid.push(name);
      reasons.push(`trust domain "${id.trustDomain}" is not this CA's trust domain "${ctx.trustDomain}"`);
      continue;
    }
    const d = ctx.authorizer.decide({ caller, target: id.uri, generateKey: true, channel: 'sds' });
    if (d.allowed) out.push({ kind: 'cert', name, spiffeId: id.uri });
    else {
      denied.push(name);
      deniedWhy.push(d.reason);
    }
  }
  if (invalid.length > 0) {
    const why =
      invalid.length === 1 ? `: ${reasons[0]}` : ` (${reasons.slice(0, LISTED_ITEMS).map((r, i) => `${showList([invalid[i]!])}: ${r}`).join('; ')})`;
    throw invalidArgument(`unknown or invalid SDS resource name${invalid.length > 1 ? 's' : ''} ${showList(invalid)}${why}`);
  }
  if (denied.length > 0) {
    const why = [...new Set(deniedWhy)].slice(0, LISTED_ITEMS).join('; ');
    throw permissionDenied(`caller ${caller.spiffeId} is not authorized for SDS resource${denied.length > 1 ? 's' : ''} ${showList(denied)}: ${why}`);
  }
  return out;
}
