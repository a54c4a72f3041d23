import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { Authority, AuthorityEvent, AuthorityHealth, IssuedSvid, IssueRequest, TrustBundle } from '../../src/authority/types.js';
import { parseWorkloadId } from '../../src/identity/spiffe-id.js';
import type { Clock } from '../../src/util/clock.js';
import { CaError } from '../../src/util/errors.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKeyPair = webcrypto.CryptoKeyPair;

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

interface FakeCa {
  readonly cert: x509.X509Certificate;
  readonly keys: CryptoKeyPair;
  readonly generation: number;
}

export interface FakeAuthorityOptions {
  readonly trustDomain?: string;
  readonly clock: Clock;
  /** Leaf lifetime, default 3600 s. */
  readonly ttlSeconds?: number;
  /** renewAt = notBefore(unbackdated) + fraction x ttl, no jitter (deterministic tests). Default 0.5. */
  readonly renewFraction?: number;
}

function pem(der: ArrayBuffer | Buffer, label: string): string {
  const b64 = Buffer.from(der as ArrayBuffer).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`;
}

function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

async function makeCa(name: string, now: Date, generation: number): Promise<FakeCa> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${name}, O=meshca fake`,
    notBefore: new Date(now.getTime() - 3600_000),
    notAfter: new Date(now.getTime() + 365 * 86400_000),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys, generation };
}

export interface LeafSpec {
  /** URI SANs (default: [spiffeId]); pass [] for a certificate without SPIFFE ID. */
  readonly uris?: readonly string[];
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCa?: boolean;
  /** Subject DN; default "O=meshca fake leaf". '' makes an empty subject, as meshca's own SVIDs have. */
  readonly subject?: string;
}

/**
 * Test double of the Authority interface that signs REAL certificates (ECDSA P-256, @peculiar/x509), so TLS
 * handshakes and chain checks in tests are real. Strict like the real one: issue() rejects IDs outside the trust
 * domain. Knobs: failNext(n) makes the next n issue() calls fail with UNAVAILABLE; `issued` records every request.
 * Helpers that emit the events the real authority emits: rotateBundle() (new root added to the bundle -> 'bundle';
 * then it signs -> 'signing-ca'; with dropOld the old roots leave the bundle) and reissueAll() ('reissue-all').
 */
export class FakeAuthority implements Authority {
  readonly trustDomain: string;
  readonly issued: IssueRequest[] = [];
  private readonly listeners = new Set<(ev: AuthorityEvent) => void>();
  private cas: FakeCa[];
  private active: FakeCa;
  private sequence = 1;
  private bundleCache: TrustBundle;
  private failures = 0;
  private failFor: string | undefined;
  private readonly ttl: number;
  private readonly fraction: number;

  private constructor(
    private readonly opts: FakeAuthorityOptions,
    ca: FakeCa,
  ) {
    this.trustDomain = opts.trustDomain ?? 'example.org';
    this.cas = [ca];
    this.active = ca;
    this.ttl = opts.ttlSeconds ?? 3600;
    this.fraction = opts.renewFraction ?? 0.5;
    this.bundleCache = this.makeBundle();
  }

  static async create(opts: FakeAuthorityOptions): Promise<FakeAuthority> {
    const ca = await makeCa(`fake root 1 ${opts.trustDomain ?? 'example.org'}`, opts.clock.now(), 1);
    return new FakeAuthority(opts, ca);
  }

  get caGeneration(): number {
    return this.active.generation;
  }

  /** The next n issue() calls (only those for `spiffeId` when given) fail with UNAVAILABLE. */
  failNext(n: number, spiffeId?: string): void {
    this.failures = n;
    this.failFor = spiffeId;
  }

  async issue(req: IssueRequest): Promise<IssuedSvid> {
    this.issued.push(req);
    parseWorkloadId(req.spiffeId, this.trustDomain);
    if (this.failures > 0 && (this.failFor === undefined || this.failFor === req.spiffeId)) {
      this.failures--;
      throw new CaError('UNAVAILABLE', 'fake: backend unavailable (failNext)');
    }
    const now = this.opts.clock.nowMs();
    const ttl = req.ttlSeconds ?? this.ttl;
    const notBefore = new Date(now - 30_000);
    const notAfter = new Date(now + ttl * 1000);
    const ca = this.active;
    const { certDer, keyPem } = await this.sign(ca, {
      uris: [req.spiffeId],
      dnsNames: req.dnsNames ?? [],
      ipAddresses: req.ipAddresses ?? [],
      notBefore,
      notAfter,
    });
    const cert = new x509.X509Certificate(certDer);
    return {
      spiffeId: req.spiffeId,
      chainDer: [certDer],
      chainPem: pem(certDer, 'CERTIFICATE'),
      privateKeyPem: keyPem,
      keyType: 'ec-p256',
      serialHex: cert.serialNumber,
      notBefore,
      notAfter,
      renewAt: new Date(now + ttl * 1000 * this.fraction),
      caGeneration: ca.generation,
    };
  }

