import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConcurrencyLimit, QueueFullError } from '../../../src/util/concurrency-limit.js';

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

test('holders never exceed max; waiters are granted in arrival order as slots free', async () => {
  const l = new ConcurrencyLimit(2, 10);
  const order: number[] = [];
  const tickets = Array.from({ length: 5 }, (_, i) => {
    const t = l.enter();
    void t.ready.then(() => order.push(i));
    return t;
  });
  await flush();
  assert.deepEqual(order, [0, 1]);
  assert.equal(l.active, 2);
  assert.equal(l.waiting, 3);
  tickets[1]!.release();
  await flush();
  assert.deepEqual(order, [0, 1, 2]);
  tickets[0]!.release();
  tickets[2]!.release();
  await flush();
  assert.deepEqual(order, [0, 1, 2, 3, 4]);
  assert.equal(l.active, 2);
  assert.equal(l.waiting, 0);
});

test('a waiter that leaves is never granted; release is idempotent', async () => {
  const l = new ConcurrencyLimit(1, 10);
  const a = l.enter();
  const b = l.enter();
  const c = l.enter();
  let bReady = false;
  void b.ready.then(() => (bReady = true));
  b.release();
  b.release();
  assert.ok(b.released);
  a.release();
  a.release(); // a second release must not free a second slot
  await flush();
  assert.equal(bReady, false);
  assert.equal(l.active, 1, 'c holds the slot');
  assert.equal(l.waiting, 0);
  const d = l.enter();
  let dReady = false;
  void d.ready.then(() => (dReady = true));
  await flush();
  assert.equal(dReady, false, 'd waits behind c');
  c.release();
  await flush();
  assert.equal(dReady, true);
});

test('enter() throws QueueFullError once maxQueued tickets wait', () => {
  const l = new ConcurrencyLimit(1, 2);
  l.enter();
  l.enter();
  l.enter();
  assert.throws(() => l.enter(), QueueFullError);
  assert.throws(() => new ConcurrencyLimit(0, 1), RangeError);
});
