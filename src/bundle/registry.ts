import { createHash } from 'node:crypto';
import type { Authority, TrustBundle } from '../authority/types.js';
import { validateTrustDomain } from '../identity/spiffe-id.js';
import { invalidArgument } from '../util/errors.js';
import { bundleMapJson, spiffeBundleJson, type JwtAuthority } from './jwks.js';
import { chainPem } from './pem.js';

export type BundleSourceKind = 'own' | 'federated-endpoint' | 'federated-file';

/** One trust domain's bundle as held by the registry. Immutable; a change replaces the object. */
export interface RegisteredBundle {
  /** Bare trust domain name. */
  readonly trustDomain: string;
  /** X.509 trust anchors, DER, in the order the source gave them. */
  readonly rootsDer: readonly Buffer[];
  /** Concatenated PEM of rootsDer ("" when empty). */
  readonly pem: string;
  /** Increases on every change of this trust domain's bundle. */
  readonly sequence: number;
  readonly refreshHintSeconds: number;
  readonly source: BundleSourceKind;
  readonly jwtAuthorities: readonly JwtAuthority[];
  readonly updatedAt: Date;
}

export interface BundleChange {
  readonly trustDomain: string;
  /** The new bundle; undefined when the trust domain was removed. */
  readonly bundle: RegisteredBundle | undefined;
  /** Registry-wide revision after this change (increases on every change of any bundle). */
  readonly revision: number;
}

export interface FederatedBundleUpdate {
  readonly rootsDer: readonly Buffer[];
  readonly jwtAuthorities?: readonly JwtAuthority[];
  /**
   * The source's spiffe_sequence: used when higher than the registry's; when absent, equal or lower, the registry
   * counts changes itself so its sequence still increases on every change.
   */
  readonly sequence?: number;
  readonly refreshHintSeconds: number;
  readonly source: Exclude<BundleSourceKind, 'own'>;
}

function contentKey(roots: readonly Buffer[], jwt: readonly JwtAuthority[]): string {
  const h = createHash('sha256');
  for (const r of roots) h.update(createHash('sha256').update(r).digest());
  h.update(JSON.stringify(jwt.map((j) => j.jwk)));
  return h.digest('hex');
}

/**
 * The trust bundles meshca knows: its own trust domain's and each federated trust domain's, kept apart (bundles of
 * different trust domains are never merged). Consumers (SDS `spiffe://<td>` and `ALL`, BundleService, the bundle
 * endpoint, file publishers) read it and subscribe to changes.
 *
 * onChange listeners get every change after they subscribe; a late subscriber reads the current state with
 * get()/all() first. Listeners run synchronously and must not throw (a throwing listener is isolated).
 */
export class BundleRegistry {
  readonly ownTrustDomain: string;
  private readonly bundles = new Map<string, RegisteredBundle>();
  private readonly keys = new Map<string, string>();
  private readonly expectedDomains = new Set<string>();
  private readonly listeners = new Set<(c: BundleChange) => void>();
  private rev = 0;

  constructor(
    own: TrustBundle,
    private readonly opts: { ownRefreshHintSeconds: number; now?: () => Date; onListenerError?: (e: unknown) => void },
  ) {
    this.ownTrustDomain = own.trustDomain;
    this.setOwn(own);
  }

  /** Registry-wide revision: increases on every change of any bundle (an SDS version source). */
  get revision(): number {
    return this.rev;
  }

  /** Follows an authority's bundle events. Returns unsubscribe. */
  attachAuthority(authority: Pick<Authority, 'bundle' | 'onEvent'>): () => void {
    this.setOwn(authority.bundle());
    return authority.onEvent((ev) => {
      if (ev.type === 'bundle') this.setOwn(ev.bundle);
    });
  }

  /** Replaces our own trust domain's bundle (sequence from the authority). */
  setOwn(b: TrustBundle): void {
    if (b.trustDomain !== this.ownTrustDomain) throw invalidArgument(`bundle of "${b.trustDomain}" is not our trust domain "${this.ownTrustDomain}"`);
    const prev = this.bundles.get(b.trustDomain);
    const key = contentKey(b.rootsDer, []);
    if (prev && prev.sequence === b.sequence && this.keys.get(b.trustDomain) === key) return;
    this.put(
      {
        trustDomain: b.trustDomain,
        rootsDer: [...b.rootsDer],
        pem: b.pem || chainPem(b.rootsDer),
        sequence: b.sequence,
        refreshHintSeconds: this.opts.ownRefreshHintSeconds,
        source: 'own',
        jwtAuthorities: [],
        updatedAt: this.now(),
      },
      key,
    );
  }

