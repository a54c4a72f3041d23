import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { hungApiServer, kubeFor } from '../support/hung-api.js';
import { LeaseElector } from '../../src/kube/lease.js';
import { SystemClock } from '../../src/util/clock.js';

async function until(check: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!check() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

test('every API request has a deadline: a request the server never answers is aborted', { timeout: 20_000 }, async () => {
  const h = await hungApiServer();
  try {
    const kube = await kubeFor(h.port, 300);
    const t0 = Date.now();
    await assert.rejects(kube.core().readNamespace({ name: 'meshca' }));
    assert.ok(Date.now() - t0 < 3000, `aborted after ${Date.now() - t0} ms`);
    await until(() => h.closed() >= 1, 3000);
    assert.deepEqual(h.requests, ['GET /api/v1/namespaces/meshca']);
    assert.equal(h.closed(), 1, 'the connection was closed, not left hanging');
  } finally {
    h.server.closeAllConnections();
    await new Promise((r) => h.server.close(r));
  }
});

test('a Lease request the server never answers ends within one retry period, and stop() does not wait on it', { timeout: 20_000 }, async () => {
  const h = await hungApiServer();
  try {
    const kube = await kubeFor(h.port); // the 30 s default would outlast this test: the Lease's own deadline applies
    const elector = new LeaseElector({ kube, namespace: 'meshca', name: 'rotation', identity: 'a', leaseDurationSeconds: 3, clock: new SystemClock(), log: pino({ level: 'silent' }) });
    elector.start();
    await until(() => h.requests.length >= 1, 3000);
    assert.match(h.requests[0]!, /^GET \/apis\/coordination\.k8s\.io\/v1\/namespaces\/meshca\/leases\/rotation$/);
    // retryPeriod = 1 s (a third of 3 s): the hung read is aborted by then and the next attempt is sent.
    await until(() => h.requests.length >= 2, 4000);
    assert.ok(h.requests.length >= 2, 'a second attempt followed the aborted one');
    assert.ok(h.closed() >= 1, 'the hung read was aborted');
    assert.equal(elector.isLeader(), false);
    const t0 = Date.now();
    await elector.stop();
    assert.ok(Date.now() - t0 < 2500, `stop() took ${Date.now() - t0} ms`);
  } finally {
    h.server.closeAllConnections();
    await new Promise((r) => h.server.close(r));
  }
});
