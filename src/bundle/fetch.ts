import { request } from 'node:https';
import { X509Certificate } from 'node:crypto';
import type { PeerCertificate as TlsPeerCertificate } from 'node:tls';
import { chainPem } from './pem.js';

/** How a bundle endpoint's server certificate is verified (SPIFFE_Federation.md profiles). */
export type EndpointVerification =
  /** Web PKI: chain to `caPem` (or the system roots when absent) and RFC 6125 host name check. */
  | { readonly profile: 'https_web'; readonly caPem?: string }
  /** The server presents an X509-SVID that chains to `rootsDer` and whose one URI SAN is `spiffeId`. */
  | { readonly profile: 'https_spiffe'; readonly rootsDer: readonly Buffer[]; readonly spiffeId: string };

export class BundleFetchError extends Error {
  constructor(
    message: string,
    /** 'connect' (network, TLS, verification), 'http' (status), 'size', 'timeout'. */
    readonly kind: 'connect' | 'verify' | 'http' | 'size' | 'timeout',
  ) {
    super(message);
    this.name = 'BundleFetchError';
  }
}

const MAX_REDIRECTS = 3;

/** URI SANs of a peer certificate as Node reports them ("URI:spiffe://a/b, DNS:x"). */
export function uriSans(cert: Pick<TlsPeerCertificate, 'subjectaltname'> | X509Certificate): string[] {
  const s = cert instanceof X509Certificate ? cert.subjectAltName : cert.subjectaltname;
  if (!s) return [];
  // Node quotes values that contain separators: URI:"spiffe://a,b".
  const out: string[] = [];
  const re = /(?:^|, )URI:("(?:[^"\\]|\\.)*"|[^,]*)/g;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const v = m[1]!;
    out.push(v.startsWith('"') ? (JSON.parse(v) as string) : v);
  }
  return out;
}

/**
 * GETs a SPIFFE bundle endpoint and returns the body text. Never sends a client certificate. Follows up to 3
 * https redirects, verifying each hop the same way (for https_spiffe the target must present the same SPIFFE ID).
 * Rejects non-200 answers, bodies over maxBytes and anything slower than timeoutMs, with BundleFetchError.
 */
export async function fetchBundleDocument(
  url: string,
  verify: EndpointVerification,
  opts: { timeoutMs?: number; maxBytes?: number } = {},
): Promise<string> {
  let current = new URL(url);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  // One deadline for the whole fetch (redirects included): a socket idle timeout alone never ends an answer that
  // trickles in a byte at a time.
  const deadline = Date.now() + timeoutMs;
  for (let hop = 0; ; hop++) {
    const r = await getOnce(current, verify, timeoutMs, deadline, opts.maxBytes ?? 4 * 1024 * 1024);
    if (r.redirect === undefined) return r.body!;
    if (hop >= MAX_REDIRECTS) throw new BundleFetchError(`${url}: more than ${MAX_REDIRECTS} redirects`, 'http');
    const next = new URL(r.redirect, current);
    if (next.protocol !== 'https:') throw new BundleFetchError(`${current.href} redirects to a non-https URL ${next.href}`, 'http');
    if (next.username || next.password) throw new BundleFetchError(`${current.href} redirects to a URL with userinfo`, 'http');
    current = next;
  }
}

function getOnce(u: URL, verify: EndpointVerification, timeoutMs: number, deadline: number, maxBytes: number): Promise<{ body?: string; redirect?: string }> {
  return new Promise((resolveP, rejectP) => {
    let timer: NodeJS.Timeout | undefined;
    const resolve = (v: { body?: string; redirect?: string }) => {
      clearTimeout(timer);
      resolveP(v);
    };
    const reject = (e: Error) => {
      clearTimeout(timer);
      rejectP(e);
    };
    const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    const isIp = /^[\d.]+$/.test(host) || host.includes(':');
    let spiffeProblem: string | undefined;
    const tlsOpts =
      verify.profile === 'https_web'
        ? { ...(verify.caPem ? { ca: verify.caPem } : {}) }
        : {
            ca: chainPem(verify.rootsDer),
            // Replaces the host name check: an https_spiffe endpoint is identified by its SPIFFE ID.
            checkServerIdentity: (_h: string, cert: TlsPeerCertificate): Error | undefined => {
              const uris = uriSans(cert);
              if (uris.length !== 1) spiffeProblem = `presents a certificate with ${uris.length} URI SANs (an X509-SVID has exactly one)`;
              else if (uris[0] !== verify.spiffeId) spiffeProblem = `presents SPIFFE ID ${uris[0]}, expected ${verify.spiffeId}`;
              return spiffeProblem ? new Error(spiffeProblem) : undefined;
            },
          };
    if (verify.profile === 'https_spiffe' && verify.rootsDer.length === 0) {
      reject(new BundleFetchError(`${u.href}: no trust anchors to verify the endpoint's SVID with`, 'verify'));
      return;
    }
    const req = request(
      u,
      {
        method: 'GET',
        agent: false,
        headers: { accept: 'application/json' },
        ...(isIp ? {} : { servername: host }),
        rejectUnauthorized: true,
        ...tlsOpts,
      },
      (res) => {
        const status = res.statusCode ?? 0;
        if ([301, 302, 303, 307, 308].includes(status) && res.headers.location) {
          res.resume();
          resolve({ redirect: res.headers.location });
          return;
        }
        if (status !== 200) {
          res.resume();
          reject(new BundleFetchError(`${u.href}: HTTP ${status}`, 'http'));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > maxBytes) {
            req.destroy();
            reject(new BundleFetchError(`${u.href}: bundle larger than ${maxBytes} bytes`, 'size'));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => resolve({ body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (e) => reject(new BundleFetchError(`${u.href}: ${e.message}`, 'connect')));
      },
    );
    const timedOut = () => {
      req.destroy();
      reject(new BundleFetchError(`${u.href}: no answer within ${timeoutMs} ms`, 'timeout'));
    };
    req.setTimeout(timeoutMs, timedOut);
    timer = setTimeout(timedOut, Math.max(0, deadline - Date.now()));
    timer.unref();
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (spiffeProblem) reject(new BundleFetchError(`${u.href}: endpoint ${spiffeProblem}`, 'verify'));
      else if (e.code && /CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|HOSTNAME|ALTNAME/.test(e.code)) reject(new BundleFetchError(`${u.href}: TLS verification failed (${e.code}: ${e.message})`, 'verify'));
      else reject(new BundleFetchError(`${u.href}: ${e.message}`, 'connect'));
    });
    req.end();
  });
}