  /**
   * Sets a federated trust domain's bundle. Returns false (and notifies nobody) when nothing changed. Throws for our
   * own trust domain: a foreign source may never replace our anchors.
   */
  setFederated(trustDomain: string, u: FederatedBundleUpdate): boolean {
    validateTrustDomain(trustDomain);
    if (trustDomain === this.ownTrustDomain) {
      throw invalidArgument(`federated trust domain "${trustDomain}" is this CA's own trust domain`);
    }
    const jwt = u.jwtAuthorities ?? [];
    const key = contentKey(u.rootsDer, jwt);
    const prev = this.bundles.get(trustDomain);
    const sameContent = prev !== undefined && this.keys.get(trustDomain) === key;
    // Our copy's sequence increases on every change (it is served again as spiffe_sequence over BundleService and in
    // SDS bundle maps): the source's sequence is taken when it is higher than ours, otherwise a change of keys
    // counts one up (a source that changed its keys without raising its sequence, or whose sequence went back).
    const newer = u.sequence !== undefined && (prev === undefined || u.sequence > prev.sequence);
    if (sameContent && !newer && prev.refreshHintSeconds === u.refreshHintSeconds && prev.source === u.source) {
      return false;
    }
    const sequence = newer ? u.sequence! : prev === undefined ? 1 : sameContent ? prev.sequence : prev.sequence + 1;
    this.put(
      {
        trustDomain,
        rootsDer: [...u.rootsDer],
        pem: chainPem(u.rootsDer),
        sequence,
        refreshHintSeconds: u.refreshHintSeconds,
        source: u.source,
        jwtAuthorities: [...jwt],
        updatedAt: this.now(),
      },
      key,
    );
    return true;
  }

  removeFederated(trustDomain: string): void {
    if (trustDomain === this.ownTrustDomain || !this.bundles.has(trustDomain)) return;
    this.bundles.delete(trustDomain);
    this.keys.delete(trustDomain);
    this.emit({ trustDomain, bundle: undefined, revision: ++this.rev });
  }

  /**
   * Marks federated trust domains that meshca is configured to serve (federation.trustDomains), whether or not it
   * has fetched their bundles yet: SDS then holds a subscription to such a domain until its bundle appears
   * (protocols.md §2, "remember the requested name and push it if it appears later").
   */
  expectFederated(trustDomains: readonly string[]): void {
    for (const td of trustDomains) if (td !== this.ownTrustDomain) this.expectedDomains.add(td);
  }

  /** True for a trust domain passed to expectFederated. */
  isExpected(trustDomain: string): boolean {
    return this.expectedDomains.has(trustDomain);
  }

  get(trustDomain: string): RegisteredBundle | undefined {
    return this.bundles.get(trustDomain);
  }

  own(): RegisteredBundle {
    return this.bundles.get(this.ownTrustDomain)!;
  }

  /** Federated bundles sorted by trust domain. */
  federated(): RegisteredBundle[] {
    return [...this.bundles.values()].filter((b) => b.source !== 'own').sort((a, b) => (a.trustDomain < b.trustDomain ? -1 : 1));
  }

  /** Own bundle first, then federated ones sorted by trust domain. */
  all(): RegisteredBundle[] {
    return [this.own(), ...this.federated()];
  }

  /** SPIFFE bundle document (JWK Set JSON) of one trust domain, or undefined when unknown. */
  spiffeBundleJson(trustDomain: string): string | undefined {
    const b = this.bundles.get(trustDomain);
    if (!b) return undefined;
    return spiffeBundleJson({ rootsDer: b.rootsDer, jwtAuthorities: b.jwtAuthorities, sequence: b.sequence, refreshHintSeconds: b.refreshHintSeconds });
  }

  /** SPIFFE bundle map of every trust domain (own and federated), for Envoy's SPIFFE validator `trust_bundles`. */
  bundleMapJson(): string {
    return bundleMapJson(this.all().map((b) => ({ trustDomain: b.trustDomain, rootsDer: b.rootsDer, jwtAuthorities: b.jwtAuthorities, sequence: b.sequence })));
  }

  onChange(cb: (c: BundleChange) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  private now(): Date {
    return this.opts.now ? this.opts.now() : new Date();
  }

  private put(b: RegisteredBundle, key: string): void {
    this.bundles.set(b.trustDomain, b);
    this.keys.set(b.trustDomain, key);
    this.emit({ trustDomain: b.trustDomain, bundle: b, revision: ++this.rev });
  }

  private emit(c: BundleChange): void {
    for (const l of [...this.listeners]) {
      try {
        l(c);
      } catch (e) {
        this.opts.onListenerError?.(e);
      }
    }
  }
}
