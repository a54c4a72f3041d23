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

export type WorkerRequest =
  | { type: 'ca'; gen: number; certDer: Uint8Array; keyPkcs8Der: Uint8Array; notBefore: number; notAfter: number }
  | (LeafFieldsMsg & { type: 'sign'; spkiDer: Uint8Array })
  | (LeafFieldsMsg & { type: 'signNew'; keyType: string })
  | { type: 'parseCsr'; id: number; csr: string | Uint8Array };

export type WorkerReply =
  | { id: number; ok: true; gen: number; certDer: Uint8Array; privateKeyPkcs8Pem?: string; csr?: undefined }
  | { id: number; ok: true; csr: Omit<ParsedCsr, 'der' | 'spkiDer'> & { der: Uint8Array; spkiDer: Uint8Array } }
  | { id: number; ok: false; code: string; message: string };
