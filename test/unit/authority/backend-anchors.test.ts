import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BackendAnchors } from '../../../src/authority/backend-anchors.js';
import { createSelfSignedRoot } from '../../../src/x509/ca-certs.js';

const H = 3600_000;
const NOW = Date.UTC(2026, 0, 1);

async function root(ttlHours: number): Promise<Buffer> {
  return (await createSelfSignedRoot({ trustDomain: 'td.test', keyType: 'ec-p256', ttlSeconds: ttlHours * 3600, now: new Date(NOW) })).certDer;
}

test('intermediate mode: an anchor the backend stops publishing leaves at once; expired ones leave too', async () => {
  const [a, b, short] = [await root(100), await root(100), await root(2)];
  const t = new BackendAnchors({ mode: 'intermediate', leafGraceMs: 24 * H });
  t.publish([a, b, short], NOW);
  assert.deepEqual(t.live(NOW), [a, b, short]);
  assert.equal(t.nextChangeAtMs(NOW), NOW + 2 * H, 'the short-lived root expires first');
  t.publish([b, a], NOW + H);
  assert.deepEqual(t.live(NOW + H), [a, b], 'withdrawn: gone, order of first sight kept');
  t.publish([a, b, short], NOW + H);
  assert.deepEqual(t.live(NOW + 3 * H), [a, b], 'expired: gone even while still published');
  t.publish([], NOW + 4 * H);
  assert.deepEqual(t.live(NOW + 4 * H), []);
  assert.equal(t.nextChangeAtMs(NOW + 4 * H), undefined);
});

test('leaf mode: a withdrawn anchor stays for the longest leaf lifetime after it was last seen', async () => {
  const [a, b] = [await root(100), await root(100)];
  const t = new BackendAnchors({ mode: 'leaf', leafGraceMs: 24 * H });
  t.publish([a], NOW);
  assert.equal(t.note([a, b], NOW + H), true, 'b is new (from a signing response)');
  assert.equal(t.note([b], NOW + 2 * H), false);
  t.publish([b], NOW + 3 * H); // a withdrawn; last seen at NOW + H
  assert.deepEqual(t.live(NOW + 3 * H), [a, b], 'leaves signed under a may still live');
  assert.equal(t.nextChangeAtMs(NOW + 3 * H), NOW + 25 * H);
  assert.deepEqual(t.live(NOW + 25 * H), [b], 'no leaf signed under a outlives its grace');
  assert.deepEqual(t.live(NOW + 27 * H - 1), [b], 'b was last published at +3h');
  assert.deepEqual(t.live(NOW + 27 * H), []);
  assert.deepEqual(t.live(NOW + 100 * H), []);
});
