import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { SystemClock } from '../../../src/util/clock.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('SystemClock timers fire once; cancel before, during or after firing is safe', async () => {
  const clock = new SystemClock();
  let fired = 0;
  const t = clock.setTimer(() => fired++, 5);
  await sleep(60);
  assert.equal(fired, 1);
  t.cancel();
  t.cancel();
  await sleep(30);
  assert.equal(fired, 1, 'a cancel after firing neither re-fires nor throws');

  let never = 0;
  const c = clock.setTimer(() => never++, 10);
  c.cancel();
  await sleep(50);
  assert.equal(never, 0, 'a cancelled timer never fires');

  let self = 0;
  const s: { t?: { cancel(): void } } = {};
  s.t = clock.setTimer(() => {
    self++;
    s.t!.cancel();
  }, 0);
  await sleep(30);
  assert.equal(self, 1, 'cancelling itself while firing is harmless');

  const order: number[] = [];
  clock.setTimer(() => order.push(2), 20);
  clock.setTimer(() => order.push(1), 5);
  await sleep(80);
  assert.deepEqual(order, [1, 2]);
});

test('SystemClock timers never keep the process alive', () => {
  const url = new URL('../../../src/util/clock.js', import.meta.url).href;
  const script = `import(${JSON.stringify(url)}).then(({ SystemClock }) => { const c = new SystemClock(); c.setTimer(() => { process.exitCode = 3; }, 60_000); c.setTimer(() => {}, 2 ** 40); });`;
  const started = Date.now();
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 20_000 });
  assert.equal(r.status, 0, String(r.stderr));
  assert.ok(Date.now() - started < 15_000, 'the child exited without waiting for its timers');
});
