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

/** A ParsedCsr as it crosses threads (its KeyObject is cloneable; the buffers travel as plain bytes). */
export type CsrReply = Omit<ParsedCsr, 'der' | 'spkiDer'> & { der: Uint8Array; spkiDer: Uint8Array };

/**
 * One reply per request message (a single job or a batch), laid out flat so that posting it costs one transferred
 * buffer and a few arrays rather than an object graph per job: job i (in request order) is `ids[i]`; its
 * certificate DER is `certs[ends[i-1] .. ends[i])` (empty for failures and CSR jobs); `keys[i]` is the generated
 * key's PKCS#8 PEM or null; `csrs[i]` the parsed CSR or null; `errors[i]` null or [code, message].
 */
export interface WorkerBatchReply {
  type: 'batch';
  gen: number;
  ids: number[];
  ends: number[];
  certs: Uint8Array;
  keys: Array<string | null>;
  csrs: Array<CsrReply | null>;
  errors: Array<[string, string] | null>;
}
