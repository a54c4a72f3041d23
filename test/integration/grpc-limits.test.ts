import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from '../support/sds-harness.js';

describe('connection limits', { timeout: 30_000 }, () => {
  it('a connection may hold server.grpc.maxConcurrentStreams streams: the server advertises it, and a stream past it waits for a free one', async () => {
    const h = await startHarness({ maxConcurrentStreams: 10 });
    try {
      const c = await h.client('spiffe://example.org/ns/default/sa/web');
      const open = Array.from({ length: 10 }, () => c.streamSecrets());
      for (const s of open) s.request(['ROOTCA']);
      await Promise.all(open.map((s) => s.next()));
      const extra = c.streamSecrets();
      extra.request(['ROOTCA']);
      await extra.expectSilence(500);
      open[0]!.cancel();
      assert.equal((await extra.next()).secrets[0]!.name, 'ROOTCA');
      for (const s of [...open.slice(1), extra]) s.cancel();
    } finally {
      await h.close();
    }
  });
});