  /** A leaf with arbitrary SANs / dates signed by the active CA (expired, no SPIFFE ID, ...). */
  async makeLeaf(spec: LeafSpec): Promise<{ certPem: string; keyPem: string; certDer: Buffer }> {
    const { certDer, keyPem } = await this.sign(this.active, {
      uris: spec.uris ?? [],
      dnsNames: spec.dnsNames ?? [],
      ipAddresses: spec.ipAddresses ?? [],
      notBefore: spec.notBefore,
      notAfter: spec.notAfter,
      isCa: spec.isCa ?? false,
      ...(spec.subject !== undefined ? { subject: spec.subject } : {}),
    });
    return { certPem: pem(certDer, 'CERTIFICATE'), keyPem, certDer };
  }

  bundle(): TrustBundle {
    return this.bundleCache;
  }

  onEvent(listener: (ev: AuthorityEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Number of registered event listeners (leak checks). */
  listenerCount(): number {
    return this.listeners.size;
  }

  /**
   * New root CA: added to the bundle ('bundle' event), then made the signing CA ('signing-ca' event). With
   * dropOld the previous roots leave the bundle in the same step (their leaves become untrusted).
   */
  async rotateBundle(opts: { dropOld?: boolean } = {}): Promise<void> {
    const gen = this.active.generation + 1;
    const ca = await makeCa(`fake root ${gen} ${this.trustDomain}`, this.opts.clock.now(), gen);
    this.cas = opts.dropOld ? [ca] : [...this.cas, ca];
    this.sequence++;
    this.bundleCache = this.makeBundle();
    this.emit({ type: 'bundle', bundle: this.bundleCache });
    this.active = ca;
    this.emit({ type: 'signing-ca', generation: gen });
  }

  reissueAll(): void {
    this.emit({ type: 'reissue-all', generation: this.active.generation });
  }

  async rotate(opts: { root?: boolean } = {}): Promise<void> {
    await this.rotateBundle({ dropOld: opts.root ?? false });
    this.reissueAll();
  }

  health(): AuthorityHealth {
    return { ready: true };
  }

  private emit(ev: AuthorityEvent): void {
    for (const l of [...this.listeners]) l(ev);
  }

  private makeBundle(): TrustBundle {
    const rootsDer = this.cas.map((c) => Buffer.from(c.cert.rawData));
    return { trustDomain: this.trustDomain, rootsDer, pem: rootsDer.map((d) => pem(d, 'CERTIFICATE')).join(''), sequence: this.sequence };
  }

  private async sign(
    ca: FakeCa,
    s: { uris: readonly string[]; dnsNames: readonly string[]; ipAddresses: readonly string[]; notBefore: Date; notAfter: Date; isCa?: boolean; subject?: string },
  ): Promise<{ certDer: Buffer; keyPem: string }> {
    const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
    const names: x509.JsonGeneralName[] = [
      ...s.uris.map((v) => ({ type: 'url' as const, value: v })),
      ...s.dnsNames.map((v) => ({ type: 'dns' as const, value: v })),
      ...s.ipAddresses.map((v) => ({ type: 'ip' as const, value: v })),
    ];
    const exts: x509.Extension[] = [
      new x509.BasicConstraintsExtension(s.isCa ?? false, undefined, true),
      new x509.KeyUsagesExtension(
        s.isCa ? x509.KeyUsageFlags.keyCertSign : x509.KeyUsageFlags.digitalSignature,
        true,
      ),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
    ];
    if (names.length > 0) exts.push(new x509.SubjectAlternativeNameExtension(names, true));
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: s.subject ?? 'O=meshca fake leaf',
      issuer: ca.cert.subject,
      notBefore: s.notBefore,
      notAfter: s.notAfter,
      publicKey: keys.publicKey,
      signingKey: ca.keys.privateKey,
      signingAlgorithm: ALG,
      extensions: exts,
    });
    const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
    return { certDer: Buffer.from(cert.rawData), keyPem: pem(pkcs8, 'PRIVATE KEY') };
  }
}
