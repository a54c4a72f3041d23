import type { Authority } from '../../authority/types.js';

/** The trust anchors of one trust domain as SDS serves them. */
export interface DomainBundle {
  /** Bare trust domain name ("example.org"). */
  readonly trustDomain: string;
  /** Concatenated PEM of the anchors. */
  readonly pem: string;
  /** Changes whenever pem changes (SPIFFE sequence for our own domain). */
  readonly sequence: number;
}

/**
 * Every trust domain's bundle that SDS can hand out. `own()` is this CA's domain (ROOTCA, spiffe://<td>);
 * `all()` adds federated domains (issue #4 supplies a provider that merges foreign bundles) and is what `ALL` and
 * `spiffe://<foreign td>` resolve against. `onChange` fires after any bundle changed; listeners re-read all().
 */
export interface BundleProvider {
  own(): DomainBundle;
  /** Own domain first, then the others sorted by name; never two entries for one domain. */
  all(): readonly DomainBundle[];
  onChange(listener: () => void): () => void;
  /**
   * True for a federated trust domain meshca is configured to serve, even while it has no bundle for it (not
   * fetched yet, or all its keys revoked): SotW holds such a name until the bundle appears instead of failing.
   */
  expects?(trustDomain: string): boolean;
}

/** Our own trust domain only, straight from the authority. */
export function authorityBundleProvider(authority: Authority): BundleProvider {
  const own = (): DomainBundle => {
    const b = authority.bundle();
    return { trustDomain: b.trustDomain, pem: b.pem, sequence: b.sequence };
  };
  return {
    own,
    all: () => [own()],
    onChange: (listener) =>
      authority.onEvent((ev) => {
        if (ev.type === 'bundle') listener();
      }),
  };
}
