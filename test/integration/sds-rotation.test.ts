import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { startHarness, type Harness } from '../support/sds-harness.js';
import type { SotwResponse, SotwStream } from '../support/sds-client.js';

const WEB = 'spiffe://example.org/ns/default/sa/web';

function serialOf(r: SotwResponse): string {
  return new X509Certificate(r.secrets[0]!.tls_certificate!.certificate_chain.inline_bytes.toString()).serialNumber;
}

/** Records every response of several streams in arrival order. */
function record(streams: Record<string, SotwStream>): Array<{ stream: string; r: SotwResponse }> {
  const log: Array<{ stream: string; r: SotwResponse }> = [];
  for (const [name, s] of Object.entries(streams)) {
    const push = s.inbox.push.bind(s.inbox);
    s.inbox.push = (r: SotwResponse) => {
      log.push({ stream: name, r });
      push(r);
    };
  }
  return log;
}

describe('SDS pushes: renewal, bundle change, re-issue', { timeout: 60_000 }, () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it('pushes a renewed certificate at renewAt, before expiry, on every subscribed stream of the node', async () => {
    h = await startHarness({ ttlSeconds: 120 });
    const c = await h.client(WEB);
    const a = c.streamSecrets();
    const b = c.streamSecrets();
    a.request(['default']);
    b.request([WEB]);
    const [ra, rb] = [await a.next(), await b.next()];
    a.ack(ra);
    b.ack(rb);
    await a.expectSilence(100);
    h.manual!.advance(59_000);
    await a.expectSilence(200);
    h.manual!.advance(1_000); // renewAt = 60 s (renewFraction 0.5 of 120 s)
    const [na, nb] = [await a.next(), await b.next()];
    assert.notEqual(serialOf(na), serialOf(ra));
    assert.equal(serialOf(na), serialOf(nb), 'one renewal shared by both streams of the node');
    assert.equal(na.secrets[0]!.name, 'default');
    assert.equal(nb.secrets[0]!.name, WEB);
    assert.notEqual(na.version_info, ra.version_info);
    const notAfter = Date.parse(new X509Certificate(ra.secrets[0]!.tls_certificate!.certificate_chain.inline_bytes.toString()).validTo);
    assert.ok(h.clock.nowMs() < notAfter, 'pushed before the old certificate expired');
    assert.equal(await h.metric('meshca_sds_pushes_total', { reason: 'renewal' }), 2);
  });

  it('a failed renewal keeps serving the valid certificate and retries with backoff', async () => {
    h = await startHarness({ ttlSeconds: 120 });
    const c = await h.client(WEB);
    const s = c.streamSecrets();
    s.request(['default']);
    const r1 = await s.next();
    s.ack(r1);
    h.fake!.failNext(2, WEB);
    await h.manual!.advanceAsync(60_000);
    await s.expectSilence(200);
    await h.manual!.advanceAsync(1_000); // retry 1 s: fails again
    await s.expectSilence(200);
    await h.manual!.advanceAsync(2_000); // retry 2 s: succeeds
    const r2 = await s.next();
    assert.notEqual(serialOf(r2), serialOf(r1));
  });

  it('bundle change: the new ROOTCA is pushed before leaves from the new CA', async () => {
    h = await startHarness({ bootstrapClients: true });
    const c = await h.client(WEB);
    const cert = c.streamSecrets();
    const root = c.streamSecrets();
    cert.request(['default']);
    root.request(['ROOTCA']);
    const [rc, rr] = [await cert.next(), await root.next()];
    cert.ack(rc);
    root.ack(rr);
    const log = record({ cert, root });
    await h.fake!.rotateBundle({ dropOld: true });
    const newRoot = await root.next();
    const newCert = await cert.next();
    assert.equal(newRoot.secrets[0]!.validation_context!.trusted_ca!.inline_bytes.toString(), h.authority.bundle().pem);
    assert.notEqual(serialOf(newCert), serialOf(rc));
    assert.deepEqual(log.map((x) => x.stream), ['root', 'cert'], 'ROOTCA first, then the leaf');
    const anchor = new X509Certificate(h.authority.bundle().rootsDer[0]!);
    assert.ok(new X509Certificate(newCert.secrets[0]!.tls_certificate!.certificate_chain.inline_bytes.toString()).verify(anchor.publicKey));
    assert.ok((await h.metric('meshca_sds_pushes_total', { reason: 'bundle' })) >= 1);
  });

  it('a root that leaves the bundle closes the connections it authenticated; clients of other anchors keep their streams', async () => {
    h = await startHarness({ bootstrapClients: true });
    const now = h.clock.nowMs();
    // One client whose certificate chains to the authority's current root, one to the bootstrap CA.
    const leaf = await h.fake!.makeLeaf({ uris: ['spiffe://example.org/ns/default/sa/old'], notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000) });
    const underRoot = h.rawClient({ certPem: leaf.certPem, keyPem: leaf.keyPem }, { id: 'n-old', cluster: 'c' });
    const a = underRoot.streamSecrets();
    a.request(['ROOTCA']);
    a.ack(await a.next());
    const b = (await h.client(WEB)).streamSecrets();
    b.request(['ROOTCA']);
    b.ack(await b.next());
    await h.fake!.rotateBundle({ dropOld: true }); // the root is withdrawn (a compromise), not rotated with overlap
    const ended = await a.status();
    assert.notEqual(ended.code, grpc.status.OK, 'the stream authenticated by the withdrawn root ends');
    assert.equal((await b.next()).secrets[0]!.validation_context!.trusted_ca!.inline_bytes.toString(), h.authority.bundle().pem);
    const again = h.rawClient({ certPem: leaf.certPem, keyPem: leaf.keyPem }, { id: 'n-old', cluster: 'c' }).streamSecrets();
    again.request(['ROOTCA']);
    assert.notEqual((await again.status()).code, grpc.status.OK, 'and it cannot come back');
    b.cancel();
  });

  it('a new CA that keeps the old root in the bundle pushes ROOTCA but leaves certificates until renewAt', async () => {
    h = await startHarness();
    const c = await h.client(WEB);
    const cert = c.streamSecrets();
    const root = c.streamSecrets();
    cert.request(['default']);
    root.request(['ROOTCA']);
    const [rc, rr] = [await cert.next(), await root.next()];
    cert.ack(rc);
    root.ack(rr);
    await h.fake!.rotateBundle();
    const r2 = await root.next();
    assert.equal(h.authority.bundle().rootsDer.length, 2);
    assert.equal(r2.secrets[0]!.validation_context!.trusted_ca!.inline_bytes.toString(), h.authority.bundle().pem);
    await cert.expectSilence(300);
  });

  it('a bundle change reaches every stream once, with a version and nonce new to each; their ACKs get no reply', async () => {
    h = await startHarness();
    const streams: SotwStream[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await h.client(`spiffe://example.org/w/${i}`, { id: `n${i}`, cluster: 'c' });
      const s = c.streamSecrets();
      s.request(['ROOTCA', 'spiffe://example.org']);
      s.ack(await s.next());
      s.ack(await s.next());
      streams.push(s);
    }
    await h.fake!.rotateBundle();
    const pushes = await Promise.all(streams.map(async (s) => [await s.next(), await s.next()] as const));
    for (const [a, b] of pushes) {
      assert.deepEqual([a.secrets[0]!.name, b.secrets[0]!.name].sort(), ['ROOTCA', 'spiffe://example.org']);
      assert.notEqual(a.nonce, b.nonce, 'two responses on one stream never share a nonce');
      assert.notEqual(a.version_info, b.version_info);
      for (const r of [a, b]) assert.equal(r.secrets[0]!.validation_context!.trusted_ca!.inline_bytes.toString(), h.authority.bundle().pem);
    }
    pushes.forEach(([a, b], i) => {
      streams[i]!.ack(a);
      streams[i]!.ack(b);
    });
    for (const s of streams) await s.expectSilence(200);
    await h.fake!.rotateBundle();
    const again = await Promise.all(streams.map((s) => s.next()));
    const seen = new Set(pushes.flatMap(([a, b]) => [a.nonce, b.nonce]));
    for (const r of again) assert.ok(!seen.has(r.nonce), 'the next change comes with nonces not used before');
  });

  it('reissue-all pushes a new certificate to every stream', async () => {
    h = await startHarness();
    const streams: SotwStream[] = [];
    const first: SotwResponse[] = [];
    for (let i = 0; i < 5; i++) {
      const c = await h.client(`spiffe://example.org/w/${i}`, { id: `n${i}`, cluster: 'c' });
      const s = c.streamSecrets();
      s.request(['default']);
      const r = await s.next();
      s.ack(r);
      streams.push(s);
      first.push(r);
    }
    h.fake!.reissueAll();
    for (let i = 0; i < 5; i++) {
      const r = await streams[i]!.next();
      assert.notEqual(serialOf(r), serialOf(first[i]!));
    }
    assert.equal(await h.metric('meshca_sds_pushes_total', { reason: 'reissue' }), 5);
  });

  it('reports the nearest expiry of served certificates', async () => {
    h = await startHarness({ ttlSeconds: 600 });
    const c = await h.client(WEB);
    const s = c.streamSecrets();
    s.request(['default']);
    await s.next();
    const v = await h.metric('meshca_sds_served_cert_nearest_expiry_seconds');
    assert.ok(v > 590 && v <= 600, `nearest expiry ${v}`);
  });
});
