/**
 * Small, self-contained X.509 helpers for the Kubernetes fakes (fake API server validation, fake cert-manager
 * controller, fake CSR signer). Deliberately independent of meshca's src/x509 so that a bug there cannot be hidden
 * by the same bug in the fakes. Uses @peculiar/x509 with Node's WebCrypto passed explicitly.
 */
import 'reflect-metadata';
import { webcrypto, X509Certificate as NodeX509 } from 'node:crypto';
import * as x509 from '@peculiar/x509';

type X509Crypto = NonNullable<Parameters<typeof x509.X509CertificateGenerator.create>[1]>;
type KeyPair = webcrypto.CryptoKeyPair;
type Key = webcrypto.CryptoKey;
export const cryptoImpl = webcrypto as unknown as X509Crypto;

function ext<T extends x509.Extension>(csr: x509.Pkcs10CertificateRequest, cls: abstract new (...a: never[]) => T): T | undefined {
  return csr.extensions.find((e): e is T => e instanceof cls);
}

const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface PemBlock {
  type: string;
  /** True when the block carries RFC 1421 headers ("Key: value" lines), which Kubernetes rejects in trust bundles. */
  hasHeaders: boolean;
  der: Buffer;
}

/**
 * Parses PEM blocks like Go's pem.Decode: text outside blocks is skipped, a block whose BEGIN/END types differ or
 * whose body is not base64 is not a block. Returns the blocks in order.
 */
export function parsePemBlocks(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  const re = /-----BEGIN ([^\n-]+)-----\r?\n([\s\S]*?)-----END ([^\n-]+)-----/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const type = m[1]!;
    if (m[3] !== type) continue;
    const lines = m[2]!.split(/\r?\n/);
    let hasHeaders = false;
    let i = 0;
    if (lines.length > 0 && lines[0]!.includes(':')) {
      hasHeaders = true;
      while (i < lines.length && lines[i]!.trim() !== '') i++;
    }
    const b64 = lines.slice(i).join('').replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) continue;
    out.push({ type, hasHeaders, der: Buffer.from(b64, 'base64') });
  }
  return out;
}

export function toPem(type: string, der: ArrayBuffer | Uint8Array): string {
  const b64 = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString('base64');
  return `-----BEGIN ${type}-----\n${(b64.match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${type}-----\n`;
}

export interface CertificateAuthority {
  cert: x509.X509Certificate;
  certPem: string;
  keys: KeyPair;
  /** PEM of the issuing chain above this CA up to (excluding) the root; empty for a root. */
  chainPem: string;
  /** PEM of the root that anchors this CA (equal to certPem for a root). */
  rootPem: string;
}

function serial(): string {
  const b = Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)));
  b[0] = b[0]! & 0x7f;
  return b.toString('hex');
}

/** A self-signed ECDSA P-256 root CA (or, with `parent`, an intermediate signed by it). */
export async function createCa(opts: {
  commonName: string;
  notBefore: Date;
  notAfter: Date;
  parent?: CertificateAuthority;
}): Promise<CertificateAuthority> {
  const keys = (await cryptoImpl.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as KeyPair;
  const extensions = [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, cryptoImpl),
  ];
  let cert: x509.X509Certificate;
  if (opts.parent) {
    cert = await x509.X509CertificateGenerator.create(
      {
        serialNumber: serial(),
        subject: `CN=${opts.commonName}`,
        issuer: opts.parent.cert.subject,
        notBefore: opts.notBefore,
        notAfter: opts.notAfter,
        publicKey: keys.publicKey,
        signingKey: opts.parent.keys.privateKey,
        signingAlgorithm: EC_ALG,
        extensions: [...extensions, await x509.AuthorityKeyIdentifierExtension.create(opts.parent.keys.publicKey, false, cryptoImpl)],
      },
      cryptoImpl,
    );
  } else {
    cert = await x509.X509CertificateGenerator.createSelfSigned(
      {
        serialNumber: serial(),
        name: `CN=${opts.commonName}`,
        notBefore: opts.notBefore,
        notAfter: opts.notAfter,
        keys,
        signingAlgorithm: EC_ALG,
        extensions,
      },
      cryptoImpl,
    );
  }
  const certPem = toPem('CERTIFICATE', cert.rawData);
  if (!opts.parent) return { cert, certPem, keys, chainPem: '', rootPem: certPem };
  const parentIsRoot = opts.parent.rootPem === opts.parent.certPem;
  const chainPem = parentIsRoot ? '' : opts.parent.certPem + opts.parent.chainPem;
  return { cert, certPem, keys, chainPem, rootPem: opts.parent.rootPem };
}

