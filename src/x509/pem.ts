import { invalidArgument } from '../util/errors.js';

/** RFC 7468 PEM: base64 in 64-character lines between BEGIN/END lines, "\n" line ends, trailing newline. */
export function toPem(der: Buffer, label = 'CERTIFICATE'): string {
  const b64 = der.toString('base64');
  let body = '';
  for (let i = 0; i < b64.length; i += 64) body += `${b64.slice(i, i + 64)}\n`;
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

/** PEM for a chain, leaf first, as TLS and SDS expect. */
export function chainToPem(ders: readonly Buffer[]): string {
  let out = '';
  for (const d of ders) out += toPem(d);
  return out;
}

const B64_LINE = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Every `label` block in `pem`, decoded. Strict: text outside blocks is allowed (explanatory text, as RFC 7468
 * permits), but a BEGIN without a matching END, an END without BEGIN, a block of another label interleaved, bad
 * base64 characters, wrong padding, or an empty block throw INVALID_ARGUMENT. Blocks of other labels are skipped.
 * An input with no block at all returns [] (an empty chain file is the caller's decision).
 */
export function pemToDers(pem: string, label = 'CERTIFICATE'): Buffer[] {
  if (typeof pem !== 'string') throw invalidArgument('PEM input must be a string');
  const lines = pem.split(/\r?\n/);
  const out: Buffer[] = [];
  let inLabel: string | undefined;
  let body: string[] = [];
  let startLine = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    const begin = /^-----BEGIN ([A-Z0-9 ]+)-----$/.exec(line);
    const end = /^-----END ([A-Z0-9 ]+)-----$/.exec(line);
    if (begin) {
      if (inLabel !== undefined) throw invalidArgument(`malformed PEM: BEGIN ${begin[1]} on line ${i + 1} inside a ${inLabel} block`);
      inLabel = begin[1]!;
      body = [];
      startLine = i + 1;
    } else if (end) {
      if (inLabel === undefined) throw invalidArgument(`malformed PEM: END ${end[1]} on line ${i + 1} without BEGIN`);
      if (end[1] !== inLabel) throw invalidArgument(`malformed PEM: BEGIN ${inLabel} on line ${startLine} ends with END ${end[1]}`);
      if (inLabel === label) out.push(decodeBody(body, label, startLine));
      inLabel = undefined;
    } else if (inLabel !== undefined) {
      if (line.length === 0) continue;
      if (line.includes(':')) throw invalidArgument(`malformed PEM: ${inLabel} block on line ${startLine} has headers (encrypted PEM is not supported)`);
      if (!B64_LINE.test(line)) throw invalidArgument(`malformed PEM: invalid base64 on line ${i + 1}`);
      body.push(line);
    } else if (line.startsWith('-----')) {
      throw invalidArgument(`malformed PEM: unrecognised boundary on line ${i + 1}`);
    }
  }
  if (inLabel !== undefined) throw invalidArgument(`malformed PEM: BEGIN ${inLabel} on line ${startLine} has no END line`);
  return out;
}

function decodeBody(lines: string[], label: string, startLine: number): Buffer {
  const b64 = lines.join('');
  if (b64.length === 0) throw invalidArgument(`malformed PEM: empty ${label} block on line ${startLine}`);
  const pad = b64.indexOf('=');
  if ((pad >= 0 && pad < b64.length - 2) || b64.length % 4 !== 0) {
    throw invalidArgument(`malformed PEM: ${label} block on line ${startLine} is not valid base64 (bad length or padding)`);
  }
  return Buffer.from(b64, 'base64');
}
