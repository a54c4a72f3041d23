import type { BundleProvider, DomainBundle } from '../servers/sds/bundles.js';
import type { BundleRegistry, RegisteredBundle } from './registry.js';

function toDomain(b: RegisteredBundle): DomainBundle {
  return { trustDomain: b.trustDomain, pem: b.pem, sequence: b.sequence };
}

/**
 * The SDS BundleProvider backed by the BundleRegistry: own domain plus every federated domain, so SDS can serve
 * `spiffe://<foreign td>` and `ALL`. A federated bundle with no X.509 authorities (the foreign domain revoked all
 * keys) is left out: SDS cannot express "trust nothing from this domain" as a validation context, and leaving the
 * domain out has exactly that effect (its SVIDs are not trusted).
 */
export function registryBundleProvider(registry: BundleRegistry): BundleProvider {
  return {
    own: () => toDomain(registry.own()),
    all: () => [toDomain(registry.own()), ...registry.federated().filter((b) => b.rootsDer.length > 0).map(toDomain)],
    onChange: (listener) => registry.onChange(() => listener()),
    expects: (trustDomain) => registry.isExpected(trustDomain),
  };
}
