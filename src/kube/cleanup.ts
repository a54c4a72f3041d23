import type { KubeObject } from './list-watch.js';

/**
 * Which of our request objects (CertificateRequests, CertificateSigningRequests) a sweep should delete: every one
 * not in flight that is finished, older than `maxAgeMs`, or whose earlier delete failed. Pure: the caller deletes.
 */
export function leftoverNames<T extends KubeObject>(
  items: readonly T[],
  o: { inFlight: ReadonlySet<string>; undeleted: ReadonlySet<string>; nowMs: number; maxAgeMs: number; isFinished(obj: T): boolean },
): string[] {
  const out: string[] = [];
  for (const obj of items) {
    const name = obj.metadata?.name;
    if (!name || o.inFlight.has(name)) continue;
    const created = Date.parse(String(obj.metadata?.creationTimestamp ?? ''));
    const stale = Number.isFinite(created) && o.nowMs - created > o.maxAgeMs;
    if (o.isFinished(obj) || stale || o.undeleted.has(name)) out.push(name);
  }
  return out;
}
