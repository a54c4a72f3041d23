/**
 * Pure rotation decisions for meshca's signing CA, as functions of time (SPIRE's schedule):
 * a slot's successor is prepared at 1/2 of its life and activated at 5/6, so the successor (and any new root it
 * brings) is in the trust bundle long before it signs, and the old signing CA stays valid for the leaves it signed.
 */
export interface SlotTimes {
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
}

export function prepareAtMs(s: SlotTimes): number {
  return s.notBeforeMs + (s.notAfterMs - s.notBeforeMs) / 2;
}

export function activateAtMs(s: SlotTimes): number {
  return s.notBeforeMs + ((s.notAfterMs - s.notBeforeMs) * 5) / 6;
}

/**
 * The longest leaf lifetime a signing CA of `signingCaTtlSeconds` always covers. The active CA is replaced at 5/6 of
 * its life by a successor prepared at 1/2 of it, so the active CA has between 1/6 and 2/3 of its life left; leaves
 * never outlive their signing CA, so a longer lifetime is cut short for part of every rotation.
 */
export function coveredTtlSeconds(signingCaTtlSeconds: number): number {
  const lifeMs = signingCaTtlSeconds * 1000;
  return (lifeMs - activateAtMs({ notBeforeMs: 0, notAfterMs: lifeMs })) / 1000;
}

export type RotationStep = 'mint-active' | 'prepare-next' | 'activate-next' | 'none';

/**
 * What to do now. `active` is the signing CA in use (undefined at first start); `next` the prepared successor.
 * mint-active: there is no usable active CA (none, or expired) — mint one and use it at once.
 */
export function nextStep(nowMs: number, active: SlotTimes | undefined, next: SlotTimes | undefined): RotationStep {
  if (!active || nowMs >= active.notAfterMs) return next && nowMs < next.notAfterMs ? 'activate-next' : 'mint-active';
  if (next && nowMs >= activateAtMs(active)) return 'activate-next';
  if (!next && nowMs >= prepareAtMs(active)) return 'prepare-next';
  return 'none';
}

/** When nextStep could next return something other than 'none'. */
export function nextDecisionAtMs(active: SlotTimes | undefined, next: SlotTimes | undefined): number | undefined {
  if (!active) return undefined;
  return next ? activateAtMs(active) : prepareAtMs(active);
}

/**
 * Renewal time of a leaf: issuance time + fraction x lifetime, jittered by +/-10% of that offset so that thousands
 * of proxies issued together do not renew in the same second. `rand` in [0,1).
 */
export function renewAtMs(issuedMs: number, notAfterMs: number, fraction: number, rand: number): number {
  const offset = (notAfterMs - issuedMs) * fraction;
  const jittered = offset * (0.9 + 0.2 * rand);
  return Math.min(issuedMs + jittered, notAfterMs - 1000);
}
