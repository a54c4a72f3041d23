import { test } from 'node:test';
import assert from 'node:assert/strict';
import { activateAtMs, nextDecisionAtMs, nextStep, prepareAtMs, renewAtMs } from '../../../src/authority/rotation.js';

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