/** Exports a private key as PKCS#8 PEM (used for the HTTPS server key). */
export async function privateKeyPem(key: Key): Promise<string> {
  return toPem('PRIVATE KEY', await cryptoImpl.subtle.exportKey('pkcs8', key));
}

/** A TLS server certificate for 127.0.0.1/localhost signed by `ca`. */
export async function createServerCert(ca: CertificateAuthority, notBefore: Date, notAfter: Date): Promise<{ certPem: string; keyPem: string }> {
  const keys = (await cryptoImpl.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as KeyPair;
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial(),
      subject: 'CN=fake-kube-apiserver',
      issuer: ca.cert.subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: ca.keys.privateKey,
      signingAlgorithm: EC_ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([
          { type: 'ip', value: '127.0.0.1' },
          { type: 'dns', value: 'localhost' },
        ]),
      ],
    },
    cryptoImpl,
  );
  return { certPem: toPem('CERTIFICATE', cert.rawData), keyPem: await privateKeyPem(keys.privateKey) };
}

/** Parses one PEM CERTIFICATE REQUEST and checks its self-signature. Throws an Error naming what is wrong. */
export async function parseAndVerifyCsr(pem: string): Promise<x509.Pkcs10CertificateRequest> {
  const blocks = parsePemBlocks(pem);
  if (blocks.length === 0) throw new Error('PEM block type must be CERTIFICATE REQUEST');
  const block = blocks[0]!;
  if (block.type !== 'CERTIFICATE REQUEST') throw new Error(`PEM block type must be CERTIFICATE REQUEST, got ${block.type}`);
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(block.der);
  } catch (e) {
    throw new Error(`asn1: cannot parse certificate request: ${(e as Error).message}`);
  }
  let ok = false;
  try {
    ok = await csr.verify(cryptoImpl);
  } catch (e) {
    throw new Error(`x509: cannot verify signature: ${(e as Error).message}`);
  }
  if (!ok) throw new Error('x509: ECDSA/RSA verification failure (CSR signature is invalid)');
  return csr;
}

/** Key usage and extended key usage requested in a CSR's extensionRequest, in cert-manager/Kubernetes usage words. */
export function csrRequestedUsages(csr: x509.Pkcs10CertificateRequest): { usages: string[] | undefined; isCA: boolean | undefined } {
  let usages: string[] | undefined;
  let isCA: boolean | undefined;
  const ku = ext(csr, x509.KeyUsagesExtension);
  if (ku) usages = [...(usages ?? []), ...kuWords(ku.usages)];
  const eku = ext(csr, x509.ExtendedKeyUsageExtension);
  if (eku) usages = [...(usages ?? []), ...eku.usages.map((u) => EKU_WORDS[String(u)] ?? String(u))];
  const bc = ext(csr, x509.BasicConstraintsExtension);
  if (bc) isCA = bc.ca;
  return { usages, isCA };
}

const KU_WORDS: Array<[number, string]> = [
  [x509.KeyUsageFlags.digitalSignature, 'digital signature'],
  [x509.KeyUsageFlags.nonRepudiation, 'content commitment'],
  [x509.KeyUsageFlags.keyEncipherment, 'key encipherment'],
  [x509.KeyUsageFlags.dataEncipherment, 'data encipherment'],
  [x509.KeyUsageFlags.keyAgreement, 'key agreement'],
  [x509.KeyUsageFlags.keyCertSign, 'cert sign'],
  [x509.KeyUsageFlags.cRLSign, 'crl sign'],
  [x509.KeyUsageFlags.encipherOnly, 'encipher only'],
  [x509.KeyUsageFlags.decipherOnly, 'decipher only'],
];
const EKU_WORDS: Record<string, string> = {
  [x509.ExtendedKeyUsage.serverAuth]: 'server auth',
  [x509.ExtendedKeyUsage.clientAuth]: 'client auth',
  [x509.ExtendedKeyUsage.codeSigning]: 'code signing',
  [x509.ExtendedKeyUsage.emailProtection]: 'email protection',
  [x509.ExtendedKeyUsage.timeStamping]: 'timestamping',
  [x509.ExtendedKeyUsage.ocspSigning]: 'ocsp signing',
  '2.5.29.37.0': 'any',
};

