import { certNotAfterMs } from '../x509/cert-parse.js';

/**
 * The trust anchors a backend publishes (trustAnchors(), and in leaf mode the roots of its signing responses), as
 * they go into the bundle. An expired anchor is dropped. An anchor the backend stops publishing is dropped:
 *
 * - in intermediate mode at once: every certificate meshca issued chains through one of its own signing CAs, whose
 *   roots the authority keeps in the bundle while that CA lives, so a withdrawn anchor validates nothing of ours and
 *   an operator who withdraws a compromised root must see it leave the mesh's trust;
 * - in leaf mode `leafGraceMs` (workload.maxTtl) after this process first found it withdrawn (missing from the
 *   backend's complete set, and in no signing response since): the backend signed leaves under it up to then, and
 *   none of them outlives that. Counting from the first sight of the withdrawal, not from the last sight of the
 *   anchor, matters when several processes share the state (HA replicas, a restart, the CLI): another one may have
 *   signed under the anchor long after this one last looked. For the same reason the anchors of the stored bundle
 *   are adopted (adoptStored) as if published: this process may never have seen them, yet leaves signed under them
 *   may be alive.
 */
export class BackendAnchors {
  private readonly seen = new Map<string, { der: Buffer; notAfterMs: number; missingSinceMs: number | undefined }>();
  /** Leaf mode: anchors this process dropped after their grace, until they expire (not adopted from the store again). */
  private readonly dropped = new Map<string, number>();

  constructor(private readonly opts: { readonly mode: 'intermediate' | 'leaf'; readonly leafGraceMs: number }) {}

  /** The backend's complete current set (trustAnchors()): anchors missing from it count as withdrawn. */
  publish(ders: readonly Buffer[], nowMs: number): void {
    this.note(ders);
    const keep = new Set(ders.map(keyOf));
    for (const [k, a] of this.seen) {
      if (keep.has(k)) continue;
      if (this.opts.mode === 'intermediate') this.seen.delete(k);
      else a.missingSinceMs ??= nowMs;
    }
  }

  /** Anchors seen in a signing response (not a complete set). True when one of them is new. */
  note(ders: readonly Buffer[]): boolean {
    let added = false;
    for (const der of ders) {
      const k = keyOf(der);
      this.dropped.delete(k);
      const had = this.seen.get(k);
      if (had) had.missingSinceMs = undefined;
      else {
        this.seen.set(k, { der, notAfterMs: certNotAfterMs(der), missingSinceMs: undefined });
        added = true;
      }
    }
    return added;
  }

  /**
   * Leaf mode: the roots of the stored bundle (written by this or another process) that this process does not know
   * join as present, so a restart or a replica that never saw them does not drop them at once; a following publish()
   * starts their grace if the backend no longer has them. Anchors this process already let go are not taken back.
   * Intermediate mode: nothing (the stored bundle also holds signing-CA roots, which the authority keeps itself).
   */
  adoptStored(ders: readonly Buffer[], nowMs: number): void {
    if (this.opts.mode !== 'leaf') return;
    for (const der of ders) {
      const k = keyOf(der);
      if (this.seen.has(k)) continue;
      const droppedUntil = this.dropped.get(k);
      if (droppedUntil !== undefined && droppedUntil > nowMs) continue;
      this.dropped.delete(k);
      this.seen.set(k, { der, notAfterMs: certNotAfterMs(der), missingSinceMs: undefined });
    }
  }

  /** Anchors that belong in the bundle at `nowMs`, in the order they were first seen; prunes the rest. */
  live(nowMs: number): Buffer[] {
    for (const [k, until] of this.dropped) if (until <= nowMs) this.dropped.delete(k);
    const out: Buffer[] = [];
    for (const [k, a] of this.seen) {
      if (a.notAfterMs <= nowMs) this.seen.delete(k);
      else if (this.graceEndMs(a) <= nowMs) {
        this.seen.delete(k);
        this.dropped.set(k, a.notAfterMs);
      } else out.push(a.der);
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

  private graceEndMs(a: { missingSinceMs: number | undefined }): number {
    return this.opts.mode === 'leaf' && a.missingSinceMs !== undefined ? a.missingSinceMs + this.opts.leafGraceMs : Infinity;
  }
}

const keyOf = (der: Buffer): string => der.toString('base64');
