// CSR and context helpers shared by the Kubernetes backend tests (not a test file itself).
import 'reflect-metadata';
import { generateKeyPairSync, KeyObject, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { BackendContext } from '../../../providers/types.js';
import type { Clock } from '../../../src/util/clock.js';
import { SystemClock } from '../../../src/util/clock.js';
import { toPem } from '../../../src/x509/pem.js';
import { createLeafCsr } from '../../../src/x509/leaf-csr.js';
import { MemoryStore } from '../../fakes/memory-store.js';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface TestCsr {
  csrDer: Buffer;
  csrPem: string;
  publicKey: KeyObject;
}

/** A CSR like meshca's signing-CA CSR: basicConstraints CA, keyCertSign + cRLSign, the trust domain as URI SAN. */
export async function intermediateCsr(trustDomain: string): Promise<TestCsr> {
  type X509Crypto = NonNullable<Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[1]>;
  const crypto = webcrypto as unknown as X509Crypto;
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: `CN=meshca signing CA,O=${trustDomain}`,
      keys,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}` }], false),
      ],
    },
    crypto,
  );
  const der = Buffer.from(csr.rawData);
  return { csrDer: der, csrPem: toPem(der, 'CERTIFICATE REQUEST'), publicKey: KeyObject.from(keys.publicKey) };
}

/** A leaf CSR made by meshca's own code path (src/x509/leaf-csr.ts). */
export async function leafCsr(spiffeId: string): Promise<TestCsr> {
  const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csr = await createLeafCsr({ key: kp, spiffeId, dnsNames: [] });
  return { csrDer: csr.der, csrPem: csr.pem, publicKey: kp.publicKey };
}

export function testContext(trustDomain: string, clock: Clock = new SystemClock()): BackendContext {
  return { trustDomain, clock, log: pino({ level: 'silent' }), store: new MemoryStore(), metrics: new Registry() };
}

/** Resolves when `check` returns true, polling every 10 ms; rejects after `ms`. */
export async function eventually(check: () => boolean | Promise<boolean>, ms = 3000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
