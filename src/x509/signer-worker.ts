import { parentPort } from 'node:worker_threads';
import { LeafSigner } from './leaf-signer.js';
import { parseCsr } from './csr.js';
import { importPkcs8DerAndWipe } from './keys.js';
import { checkSvidProfile } from './validate.js';
import type { KeyType } from './types.js';
import type { JobMsg, WorkerBatchReply, WorkerRequest } from './signer-protocol.js';

/**
 * Worker side of LeafSignerPool. Holds one LeafSigner for the newest CA it was sent. The CA key arrives as PKCS#8
 * DER and is never logged or echoed; errors carry only messages produced by our own code.
 */
const port = parentPort;
if (!port) throw new Error('signer-worker must run as a worker thread');

let signer: LeafSigner | undefined;
let gen = -1;
let caError: string | undefined;
let caCertDer: Buffer | undefined;
/** When set (pool built with a trust domain), every leaf is profile-checked here before it is sent back. */
let trustDomain: string | undefined;

function fields(m: { spiffeId: string; dnsNames: string[]; ipAddresses: string[]; notBefore: number; notAfter: number }) {
  return {
    spiffeId: m.spiffeId,
    dnsNames: m.dnsNames,
    ipAddresses: m.ipAddresses,
    notBefore: new Date(m.notBefore),
    notAfter: new Date(m.notAfter),
  };
}

port.on('message', (m: WorkerRequest) => {
  if (m.type === 'ca') {
    gen = m.gen;
    try {
      // Zeroes the received DER (also when the import fails) without copying it first.
      const key = importPkcs8DerAndWipe(m.keyPkcs8Der);
      caCertDer = Buffer.from(m.certDer);
      trustDomain = m.trustDomain;
      signer = new LeafSigner({
        certDer: caCertDer,
        chainDer: [],
        key,
        notBefore: new Date(m.notBefore),
        notAfter: new Date(m.notAfter),
      });
      caError = undefined;
    } catch (e) {
      signer = undefined;
      caError = e instanceof Error ? e.message : 'cannot load the signing CA';
    }
    return;
  }
  port.postMessage(...runBatch(m.type === 'batch' ? m.jobs : [m]));
});

/** Runs jobs in order and lays the results out as one WorkerBatchReply (one transferred buffer for every DER). */
function runBatch(jobs: readonly JobMsg[]): [WorkerBatchReply, ArrayBuffer[]] {
  const ids: number[] = [];
  const ends: number[] = [];
  const keys: Array<string | null> = [];
  const csrs: WorkerBatchReply['csrs'] = [];
  const errors: WorkerBatchReply['errors'] = [];
  const ders: Buffer[] = [];
  let total = 0;
  for (const job of jobs) {
    ids.push(job.id);
    let der: Buffer | undefined;
    let key: string | null = null;
    let csr: WorkerBatchReply['csrs'][number] = null;
    let error: [string, string] | null = null;
    try {
      if (job.type === 'parseCsr') csr = runParseCsr(job);
      else ({ der, key } = runSign(job));
    } catch (e) {
      const err = e as { code?: unknown; message?: unknown };
      error = [typeof err.code === 'string' ? err.code : 'INTERNAL', typeof err.message === 'string' ? err.message : 'signing failed'];
    }
    if (der) {
      ders.push(der);
      total += der.length;
    }
    ends.push(total);
    keys.push(key);
    csrs.push(csr);
    errors.push(error);
  }
  const certs = new Uint8Array(total);
  let off = 0;
  for (const d of ders) {
    certs.set(d, off);
    off += d.length;
  }
  return [{ type: 'batch', gen, ids, ends, certs, keys, csrs, errors }, [certs.buffer]];
}

function runParseCsr(m: Extract<JobMsg, { type: 'parseCsr' }>): WorkerBatchReply['csrs'][number] {
  // CSR checks need no CA; they run here so the calling thread only pays for message passing.
  const p = parseCsr(typeof m.csr === 'string' ? m.csr : Buffer.from(m.csr.buffer, m.csr.byteOffset, m.csr.byteLength));
  return { ...p, der: new Uint8Array(p.der), spkiDer: new Uint8Array(p.spkiDer) };
}

function runSign(m: Exclude<JobMsg, { type: 'parseCsr' }>): { der: Buffer; key: string | null } {
  if (!signer) throw Object.assign(new Error(caError ?? 'no signing CA'), { code: 'FAILED_PRECONDITION' });
  if (m.type === 'sign') {
    const der = signer.signSpki(Buffer.from(m.spkiDer), fields(m));
    if (trustDomain !== undefined) checkSvidProfile(der, { trustDomain, issuerCertDer: caCertDer! });
    return { der, key: null };
  }
  const r = signer.signWithNewKey({ ...fields(m), keyType: m.keyType as KeyType });
  if (trustDomain !== undefined) checkSvidProfile(r.certDer, { trustDomain, issuerCertDer: caCertDer! });
  return { der: r.certDer, key: r.privateKeyPkcs8Pem };
}
