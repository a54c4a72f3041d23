import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { AuthorityBackend, BackendContext, BackendHealth, IntermediateRequest, UpstreamChain } from '../types.js';
import type { InternalConfig } from './config.js';
import { CaError } from '../../src/util/errors.js';
import { pemToDers, toPem } from '../../src/x509/pem.js';
import { generateKeyPair, privateKeyToPkcs8Pem } from '../../src/x509/keys.js';
import { createSelfSignedRoot, signCaCertificate } from '../../src/x509/ca-certs.js';

/** Store key of the generated roots (newest last). Holds private keys: 0600. */
export const ROOTS_KEY = 'internal-root';
const FORMAT = 'meshca.internal-root/v1';

interface Root {
  readonly certDer: Buffer;
  readonly key: KeyObject;
  readonly notAfterMs: number;
}

/** CA material the operator supplied (Istio cacerts layout). */
interface OperatorCa {
  readonly certDer: Buffer;
  readonly key: KeyObject;
  /** Certificates between caCert and the root (from certChainFile, without caCert and roots). */
  readonly chainDer: Buffer[];
  readonly rootsDer: Buffer[];
}

/**
 * The internal backend: meshca's own root. On first start (an empty store) it generates a self-signed root and
 * persists it; after that the root is only ever loaded, and a missing root next to existing CA state is an error.
 * Signing CAs are minted under the newest root. A new root is started (and published in the bundle long before it
 * signs, because the authority prepares signing CAs early) when the newest root could no longer cover three signing
 * CA lifetimes, or on an operator's `meshca rotate --root`.
 */
export class InternalBackend implements AuthorityBackend {
  readonly name = 'internal';
  readonly mode = 'intermediate' as const;
  private roots: Root[] = [];
  private operator: OperatorCa | undefined;

  constructor(
    private readonly cfg: InternalConfig,
    private readonly ctx: BackendContext,
  ) {}

  async init(): Promise<void> {
    if (this.cfg.caCertFile) {
      this.operator = await loadOperatorCa(this.cfg);
      return;
    }
    await this.ctx.store.withLock(async () => {
      const raw = await this.ctx.store.read(ROOTS_KEY);
      if (raw) {
        this.roots = decodeRoots(raw, this.ctx.store.location);
        return;
      }
      // A new root only in a truly empty store: any other meshca state there means the root was lost.
      const existing = await this.ctx.store.list();
      if (existing.length > 0) {
        throw new CaError(
          'FAILED_PRECONDITION',
          `internal: ${this.ctx.store.location} has CA state (${existing.map((k) => `${k}.json`).join(', ')}) but no root (${ROOTS_KEY}.json): the state is partial; restore the root from backup rather than let meshca create a new one`,
        );
      }
      const root = await this.newRoot();
      this.roots = [root];
      await this.persist();
      this.ctx.log.info({ notAfter: new Date(root.notAfterMs).toISOString() }, 'internal: generated a new self-signed root');
    });
  }

  private async newRoot(): Promise<Root> {
    const kp = generateKeyPair(this.cfg.keyType);
    const { certDer, privateKey } = await createSelfSignedRoot({
      trustDomain: this.ctx.trustDomain,
      keyType: this.cfg.keyType,
      ttlSeconds: this.cfg.rootTtl,
      now: this.ctx.clock.now(),
      commonName: `meshca root ${this.ctx.trustDomain}`,
      key: kp,
    });
    return { certDer, key: privateKey, notAfterMs: new Date(new X509Certificate(certDer).validTo).getTime() };
  }

  private async persist(): Promise<void> {
    const doc = {
      format: FORMAT,
      roots: this.roots.map((r) => ({ certPem: toPem(r.certDer), keyPem: privateKeyToPkcs8Pem(r.key) })),
    };
    await this.ctx.store.write(ROOTS_KEY, Buffer.from(JSON.stringify(doc, null, 2) + '\n'));
  }

  async mintIntermediate(req: IntermediateRequest): Promise<UpstreamChain> {
    const now = this.ctx.clock.now();
    const sign = (issuer: { certDer: Buffer; key: KeyObject }): Promise<Buffer> =>
      signCaCertificate({ issuer, publicKey: req.publicKey, trustDomain: this.ctx.trustDomain, ttlSeconds: req.ttlSeconds, now });
    if (this.operator) {
      const op = this.operator;
      return { chain: [await sign(op), op.certDer, ...op.chainDer], roots: op.rootsDer };
    }
    await this.ctx.store.withLock(async () => {
      // Another process may have started a new root; always sign under the newest persisted one.
      const raw = await this.ctx.store.read(ROOTS_KEY);
      if (!raw) throw new CaError('FAILED_PRECONDITION', `internal: ${this.ctx.store.location}: ${ROOTS_KEY}.json disappeared`);
      this.roots = decodeRoots(raw, this.ctx.store.location);
      const newest = this.roots[this.roots.length - 1]!;
      if (newest.notAfterMs - now.getTime() < 3 * this.cfg.signingCaTtl * 1000) {
        await this.addRootLocked();
      }
    });
    const root = this.roots[this.roots.length - 1]!;
    return { chain: [await sign(root)], roots: [root.certDer] };
  }

