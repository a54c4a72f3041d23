import { X509Certificate, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSelfSignedRoot, signCaCertificate } from '../../../src/x509/ca-certs.js';
import { generateKeyPair, signatureAlgorithmFor, spkiDerOf, keyIdentifier } from '../../../src/x509/keys.js';
import { bitString, encodeTime, seq, tlv } from '../../../src/x509/der.js';
import { parseCertificate } from '../../../src/x509/cert-parse.js';
import { toPem } from '../../../src/x509/pem.js';
import {
  EKU,
  EMPTY_NAME,
  KU,
  authorityKeyIdExt,
  basicConstraintsExt,
  extKeyUsageExt,
  keyUsageExt,
  subjectAltNameExt,
  subjectKeyIdExt,
} from '../../../src/x509/profile.js';
import type { KeyType, SigningCa } from '../../../src/x509/types.js';

export const TD = 'example.org';
export const NOW = new Date('2030-06-01T12:00:00Z');

export interface TestCa {
  rootDer: Buffer;
  rootKey: KeyObject;
  interDer: Buffer;
  interKey: KeyObject;
  signingCa: SigningCa;
}

export async function makeCa(keyType: KeyType = 'ec-p256', now = NOW, interTtl = 86400): Promise<TestCa> {
  const root = await createSelfSignedRoot({ trustDomain: TD, keyType, ttlSeconds: 40 * 365 * 86400, now });
  const ik = generateKeyPair(keyType);
  const interDer = await signCaCertificate({ issuer: { certDer: root.certDer, key: root.privateKey }, publicKey: ik.publicKey, trustDomain: TD, ttlSeconds: interTtl, now });
  const x = new X509Certificate(interDer);
  return {
    rootDer: root.certDer,
    rootKey: root.privateKey,
    interDer,
    interKey: ik.privateKey,
    signingCa: { certDer: interDer, chainDer: [], key: ik.privateKey, notBefore: new Date(x.validFrom), notAfter: new Date(x.validTo) },
  };
}

/** Runs openssl with files written to a temp dir; returns {status, out}. */
export function openssl(args: (string | { file: string; data: string | Buffer })[]): { status: number; out: string; stdout: string } {
  const dir = mkdtempSync(join(tmpdir(), 'meshca-x509-'));
  try {
    const argv = args.map((a) => {
      if (typeof a === 'string') return a;
      const p = join(dir, a.file);
      writeFileSync(p, a.data);
      return p;
    });
    const r = spawnSync('openssl', argv, { encoding: 'utf8', timeout: 10_000 });
    return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}`, stdout: r.stdout };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** openssl verify -x509_strict of leaf against root with the intermediate untrusted; at a fixed time. */
export function opensslVerify(ca: TestCa, leafDer: Buffer, at: Date = NOW): { status: number; out: string } {
  return openssl([
    'verify',
    '-x509_strict',
    '-attime',
    String(Math.floor(at.getTime() / 1000)),
    '-CAfile',
    { file: 'root.pem', data: toPem(ca.rootDer) },
    '-untrusted',
    { file: 'inter.pem', data: toPem(ca.interDer) },
    { file: 'leaf.pem', data: toPem(leafDer) },
  ]);
}

export interface LeafOverrides {
  serial?: Buffer; // full INTEGER TLV
  uris?: string[];
  dnsNames?: string[];
  sanCritical?: boolean;
  noSan?: boolean;
  basicConstraints?: Buffer | null;
  keyUsage?: Buffer | null;
  eku?: Buffer | null;
  aki?: Buffer | null;
  ski?: Buffer | null;
  signWith?: KeyObject;
  sigAlgOverride?: { algId: Buffer; hash: string };
  notBefore?: Date;
  notAfter?: Date;
}

/** A leaf built by hand with the profile helpers, so tests can break one rule at a time. */
export function buildLeaf(ca: TestCa, o: LeafOverrides = {}): Buffer {
  const pub = generateKeyPair('ec-p256').publicKey;
  const spki = spkiDerOf(pub);
  const issuer = parseCertificate(ca.interDer);
  const signKey = o.signWith ?? ca.interKey;
  const alg = signatureAlgorithmFor(signKey);
  const algId = o.sigAlgOverride?.algId ?? alg.algorithmIdentifier;
  const exts: Buffer[] = [];
  const pick = (v: Buffer | null | undefined, dflt: Buffer): void => {
    if (v === null) return;
    exts.push(v ?? dflt);
  };
  pick(o.basicConstraints, basicConstraintsExt(false));
  pick(o.keyUsage, keyUsageExt([KU.digitalSignature]));
  pick(o.eku, extKeyUsageExt([EKU.serverAuth, EKU.clientAuth]));
  pick(o.ski, subjectKeyIdExt(keyIdentifier(spki)));
  pick(o.aki, authorityKeyIdExt(keyIdentifier(issuer.spki)));
  if (!o.noSan) exts.push(subjectAltNameExt(o.sanCritical ?? true, o.uris ?? [`spiffe://${TD}/workload`], o.dnsNames ?? []));
  const tbs = seq(
    Buffer.from([0xa0, 0x03, 0x02, 0x01, 0x02]),
    o.serial ?? Buffer.from([0x02, 0x02, 0x01, 0x02]),
    algId,
    issuer.subject,
    seq(encodeTime(o.notBefore ?? new Date(NOW.getTime() - 60_000)), encodeTime(o.notAfter ?? new Date(NOW.getTime() + 3600_000))),
    EMPTY_NAME,
    spki,
    tlv(0xa3, seq(...exts)),
  );
  const sig = cryptoSign(o.sigAlgOverride?.hash ?? alg.hash, tbs, signKey);
  return seq(tbs, algId, bitString(sig));
}
