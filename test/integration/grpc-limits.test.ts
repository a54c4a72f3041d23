import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as http2 from 'node:http2';
import { startHarness } from '../support/sds-harness.js';

describe('connection limits', { timeout: 30_000 }, () => {
  it('a connection may hold server.grpc.maxConcurrentStreams streams: the server advertises the limit and serves that many', async () => {
    const h = await startHarness({ maxConcurrentStreams: 10 });
    try {
      const now = h.clock.nowMs();
      const leaf = await h.fake!.makeLeaf({ uris: ['spiffe://example.org/ns/default/sa/web'], subject: '', notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000) });
      const session = http2.connect(`https://${h.target}`, { ca: h.authority.bundle().pem, cert: leaf.certPem, key: leaf.keyPem, servername: 'localhost' });
      try {
        const settings = await new Promise<http2.Settings>((resolve, reject) => {
          session.once('remoteSettings', resolve);
          session.once('error', reject);
        });
        assert.equal(settings.maxConcurrentStreams, 10, 'SETTINGS_MAX_CONCURRENT_STREAMS');
      } finally {
        session.close();
      }
      // A client that respects the setting (Envoy does) gets every stream up to it served. (One that sends more is
      // refused by the HTTP/2 layer: Node 20's client queues the extra stream instead, Node 22's sends it.)
      const c = await h.client('spiffe://example.org/ns/default/sa/web');
      const open = Array.from({ length: 10 }, () => c.streamSecrets());
      for (const s of open) s.request(['ROOTCA']);
      for (const r of await Promise.all(open.map((s) => s.next()))) assert.equal(r.secrets[0]!.name, 'ROOTCA');
      for (const s of open) s.cancel();
    } finally {
      await h.close();
    }
  });
});
