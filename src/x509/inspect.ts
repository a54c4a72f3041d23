import { X509Certificate } from 'node:crypto';
import { invalidArgument } from '../util/errors.js';
import { parseSpiffeId } from '../identity/spiffe-id.js';
import { dnLine, parseBasicConstraints, parseCertificate, sanOf } from './cert-parse.js';
import { describeKey, keyTypeOf } from './keys.js';
import { pemToDers } from './pem.js';
import { EXT } from './profile.js';
import { describeCaProblems, describeSvidProblems } from './validate.js';

/** "47m12s", "3d4h", "12s": the two largest non-zero units. */
export function formatDuration(ms: number): string {
  let s = Math.floor(Math.abs(ms) / 1000);
  const units: [string, number][] = [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ];
  const parts: string[] = [];
  for (const [u, n] of units) {
    if (s >= n || (u === 's' && parts.length === 0)) {
      parts.push(`${Math.floor(s / n)}${u}`);
      s %= n;
    }
    if (parts.length === 2) break;
  }
  return parts.join('');
}

/**
 * Human-readable report on a PEM chain (leaf first) for `meshca inspect FILE`: per certificate its names, SPIFFE
 * ID, SANs, serial, validity with time left, key, role, and the profile rules it breaks; then whether each
 * certificate is issued and signed by the next one. Throws INVALID_ARGUMENT when the input holds no certificate.
 */
export function inspectChain(pem: string, opts: { now?: Date; trustDomain?: string } = {}): string {
  const ders = pemToDers(pem);
  if (ders.length === 0) throw invalidArgument('no CERTIFICATE blocks found');
  const now = (opts.now ?? new Date()).getTime();
  const lines: string[] = [];
  const xs: (X509Certificate | undefined)[] = [];
  ders.forEach((der, i) => {
    lines.push(`Certificate ${i + 1} of ${ders.length}`);
    let x: X509Certificate | undefined;
    try {
      x = new X509Certificate(der);
    } catch (e) {
      lines.push(`  cannot parse: ${(e as Error).message}`, '');
      xs.push(undefined);
      return;
    }
    xs.push(x);
    let isCa = x.ca;
    let uris: string[] = [];
    let dns: string[] = [];
    let ips: string[] = [];
    try {
      const p = parseCertificate(der);
      const san = sanOf(p);
      if (san) ({ uris, dnsNames: dns, ipAddresses: ips } = san);
      const bc = p.extensions.get(EXT.basicConstraints);
      if (bc) isCa = parseBasicConstraints(bc.value).ca;
    } catch {
      // X509Certificate parsed it; fall back to what it tells us.
    }
    const kt = keyTypeOf(x.publicKey);
    lines.push(`  role:       ${isCa ? (x.subject && x.issuer === x.subject ? 'CA (self-signed root)' : 'CA (intermediate)') : 'leaf'}`);
    lines.push(`  subject:    ${dnLine(x.subject) || '(empty)'}`);
    lines.push(`  issuer:     ${dnLine(x.issuer) || '(empty)'}`);
    lines.push(`  SPIFFE ID:  ${uris.length === 1 ? uris[0] : uris.length === 0 ? '(none)' : `(ambiguous: ${uris.length} URI SANs)`}`);
    if (uris.length > 1) lines.push(`  URI SANs:   ${uris.join(', ')}`);
    if (dns.length) lines.push(`  DNS SANs:   ${dns.join(', ')}`);
    if (ips.length) lines.push(`  IP SANs:    ${ips.join(', ')}`);
    lines.push(`  serial:     ${x.serialNumber}`);
    const nb = new Date(x.validFrom).getTime();
    const na = new Date(x.validTo).getTime();
    let state: string;
    if (now < nb) state = `NOT YET VALID (starts in ${formatDuration(nb - now)})`;
    else if (now >= na) state = `EXPIRED ${formatDuration(now - na)} ago`;
    else state = `expires in ${formatDuration(na - now)}`;
    lines.push(`  validity:   ${new Date(nb).toISOString()} .. ${new Date(na).toISOString()}  ${state}`);
    lines.push(`  key:        ${kt ?? describeKey(x.publicKey)}`);
    lines.push(`  SHA-256:    ${x.fingerprint256}`);
    // Without --trust-domain the certificate's own SPIFFE ID gives it; when there is none (no URI SAN, or one that is
    // not a SPIFFE ID) every rule is still checked and only the trust-domain comparison is skipped.
    const td = opts.trustDomain ?? trustDomainOf(uris);
    const problems = isCa ? describeCaProblems(der, td) : describeSvidProblems(der, td, ders[i + 1]);
    if (problems.length === 0) lines.push(`  profile:    OK (${isCa ? 'SPIFFE CA' : 'X509-SVID'}${td ? `, trust domain ${td}` : '; trust domain not checked: pass --trust-domain'})`);
    else for (const p of problems) lines.push(`  PROBLEM:    ${p}`);
    lines.push('');
  });
  lines.push('Chain');
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    const up = xs[i + 1];
    if (!x) continue;
    if (!up) {
      const self = !!x.subject && x.issuer === x.subject && safe(() => x.verify(x.publicKey));
      lines.push(`  ${i + 1}: ${self ? 'self-signed (trust anchor)' : 'top of the chain given; its issuer must be in the trust bundle'}`);
      continue;
    }
    const issued = safe(() => x.checkIssued(up));
    const signed = safe(() => x.verify(up.publicKey));
    if (issued && signed) lines.push(`  ${i + 1} <- ${i + 2}: issued and signed by the next certificate`);
    else if (!issued) lines.push(`  ${i + 1} <- ${i + 2}: PROBLEM: issuer name does not match the next certificate's subject`);
    else lines.push(`  ${i + 1} <- ${i + 2}: PROBLEM: signature does not verify with the next certificate's key`);
  }
  return lines.join('\n').trimEnd();
}

function safe(f: () => boolean): boolean {
  try {
    return f();
  } catch {
    return false;
  }
}


function trustDomainOf(uris: string[]): string | undefined {
  if (uris.length === 0) return undefined;
  try {
    return parseSpiffeId(uris[0]!).trustDomain;
  } catch {
    return undefined;
  }
}
