/**
 * Leaf TTLs against the end of the Vault issuer. With the issuer's default `leaf_not_after_behavior=err`, Vault
 * answers 400 "cannot satisfy request, as TTL would result in notAfter of <t> that is beyond the expiration of the CA
 * certificate at <t>" to every leaf that would outlive the issuer, so near its end every request would fail. meshca
 * asks for what the issuer has left instead.
 */

/** Seconds kept between a clamped leaf's notAfter and the issuer's, for clock skew between meshca and Vault. */
export const CLAMP_MARGIN_SECONDS = 5;

const RFC3339 = /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})/g;

/** The times (ms) in Vault's "... notAfter of <leaf> that is beyond the expiration of the CA certificate at <ca>" refusal. */
function refusalStamps(text: string): number[] {
  if (!/beyond the expiration of the CA/i.test(text)) return [];
  return [...text.matchAll(RFC3339)].map((m) => Date.parse(m[0])).filter(Number.isFinite);
}

/** The CA notAfter (ms) named by Vault's "beyond the expiration of the CA certificate at <t>" refusal, else undefined. */
export function caNotAfterFromRefusal(text: string): number | undefined {
  const stamps = refusalStamps(text);
  return stamps.length ? stamps[stamps.length - 1] : undefined;
}

/**
 * The leaf notAfter (ms) that Vault computed (its own clock + the TTL it applied) in the same refusal, else undefined.
 * With the TTL meshca sent it tells Vault's clock: meshca's may be seconds behind (NTP drift), and then a TTL
 * clamped on meshca's clock would be refused again.
 */
export function leafNotAfterFromRefusal(text: string): number | undefined {
  const stamps = refusalStamps(text);
  return stamps.length >= 2 ? stamps[0] : undefined;
}

/**
 * The TTL (s) to request so that a leaf ends CLAMP_MARGIN_SECONDS before the issuer: `requested` when it fits or
 * the issuer's end is unknown, a shorter one when it does not, and undefined when the issuer has (nearly) nothing
 * left.
 */
export function ttlWithin(requested: number, nowMs: number, issuerNotAfterMs: number | undefined): number | undefined {
  if (issuerNotAfterMs === undefined) return requested;
  const left = Math.floor((issuerNotAfterMs - nowMs) / 1000) - CLAMP_MARGIN_SECONDS;
  if (left >= requested) return requested;
  return left >= 1 ? left : undefined;
}
