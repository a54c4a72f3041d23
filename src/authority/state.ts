import { createPrivateKey, X509Certificate } from 'node:crypto';
import { CaError } from '../util/errors.js';
import { pemToDers, toPem } from '../x509/pem.js';
import { privateKeyToPkcs8Pem } from '../x509/keys.js';
import type { SigningCa } from '../x509/types.js';

/** Persisted form of the authority's signing CAs and bundle (store key "authority"). Holds private keys: 0600. */
export const AUTHORITY_KEY = 'authority';
const FORMAT = 'meshca.authority/v1';

export interface Slot {
  readonly generation: number;
  readonly ca: SigningCa;
  /** Trust anchors the slot's chain validates against. */
  readonly rootsDer: readonly Buffer[];
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
}

export interface AuthorityState {
  readonly trustDomain: string;
  readonly backend: string;
  readonly active: Slot | undefined;
  readonly next: Slot | undefined;
  /** Former active slots, kept until they expire so their roots stay in the bundle while their leaves live. */
  readonly retired: readonly Slot[];
  /** Highest generation ever minted. */
  readonly generation: number;
  /**
   * Bumped by an operator's "rotate now" and by nothing else: every leaf is re-issued, and a serving authority counts
   * meshca_ca_rotations_total{kind="forced"} from its increase (the rotation ran in another process).
   */
  readonly reissueGeneration: number;
  readonly bundleSequence: number;
  readonly bundleRootsDer: readonly Buffer[];
}

interface PersistedSlot {
  generation: number;
  keyPem: string;
  certPem: string;
  chainPem: string;
  rootsPem: string;
}

interface Persisted {
  format: string;
  trustDomain: string;
  backend: string;
  active?: PersistedSlot;
  next?: PersistedSlot;
  retired: PersistedSlot[];
  generation: number;
  reissueGeneration: number;
  bundleSequence: number;
  bundleRootsPem: string;
}

export function slotFrom(generation: number, ca: SigningCa, rootsDer: readonly Buffer[]): Slot {
  return { generation, ca, rootsDer, notBeforeMs: ca.notBefore.getTime(), notAfterMs: ca.notAfter.getTime() };
}

export function signingCaFrom(certDer: Buffer, chainDer: readonly Buffer[], key: SigningCa['key']): SigningCa {
  const x = new X509Certificate(certDer);
  return { certDer, chainDer, key, notBefore: new Date(x.validFrom), notAfter: new Date(x.validTo) };
}

function encodeSlot(s: Slot): PersistedSlot {
  return {
    generation: s.generation,
    keyPem: privateKeyToPkcs8Pem(s.ca.key),
    certPem: toPem(s.ca.certDer),
    chainPem: s.ca.chainDer.map((d) => toPem(d)).join(''),
    rootsPem: s.rootsDer.map((d) => toPem(d)).join(''),
  };
}

function decodeSlot(p: PersistedSlot, where: string): Slot {
  if (!p || typeof p !== 'object' || typeof p.keyPem !== 'string' || typeof p.certPem !== 'string') {
    throw new Error(`${where} is incomplete`);
  }
  const certs = pemToDers(p.certPem);
  if (certs.length !== 1) throw new Error(`${where}.certPem must hold exactly one certificate`);
  const key = createPrivateKey({ key: p.keyPem, format: 'pem' });
  const ca = signingCaFrom(certs[0]!, pemToDers(p.chainPem ?? ''), key);
  const x = new X509Certificate(ca.certDer);
  if (!x.checkPrivateKey(key)) throw new Error(`${where}: private key does not match its certificate`);
  const roots = pemToDers(p.rootsPem ?? '');
  if (roots.length === 0) throw new Error(`${where} has no trust anchors`);
  return slotFrom(p.generation, ca, roots);
}

export function encodeState(s: AuthorityState): Buffer {
  const p: Persisted = {
    format: FORMAT,
    trustDomain: s.trustDomain,
    backend: s.backend,
    ...(s.active ? { active: encodeSlot(s.active) } : {}),
    ...(s.next ? { next: encodeSlot(s.next) } : {}),
    retired: s.retired.map(encodeSlot),
    generation: s.generation,
    reissueGeneration: s.reissueGeneration,
    bundleSequence: s.bundleSequence,
    bundleRootsPem: s.bundleRootsDer.map((d) => toPem(d)).join(''),
  };
  return Buffer.from(JSON.stringify(p, null, 2) + '\n');
}

/** Parses persisted state; any damage is a FAILED_PRECONDITION naming the file, never a silent reset. */
export function decodeState(raw: Buffer, location: string): AuthorityState {
  const where = `${location}: ${AUTHORITY_KEY}.json`;
  try {
    const p = JSON.parse(raw.toString('utf8')) as Persisted;
    if (p === null || typeof p !== 'object' || p.format !== FORMAT) throw new Error(`unknown format (expected "${FORMAT}")`);
    if (typeof p.trustDomain !== 'string' || typeof p.backend !== 'string') throw new Error('trustDomain/backend missing');
    if (!Array.isArray(p.retired)) throw new Error('retired is not a list');
    return {
      trustDomain: p.trustDomain,
      backend: p.backend,
      active: p.active ? decodeSlot(p.active, 'active') : undefined,
      next: p.next ? decodeSlot(p.next, 'next') : undefined,
      retired: p.retired.map((r, i) => decodeSlot(r, `retired[${i}]`)),
      generation: Number(p.generation) || 0,
      reissueGeneration: Number(p.reissueGeneration) || 0,
      bundleSequence: Number(p.bundleSequence) || 0,
      bundleRootsDer: pemToDers(p.bundleRootsPem ?? ''),
    };
  } catch (e) {
    throw new CaError(
      'FAILED_PRECONDITION',
      `${where} is corrupt or unreadable (${(e as Error).message}); refusing to start rather than create a new root — restore it from backup or move the dataDir aside deliberately`,
      { cause: e },
    );
  }
}

export function emptyState(trustDomain: string, backend: string): AuthorityState {
  return {
    trustDomain,
    backend,
    active: undefined,
    next: undefined,
    retired: [],
    generation: 0,
    reissueGeneration: 0,
    bundleSequence: 0,
    bundleRootsDer: [],
  };
}