  private async addRootLocked(): Promise<void> {
    const root = await this.newRoot();
    const now = this.ctx.clock.nowMs();
    this.roots = [...this.roots.filter((r) => r.notAfterMs > now), root];
    await this.persist();
    this.ctx.log.info({ notAfter: new Date(root.notAfterMs).toISOString() }, 'internal: started a new root');
  }

  async rotateRoot(): Promise<void> {
    if (this.operator) throw new CaError('UNIMPLEMENTED', 'internal: the root is the operator\'s (rootCertFile); replace the files to rotate it');
    await this.ctx.store.withLock(async () => {
      const raw = await this.ctx.store.read(ROOTS_KEY);
      if (raw) this.roots = decodeRoots(raw, this.ctx.store.location);
      await this.addRootLocked();
    });
  }

  async trustAnchors(): Promise<Buffer[]> {
    if (this.operator) return this.operator.rootsDer;
    const now = this.ctx.clock.nowMs();
    return this.roots.filter((r) => r.notAfterMs > now).map((r) => r.certDer);
  }

  health(): BackendHealth {
    return { ok: true };
  }

  async close(): Promise<void> {}
}

function decodeRoots(raw: Buffer, location: string): Root[] {
  try {
    const doc = JSON.parse(raw.toString('utf8')) as { format?: string; roots?: { certPem: string; keyPem: string }[] };
    if (doc?.format !== FORMAT || !Array.isArray(doc.roots) || doc.roots.length === 0) throw new Error('no roots in it');
    return doc.roots.map((r, i) => {
      const [certDer] = pemToDers(r.certPem);
      if (!certDer) throw new Error(`roots[${i}] has no certificate`);
      const key = createPrivateKey({ key: r.keyPem, format: 'pem' });
      const x = new X509Certificate(certDer);
      if (!x.checkPrivateKey(key)) throw new Error(`roots[${i}]: key does not match certificate`);
      return { certDer, key, notAfterMs: new Date(x.validTo).getTime() };
    });
  } catch (e) {
    throw new CaError(
      'FAILED_PRECONDITION',
      `internal: ${location}: ${ROOTS_KEY}.json is corrupt or unreadable (${(e as Error).message}); refusing to create a new root — restore it from backup`,
      { cause: e },
    );
  }
}

async function readPemFile(path: string, key: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new CaError('FAILED_PRECONDITION', `authority.internal.${key}: cannot read ${path}: ${(e as Error).message}`);
  }
}

/** Loads and cross-checks the operator's CA files; every problem names the config key. */
async function loadOperatorCa(cfg: InternalConfig): Promise<OperatorCa> {
  const fail = (key: string, msg: string): never => {
    throw new CaError('FAILED_PRECONDITION', `authority.internal.${key}: ${msg}`);
  };
  const caCerts = pemToDers(await readPemFile(cfg.caCertFile, 'caCertFile'));
  if (caCerts.length === 0) fail('caCertFile', `${cfg.caCertFile} holds no certificate`);
  const certDer = caCerts[0]!;
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: await readPemFile(cfg.caKeyFile, 'caKeyFile'), format: 'pem' });
  } catch (e) {
    if (e instanceof CaError) throw e;
    return fail('caKeyFile', `${cfg.caKeyFile} is not a PEM private key`);
  }
  const ca = new X509Certificate(certDer);
  if (!ca.ca) fail('caCertFile', `${cfg.caCertFile} is not a CA certificate (basicConstraints CA:false)`);
  if (!ca.checkPrivateKey(key)) fail('caKeyFile', `${cfg.caKeyFile} does not match the certificate in caCertFile`);
  const rootsDer = pemToDers(await readPemFile(cfg.rootCertFile, 'rootCertFile'));
  if (rootsDer.length === 0) fail('rootCertFile', `${cfg.rootCertFile} holds no certificate`);
  const chainAll = cfg.certChainFile ? pemToDers(await readPemFile(cfg.certChainFile, 'certChainFile')) : caCerts.slice(1);
  const isSame = (a: Buffer, b: Buffer) => a.equals(b);
  const chainDer = chainAll.filter((c) => !isSame(c, certDer) && !rootsDer.some((r) => isSame(r, c)));
  // The chain must lead from caCert to one of the roots.
  let cur = ca;
  for (const link of [...chainDer.map((d) => new X509Certificate(d))]) {
    if (!cur.checkIssued(link) || !cur.verify(link.publicKey)) fail('certChainFile', `certificate "${link.subject}" did not issue "${cur.subject}"`);
    cur = link;
  }
  const root = rootsDer.map((d) => new X509Certificate(d)).find((r) => cur.checkIssued(r) && cur.verify(r.publicKey));
  if (!root) fail('rootCertFile', `no certificate in ${cfg.rootCertFile} issued "${cur.subject}"`);
  return { certDer, key, chainDer, rootsDer };
}

export function createInternalBackend(cfg: InternalConfig, ctx: BackendContext): InternalBackend {
  return new InternalBackend(cfg, ctx);
}