function kuWords(flags: number): string[] {
  return KU_WORDS.filter(([f]) => (flags & f) !== 0).map(([, w]) => w);
}

/** Builds KU/EKU extensions from usage words; unknown words throw. `signing` is an alias of digital signature. */
export function usageExtensions(usages: string[], isCA: boolean): x509.Extension[] {
  let ku = 0;
  const eku: string[] = [];
  for (const u of usages) {
    const word = u === 'signing' ? 'digital signature' : u;
    const k = KU_WORDS.find(([, w]) => w === word);
    if (k) {
      ku |= k[0];
      continue;
    }
    const e = Object.entries(EKU_WORDS).find(([, w]) => w === word);
    if (e) {
      eku.push(e[0]);
      continue;
    }
    throw new Error(`unsupported usage ${JSON.stringify(u)}`);
  }
  if (isCA) ku |= x509.KeyUsageFlags.keyCertSign;
  const out: x509.Extension[] = [new x509.BasicConstraintsExtension(isCA, undefined, true)];
  if (ku !== 0) out.push(new x509.KeyUsagesExtension(ku, true));
  if (eku.length > 0) out.push(new x509.ExtendedKeyUsageExtension(eku));
  return out;
}

/** Signs `csr` with `ca`, copying subject and SANs from the CSR; returns the leaf PEM. */
export async function signCsr(opts: {
  ca: CertificateAuthority;
  csr: x509.Pkcs10CertificateRequest;
  notBefore: Date;
  notAfter: Date;
  isCA: boolean;
  usages: string[];
}): Promise<string> {
  const extensions = usageExtensions(opts.usages, opts.isCA);
  const san = ext(opts.csr, x509.SubjectAlternativeNameExtension);
  // RFC 5280: the SAN extension is critical when the subject is empty (as Go's x509, used by real signers, does).
  if (san) extensions.push(new x509.SubjectAlternativeNameExtension(san.names.toJSON(), opts.csr.subject === ''));
  extensions.push(await x509.SubjectKeyIdentifierExtension.create(opts.csr.publicKey, false, cryptoImpl));
  extensions.push(await x509.AuthorityKeyIdentifierExtension.create(opts.ca.keys.publicKey, false, cryptoImpl));
  const publicKey = await opts.csr.publicKey.export(cryptoImpl);
  const notAfter = opts.notAfter > opts.ca.cert.notAfter ? opts.ca.cert.notAfter : opts.notAfter;
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial(),
      subject: opts.csr.subject,
      issuer: opts.ca.cert.subject,
      notBefore: opts.notBefore,
      notAfter,
      publicKey,
      signingKey: opts.ca.keys.privateKey,
      signingAlgorithm: EC_ALG,
      extensions,
    },
    cryptoImpl,
  );
  return toPem('CERTIFICATE', cert.rawData);
}

/** Result of checking one certificate for a trust bundle: parse failure, CA bit, basic constraints present. */
export function inspectCaCert(der: Buffer): { parsed: boolean; isCA: boolean; basicConstraintsValid: boolean } {
  try {
    const c = new NodeX509(der);
    const cert = new x509.X509Certificate(der);
    const bc = cert.getExtension(x509.BasicConstraintsExtension);
    return { parsed: true, isCA: c.ca, basicConstraintsValid: bc !== null && bc !== undefined };
  } catch {
    return { parsed: false, isCA: false, basicConstraintsValid: false };
  }
}

/** A fresh ECDSA P-256 key and PEM CSR (for tests of the fakes): URI SANs, optional CA and usage extensions. */
export async function createTestCsr(opts: { commonName?: string; uris?: string[]; isCA?: boolean; usages?: string[] } = {}): Promise<{ pem: string; keys: KeyPair }> {
  const keys = (await cryptoImpl.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as KeyPair;
  const extensions: x509.Extension[] = [];
  if (opts.uris && opts.uris.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(opts.uris.map((u) => ({ type: 'url' as const, value: u })), false));
  if (opts.isCA !== undefined || opts.usages) extensions.push(...usageExtensions(opts.usages ?? [], opts.isCA ?? false));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: opts.commonName ? `CN=${opts.commonName}` : undefined, keys, signingAlgorithm: EC_ALG, extensions },
    cryptoImpl,
  );
  return { pem: toPem('CERTIFICATE REQUEST', csr.rawData), keys };
}
