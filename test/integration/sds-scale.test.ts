import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness, type Harness } from '../support/sds-harness.js';
import type { SdsClient, SotwStream } from '../support/sds-client.js';
import { SHARED_ALPN_H2 } from '../../src/servers/grpc-server.js';

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('SDS at scale and cleanup', { timeout: 90_000 }, () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it('serves 200 concurrent streams, each on its own connection, and releases everything on disconnect', async () => {
    h = await startHarness();
    const listenersBefore = h.fake!.listenerCount();
    const clients: SdsClient[] = [];
    for (let i = 0; i < 200; i++) clients.push(await h.client(`spiffe://example.org/w/${i}`, { id: `node-${i}`, cluster: 'c' }));
    const streams: SotwStream[] = clients.map((c, i) => {
      const s = c.streamSecrets();
      s.request([i % 2 === 0 ? 'default' : 'ROOTCA']);
      return s;
    });
    const responses = await Promise.all(streams.map((s) => s.next(20_000)));
    responses.forEach((r, i) => assert.equal(r.secrets[0]!.name, i % 2 === 0 ? 'default' : 'ROOTCA'));
    assert.equal(h.running.sds.openStreams(), 200);
    assert.equal(h.running.cache.size, 100);
    assert.equal(await h.metric('meshca_sds_streams_open'), 200);
    for (const s of streams) s.cancel();
    await until(() => h!.running.sds.openStreams() === 0, 5000, 'streams to close');
    assert.equal(h.running.cache.size, 0, 'no SVID entries left');
    assert.equal(h.running.cache.listenerCount(), 0);
    assert.equal(await h.metric('meshca_sds_streams_open'), 0);
    assert.equal(h.fake!.listenerCount(), listenersBefore, 'no authority listeners leaked');
    assert.equal(h.manual!.pendingTimers(), 1, 'only the serving certificate timer is left');
  });

  it('connections do not keep their per-socket copy of the ALPN list (grpc-js/Node internals this relies on)', async () => {
    h = await startHarness();
    const clients: SdsClient[] = [];
    for (let i = 0; i < 5; i++) clients.push(await h.client(`spiffe://example.org/alpn/${i}`, { id: `alpn-${i}`, cluster: 'c' }));
    const streams = clients.map((c) => c.streamSecrets());
    streams.forEach((s) => s.request(['ROOTCA']));
    await Promise.all(streams.map((s) => s.next(10_000)));
    const servers = (h.running.server.server as unknown as { http2Servers?: Map<unknown, { sessions?: Set<{ socket?: unknown }> }> }).http2Servers;
    assert.ok(servers instanceof Map, 'grpc-js keeps its HTTP/2 servers in http2Servers (private): update grpc-server.ts if this changed');
    const sockets = [...servers.values()].flatMap((info) => [...(info.sessions ?? [])].map((sess) => sess.socket));
    assert.ok(sockets.length >= 5, `found ${sockets.length} server-side sessions`);
    for (const sock of sockets) {
      const alpn = (sock as { _tlsOptions?: { ALPNProtocols?: unknown } })._tlsOptions?.ALPNProtocols;
      assert.equal(alpn, SHARED_ALPN_H2, 'the per-connection ALPN Buffer was replaced by the shared one');
    }
    for (const s of streams) s.cancel();
  });

  it('10,000 stream open/close cycles over 10 connections that come and go leave no state behind', { timeout: 120_000 }, async () => {
    h = await startHarness();
    for (let conn = 0; conn < 10; conn++) {
      const c = await h.client(`spiffe://example.org/cycler-${conn}`, { id: `cycler-${conn}`, cluster: 'c' });
      for (let batch = 0; batch < 10; batch++) {
        const streams = Array.from({ length: 100 }, (_, i) => {
          const s = c.streamSecrets();
          s.request([i % 3 === 0 ? 'ROOTCA' : 'default']);
          return s;
        });
        await Promise.all(streams.map((s) => s.next(10_000)));
        // Half cancel, half half-close: both must release the stream.
        streams.forEach((s, i) => (i % 2 === 0 ? s.cancel() : s.end()));
        await until(() => h!.running.sds.openStreams() === 0, 5000, 'streams to close');
        assert.equal(h.running.cache.size, 0);
      }
      c.close();
    }
    assert.equal(h.manual!.pendingTimers(), 1);
  });
});
