import { createPrivateKey } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { LeafSigner } from './leaf-signer.js';
import { parseCsr } from './csr.js';
import { checkSvidProfile } from './validate.js';
import type { KeyType } from './types.js';
import type { JobMsg, WorkerBatchReply, WorkerReply, WorkerRequest } from './signer-protocol.js';

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
      const key = createPrivateKey({ key: Buffer.from(m.keyPkcs8Der), format: 'der', type: 'pkcs8' });
      m.keyPkcs8Der.fill(0);
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
  if (m.type === 'batch') {
    const replies: WorkerReply[] = [];
    const transfer: ArrayBuffer[] = [];
    for (const job of m.jobs) replies.push(runJob(job, transfer));
    port.postMessage({ type: 'batch', replies } satisfies WorkerBatchReply, transfer);
    return;
  }
  const transfer: ArrayBuffer[] = [];
  const r = runJob(m, transfer);
  port.postMessage({ type: 'batch', replies: [r] } satisfies WorkerBatchReply, transfer);
});

function runJob(m: JobMsg, transfer: ArrayBuffer[]): WorkerReply {
  try {
    if (m.type === 'parseCsr') {
      // CSR checks need no CA; they run here so the calling thread only pays for message passing.
      const p = parseCsr(typeof m.csr === 'string' ? m.csr : Buffer.from(m.csr.buffer, m.csr.byteOffset, m.csr.byteLength));
      return { id: m.id, ok: true, csr: { ...p, der: new Uint8Array(p.der), spkiDer: new Uint8Array(p.spkiDer) } };
    }
    if (!signer) throw Object.assign(new Error(caError ?? 'no signing CA'), { code: 'FAILED_PRECONDITION' });
    if (m.type === 'sign') {
      const der = signer.signSpki(Buffer.from(m.spkiDer), fields(m));
      if (trustDomain !== undefined) checkSvidProfile(der, { trustDomain, issuerCertDer: caCertDer! });
      const out = new Uint8Array(der);
      transfer.push(out.buffer);
      return { id: m.id, ok: true, gen, certDer: out };
    }
    const r = signer.signWithNewKey({ ...fields(m), keyType: m.keyType as KeyType });
    if (trustDomain !== undefined) checkSvidProfile(r.certDer, { trustDomain, issuerCertDer: caCertDer! });
    const out = new Uint8Array(r.certDer);
    transfer.push(out.buffer);
    return { id: m.id, ok: true, gen, certDer: out, privateKeyPkcs8Pem: r.privateKeyPkcs8Pem };
  } catch (e) {
    const err = e as { code?: unknown; message?: unknown };
    return {
      id: m.id,
      ok: false,
      code: typeof err.code === 'string' ? err.code : 'INTERNAL',
      message: typeof err.message === 'string' ? err.message : 'signing failed',
    };
  }
}
