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

test('leaf mode: a withdrawn anchor stays for the longest leaf lifetime after it was found withdrawn', async () => {
  const [a, b] = [await root(100), await root(100)];
  const t = new BackendAnchors({ mode: 'leaf', leafGraceMs: 24 * H });
  t.publish([a], NOW);
  assert.equal(t.note([a, b]), true, 'b is new (from a signing response)');
  assert.equal(t.note([b]), false);
  t.publish([b], NOW + 3 * H); // a withdrawn: first found missing at +3h
  assert.deepEqual(t.live(NOW + 3 * H), [a, b], 'leaves signed under a may still live');
  assert.equal(t.nextChangeAtMs(NOW + 3 * H), NOW + 27 * H);
  t.publish([b], NOW + 10 * H); // still missing: the grace keeps counting from +3h
  assert.deepEqual(t.live(NOW + 27 * H - 1), [a, b]);
  assert.deepEqual(t.live(NOW + 27 * H), [b], 'no leaf signed under a outlives its grace');
  assert.deepEqual(t.live(NOW + 60 * H), [b], 'b is still published: it stays however long nobody republishes it');
  assert.equal(t.nextChangeAtMs(NOW + 60 * H), NOW + 100 * H, 'b leaves when it expires');
  assert.deepEqual(t.live(NOW + 100 * H), []);
});

test('leaf mode: a signing response naming a withdrawn anchor restarts its grace', async () => {
  const [a, b] = [await root(100), await root(100)];
  const t = new BackendAnchors({ mode: 'leaf', leafGraceMs: 24 * H });
  t.publish([a, b], NOW);
  t.publish([b], NOW + H);
  t.note([a]); // the backend still signs under a (its published set lags)
  t.publish([b], NOW + 5 * H);
  assert.deepEqual(t.live(NOW + 25 * H), [a, b], 'the grace runs from +5h, when a was found missing again');
  assert.deepEqual(t.live(NOW + 29 * H), [b]);
});

test('leaf mode: anchors of the stored bundle are adopted, unless this process already let them go', async () => {
  const [a, b] = [await root(100), await root(100)];
  const t = new BackendAnchors({ mode: 'leaf', leafGraceMs: 24 * H });
  // A restart or another replica: the stored bundle holds a, which this process never saw published.
  t.adoptStored([a], NOW);
  t.publish([b], NOW);
  assert.deepEqual(t.live(NOW), [a, b], 'a stays: leaves signed under it elsewhere may be alive');
  assert.deepEqual(t.live(NOW + 24 * H), [b], 'for one grace from now');
  // Another replica that found it missing later writes it back: it is not taken again until it expires.
  t.adoptStored([a, b], NOW + 25 * H);
  assert.deepEqual(t.live(NOW + 25 * H), [b]);
  t.note([a]);
  assert.deepEqual(t.live(NOW + 25 * H), [b, a], 'republished by the backend: trusted again');

  const i = new BackendAnchors({ mode: 'intermediate', leafGraceMs: 24 * H });
  i.adoptStored([a], NOW);
  assert.deepEqual(i.live(NOW), [], 'intermediate mode: the stored bundle holds signing-CA roots, not backend anchors');
});
