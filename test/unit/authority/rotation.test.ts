import { test } from 'node:test';
import assert from 'node:assert/strict';
import { activateAtMs, coveredTtlSeconds, nextDecisionAtMs, nextStep, prepareAtMs, renewAtMs } from '../../../src/authority/rotation.js';

const H = 3600_000;
const slot = (from: number, hours: number) => ({ notBeforeMs: from, notAfterMs: from + hours * H });

test('the successor is prepared at half life and activated at five sixths', () => {
  const a = slot(0, 48);
  assert.equal(prepareAtMs(a), 24 * H);
  assert.equal(activateAtMs(a), 40 * H);
  assert.equal(nextStep(0, undefined, undefined), 'mint-active');
  assert.equal(nextStep(23 * H, a, undefined), 'none');
  assert.equal(nextStep(24 * H, a, undefined), 'prepare-next');
  const n = slot(24 * H, 48);
  assert.equal(nextStep(30 * H, a, n), 'none');
  assert.equal(nextStep(40 * H, a, n), 'activate-next');
  assert.equal(nextDecisionAtMs(a, undefined), 24 * H);
  assert.equal(nextDecisionAtMs(a, n), 40 * H);
});

test('the active signing CA always has 1/6 to 2/3 of its life left, so only a ttl up to 1/6 is always covered', () => {
  // Walk the schedule hour by hour over several rotations and record the active CA's remaining life.
  let active = slot(0, 48);
  let next: ReturnType<typeof slot> | undefined;
  let least = Infinity;
  let most = 0;
  for (let now = 0; now < 400 * H; now += H / 4) {
    const step = nextStep(now, active, next);
    if (step === 'prepare-next') next = slot(now, 48);
    if (step === 'activate-next') [active, next] = [next!, undefined];
    if (now >= 48 * H) {
      least = Math.min(least, active.notAfterMs - now);
      most = Math.max(most, active.notAfterMs - now);
    }
  }
  assert.equal(least, 8 * H + H / 4, 'just before activation: L/6 (plus the walk step)');
  assert.equal(most, 32 * H, 'just after activation: 2L/3');
  assert.equal(coveredTtlSeconds(48 * 3600), 8 * 3600);
});

test('an expired active CA is replaced by the prepared one, or a new one is minted', () => {
  const a = slot(0, 48);
  assert.equal(nextStep(49 * H, a, slot(24 * H, 48)), 'activate-next');
  assert.equal(nextStep(49 * H, a, undefined), 'mint-active');
  assert.equal(nextStep(200 * H, a, slot(24 * H, 48)), 'mint-active');
});

test('renewal is counted from issuance, jittered by at most 10%', () => {
  const issued = 1000 * H;
  const notAfter = issued + 1 * H;
  assert.equal(renewAtMs(issued, notAfter, 0.5, 0.5), issued + 0.5 * H);
  assert.equal(renewAtMs(issued, notAfter, 0.5, 0), issued + 0.45 * H);
  assert.ok(Math.abs(renewAtMs(issued, notAfter, 0.5, 0.999999) - (issued + 0.55 * H)) < 10);
  // never at or after expiry
  assert.ok(renewAtMs(issued, issued + 2000, 0.99, 0.99) < issued + 2000);
});
