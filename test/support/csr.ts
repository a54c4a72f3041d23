import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

const crypto = webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0];
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

type CryptoKeyPairLike = Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'];

export interface TestCsr {
  readonly pem: string;
  readonly der: Buffer;
  readonly privateKeyPem: string;
}

function pem(der: ArrayBuffer | Buffer, label: string): string {
  const b64 = Buffer.from(der as ArrayBuffer).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`;
}

/** A real PKCS#10 CSR made by an independent library (@peculiar/x509), with whatever SANs/extensions a test needs. */
export async function makeCsr(
  opts: { uris?: readonly string[]; dnsNames?: readonly string[]; ipAddresses?: readonly string[]; ca?: boolean; cn?: string } = {},
): Promise<TestCsr> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const names: x509.JsonGeneralName[] = [
    ...(opts.uris ?? []).map((u) => ({ type: 'url' as const, value: u })),
    ...(opts.dnsNames ?? []).map((d) => ({ type: 'dns' as const, value: d })),
    ...(opts.ipAddresses ?? []).map((ip) => ({ type: 'ip' as const, value: ip })),
  ];
  const extensions: x509.Extension[] = [];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, false));
  if (opts.ca) extensions.push(new x509.BasicConstraintsExtension(true, undefined, true));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { ...(opts.cn ? { name: `CN=${opts.cn}` } : {}), keys: keys as unknown as CryptoKeyPairLike, signingAlgorithm: ALG, extensions },
    crypto,
  );
  const der = Buffer.from(csr.rawData);
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { pem: pem(der, 'CERTIFICATE REQUEST'), der, privateKeyPem: pem(pkcs8, 'PRIVATE KEY') };
}

/** The same CSR with one bit of its signature flipped (the signature no longer verifies). */
export function corruptSignature(c: TestCsr): TestCsr {
  const der = Buffer.from(c.der);
  der[der.length - 5] ^= 0x01;
  return { der, pem: pem(der, 'CERTIFICATE REQUEST'), privateKeyPem: c.privateKeyPem };
}
