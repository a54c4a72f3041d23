import { certNotAfterMs } from '../x509/cert-parse.js';

/**
 * The trust anchors a backend publishes (trustAnchors(), and in leaf mode the roots of its signing responses), as
 * they go into the bundle. An expired anchor is dropped. An anchor the backend stops publishing is dropped:
 *
 * - in intermediate mode at once: every certificate meshca issued chains through one of its own signing CAs, whose
 *   roots the authority keeps in the bundle while that CA lives, so a withdrawn anchor validates nothing of ours and
 *   an operator who withdraws a compromised root must see it leave the mesh's trust;
 * - in leaf mode `leafGraceMs` (workload.maxTtl) after it was last published: the backend signed leaves under it up
 *   to then, and none of them outlives that.
 */
export class BackendAnchors {
  private readonly seen = new Map<string, { der: Buffer; lastSeenMs: number; notAfterMs: number }>();

  constructor(private readonly opts: { readonly mode: 'intermediate' | 'leaf'; readonly leafGraceMs: number }) {}

  /** The backend's complete current set (trustAnchors()): anchors missing from it count as withdrawn. */
  publish(ders: readonly Buffer[], nowMs: number): void {
    this.note(ders, nowMs);
    if (this.opts.mode === 'intermediate') {
      const keep = new Set(ders.map(keyOf));
      for (const k of this.seen.keys()) if (!keep.has(k)) this.seen.delete(k);
    }
  }

  /** Anchors seen in a signing response (not a complete set). True when one of them is new. */
  note(ders: readonly Buffer[], nowMs: number): boolean {
    let added = false;
    for (const der of ders) {
      const k = keyOf(der);
      const had = this.seen.get(k);
      if (had) had.lastSeenMs = Math.max(had.lastSeenMs, nowMs);
      else {
        this.seen.set(k, { der, lastSeenMs: nowMs, notAfterMs: certNotAfterMs(der) });
        added = true;
      }
    }
    return added;
  }

  /** Anchors that belong in the bundle at `nowMs`, in the order they were first seen; prunes the rest. */
  live(nowMs: number): Buffer[] {
    const out: Buffer[] = [];
    for (const [k, a] of this.seen) {
      if (a.notAfterMs <= nowMs || this.graceEndMs(a) <= nowMs) this.seen.delete(k);
      else out.push(a.der);
    }
    return out;
  }

  /** When live() next changes by time alone (an expiry or the end of a leaf-mode grace), if ever. */
  nextChangeAtMs(nowMs: number): number | undefined {
    let at: number | undefined;
    for (const a of this.seen.values()) {
      const t = Math.min(a.notAfterMs, this.graceEndMs(a));
      if (t > nowMs && (at === undefined || t < at)) at = t;
    }
    return at;
  }

  private graceEndMs(a: { lastSeenMs: number }): number {
    return this.opts.mode === 'leaf' ? a.lastSeenMs + this.opts.leafGraceMs : Infinity;
  }
}

const keyOf = (der: Buffer): string => der.toString('base64');
