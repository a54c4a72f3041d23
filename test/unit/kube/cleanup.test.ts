import { test } from 'node:test';
import assert from 'node:assert/strict';
import { leftoverNames } from '../../../src/kube/cleanup.js';

const NOW = Date.UTC(2026, 0, 1, 12, 0, 0);
const obj = (name: string, ageMs: number, finished = false) => ({
  metadata: { name, creationTimestamp: new Date(NOW - ageMs).toISOString() },
  finished,
});

test('a sweep deletes finished, stale and previously undeleted requests, never in-flight ones', () => {
  const items = [
    obj('done', 1000, true),
    obj('pending-young', 1000),
    obj('pending-stale', 10 * 60_000),
    obj('undeleted', 1000),
    obj('in-flight-done', 1000, true),
    { metadata: { creationTimestamp: 'bogus' } },
  ];
  const names = leftoverNames(items, {
    inFlight: new Set(['in-flight-done']),
    undeleted: new Set(['undeleted']),
    nowMs: NOW,
    maxAgeMs: 5 * 60_000,
    isFinished: (o) => (o as { finished?: boolean }).finished === true,
  });
  assert.deepEqual(names, ['done', 'pending-stale', 'undeleted']);
});
