import type { ParsedCsr } from './csr.js';

/** Messages between LeafSignerPool and signer-worker. Dates travel as epoch milliseconds. */

interface LeafFieldsMsg {
  id: number;
  spiffeId: string;
  dnsNames: string[];
  ipAddresses: string[];
  notBefore: number;
  notAfter: number;
}

export type WorkerRequest = CaMsg | JobMsg | { type: 'batch'; jobs: JobMsg[] };

export type CaMsg = Extract<RawRequest, { type: 'ca' }>;
export type JobMsg = Exclude<RawRequest, { type: 'ca' }>;

type RawRequest =
  | { type: 'ca'; gen: number; certDer: Uint8Array; keyPkcs8Der: Uint8Array; notBefore: number; notAfter: number; trustDomain?: string }
  | (LeafFieldsMsg & { type: 'sign'; spkiDer: Uint8Array })
  | (LeafFieldsMsg & { type: 'signNew'; keyType: string })
  | { type: 'parseCsr'; id: number; csr: string | Uint8Array };

export type WorkerReply =
  | { id: number; ok: true; gen: number; certDer: Uint8Array; privateKeyPkcs8Pem?: string; csr?: undefined }
  | { id: number; ok: true; csr: Omit<ParsedCsr, 'der' | 'spkiDer'> & { der: Uint8Array; spkiDer: Uint8Array } }
  | { id: number; ok: false; code: string; message: string };

/** Replies travel in batches (one postMessage per batch of jobs) to amortise message-passing cost. */
export interface WorkerBatchReply {
  type: 'batch';
  replies: WorkerReply[];
}
