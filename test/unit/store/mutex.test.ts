import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { ReentrantMutex } from '../../../src/store/mutex.js';

test('nested runs along one async chain enter directly; unrelated runs queue in order', async () => {
  const m = new ReentrantMutex();
  const seen: string[] = [];
  const a = m.run(async () => {
    seen.push(`a held=${m.held()}`);
    await sleep(10);
    await m.run(async () => seen.push('a nested'));
    seen.push('a end');
  });
  const b = m.run(async () => seen.push(`b held=${m.held()}`));
  await Promise.all([a, b]);
  assert.deepEqual(seen, ['a held=true', 'a nested', 'a end', 'b held=true']);
  assert.equal(m.held(), false);
});

test('the mutex works again after going idle (its async context is switched off and on)', async () => {
  const m = new ReentrantMutex();
  for (let i = 0; i < 3; i++) {
    assert.equal(m.held(), false);
    const held = await m.run(async () => {
      await sleep(1);
      return m.held();
    });
    assert.equal(held, true);
  }
});

test('a failing holder releases the mutex for the next one', async () => {
  const m = new ReentrantMutex();
  const first = m.run(async () => {
    throw new Error('boom');
  });
  const second = m.run(async () => m.held());
  await assert.rejects(first, /boom/);
  assert.equal(await second, true);
});
