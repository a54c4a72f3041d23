import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Clock } from '../src/util/clock.js';
import type { StateStore } from '../src/store/types.js';

/**
 * Everything a backend may use. Backends get their dependencies here and keep no globals.
 */
export interface BackendContext {
  readonly trustDomain: string;
  readonly clock: Clock;
  readonly log: Logger;
  readonly store: StateStore;
  readonly metrics: Registry;
}

/** A chain returned by an upstream signer. */
export interface UpstreamChain {
  /** The newly signed certificate first, then its issuers, up to but excluding the trust anchors. DER. */
  readonly chain: Buffer[];
  /** The trust anchors this chain validates against (usually one self-signed root). DER. */
  readonly roots: Buffer[];
}

export interface IntermediateRequest {
  /** PKCS#10 CSR for meshca's signing CA (CA:true requested), DER and PEM of the same bytes. */
  readonly csrDer: Buffer;
  readonly csrPem: string;
  /** Public key of the CSR, already verified against the CSR's signature. */
  readonly publicKey: KeyObject;
  readonly ttlSeconds: number;
  readonly signal?: AbortSignal;
}

export interface LeafRequest {
  /** PKCS#10 CSR with the SPIFFE ID as its one URI SAN, DER and PEM of the same bytes. */
  readonly csrDer: Buffer;
  readonly csrPem: string;
  readonly publicKey: KeyObject;
  readonly spiffeId: string;
  readonly dnsNames: readonly string[];
  readonly ttlSeconds: number;
  readonly signal?: AbortSignal;
}

export interface BackendHealth {
  /** False while the backend cannot sign; meshca keeps serving what it holds and /readyz reports the reason. */
  readonly ok: boolean;
  readonly reason?: string;
}

/**
 * The one interface a signing backend implements. Errors are CaError (src/util/errors.ts) whose message starts
 * with the backend name ("vault: ..."); `retryable` tells the caller whether to back off and try again.
 *
 * mode "intermediate": meshca generates its signing CA key, the backend certifies it (mintIntermediate), and
 *   meshca signs every leaf itself. The backend is called once per signing-CA rotation.
 * mode "leaf": the backend signs every leaf (signLeaf); meshca holds no signing CA.
 */
export interface AuthorityBackend {
  readonly name: string;
  readonly mode: 'intermediate' | 'leaf';
  /** Loads or creates persistent state, logs in, etc. Throws a clear error if state is corrupt. */
  init(): Promise<void>;
  mintIntermediate?(req: IntermediateRequest): Promise<UpstreamChain>;
  signLeaf?(req: LeafRequest): Promise<UpstreamChain>;
  /** The current trust anchors (DER). */
  trustAnchors(): Promise<Buffer[]>;
  /** Optional: calls onChange with the new anchors whenever the upstream's anchors change. Returns unsubscribe. */
  watchTrustAnchors?(onChange: (roots: Buffer[]) => void): () => void;
  /** Optional: start a new root now (internal backend). The old root stays trusted until its leaves expire. */
  rotateRoot?(): Promise<void>;
  health(): BackendHealth;
  close(): Promise<void>;
}

/** How providers/index.ts registers a backend: a config schema and a factory. */
export interface ProviderFactory<C> {
  readonly name: string;
  create(config: C, ctx: BackendContext): AuthorityBackend | Promise<AuthorityBackend>;
}
