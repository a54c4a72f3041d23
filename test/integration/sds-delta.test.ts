import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { startHarness, type Harness } from '../support/sds-harness.js';
import type { SdsClient } from '../support/sds-client.js';

const WEB = 'spiffe://example.org/ns/default/sa/web';

describe('SDS DeltaSecrets', { timeout: 60_000 }, () => {
  let h: Harness;
  let web: SdsClient;
  before(async () => {
    h = await startHarness();
    web = await h.client(WEB, { id: 'delta-node', cluster: 'web' });
  });
  after(async () => h.close());

  it('answers every subscribed name with Resource{name, version, resource} and a nonce; an ACK gets no reply', async () => {
    const s = web.deltaSecrets();
    s.send({ resource_names_subscribe: ['default', 'ROOTCA'] });
    const got = [await s.next(), await s.next()];
    const names = got.flatMap((r) => r.resources.map((x) => x.name)).sort();
    assert.deepEqual(names, ['ROOTCA', 'default']);
    for (const r of got) {
      assert.equal(r.type_url, 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret');
      assert.ok(r.nonce.length > 0);
      assert.ok(r.system_version_info.length > 0);
      for (const res of r.resources) {
        assert.ok(res.version.length > 0);
        assert.equal(res.resource!.type_url, r.type_url);
      }
      assert.equal(r.secrets[0]!.name, r.resources[0]!.name);
      s.ack(r);
    }
    await s.expectSilence(300);
    s.cancel();
  });

  it('a pure unsubscribe needs no reply; subscribing again (even an already subscribed name) is answered', async () => {
    const s = web.deltaSecrets();
    s.send({ resource_names_subscribe: ['ROOTCA'] });
    const r1 = await s.next();
    s.ack(r1);
    s.send({ resource_names_unsubscribe: ['ROOTCA', 'never-subscribed'] });
    await s.expectSilence(300);
    s.send({ resource_names_subscribe: ['ROOTCA'] });
    const r2 = await s.next();
    assert.equal(r2.resources[0]!.name, 'ROOTCA');
    s.ack(r2);
    s.send({ resource_names_subscribe: ['ROOTCA'] });
    const r3 = await s.next();
    assert.equal(r3.resources[0]!.name, 'ROOTCA');
    assert.equal(r3.resources[0]!.version, r2.resources[0]!.version, 'same content, same resource version');
    assert.notEqual(r3.nonce, r2.nonce);
    s.cancel();
  });

  it('with the wildcard subscribed, unsubscribing an extra name lists it in removed_resources', async () => {
    const s = web.deltaSecrets();
    s.send({ resource_names_subscribe: ['*', 'ALL'] });
    const got = [await s.next(), await s.next(), await s.next()];
    assert.deepEqual(got.map((r) => r.resources[0]!.name).sort(), ['ALL', 'ROOTCA', 'default']);
    for (const r of got) s.ack(r);
    s.send({ resource_names_unsubscribe: ['ALL'] });
    const r = await s.next();
    assert.deepEqual(r.removed_resources, ['ALL']);
    assert.equal(r.resources.length, 0);
    s.cancel();
  });

  it('subscribing the wildcard again is answered with every resource it covers', async () => {
    const s = web.deltaSecrets();
    s.send({ resource_names_subscribe: ['*'] });
    const got = [await s.next(), await s.next()];
    assert.deepEqual(got.map((r) => r.resources[0]!.name).sort(), ['ROOTCA', 'default']);
    for (const r of got) s.ack(r);
    s.send({ resource_names_subscribe: ['*'] });
    const again = [await s.next(), await s.next()];
    assert.deepEqual(again.map((r) => r.resources[0]!.name).sort(), ['ROOTCA', 'default']);
    for (const r of again) s.ack(r);
    await s.expectSilence(200);
    s.cancel();
  });

  it('a reconnect with initial_resource_versions skips unchanged secrets and sends changed ones', async () => {
    const s1 = web.deltaSecrets();
    s1.send({ resource_names_subscribe: ['default', 'ROOTCA'] });
    const got = [await s1.next(), await s1.next()];
    const versions = Object.fromEntries(got.map((r) => [r.resources[0]!.name, r.resources[0]!.version]));
    // Keep the node's key alive through the "reconnect" with a second stream of the same node.
    const s2 = web.deltaSecrets();
    s2.send({ resource_names_subscribe: ['default', 'ROOTCA'], initial_resource_versions: versions });
    await s2.expectSilence(300);
    const s3 = web.deltaSecrets();
    s3.send({ resource_names_subscribe: ['default', 'ROOTCA'], initial_resource_versions: { default: versions.default!, ROOTCA: 'stale' } });
    const r = await s3.next();
    assert.equal(r.resources[0]!.name, 'ROOTCA');
    await s3.expectSilence(200);
    s1.cancel();
    s2.cancel();
    s3.cancel();
  });

  it('a NACK is counted and the stream stays open; subscription changes in it still apply', async () => {
    const before = await h.metric('meshca_sds_nacks_total', { method: 'DeltaSecrets' });
    const s = web.deltaSecrets();
    s.send({ resource_names_subscribe: ['ROOTCA'] });
    const r1 = await s.next();
    s.send({ response_nonce: r1.nonce, error_detail: { code: 13, message: 'rejected' }, resource_names_subscribe: ['ALL'] });
    const r2 = await s.next();
    assert.equal(r2.resources[0]!.name, 'ALL');
    assert.equal(await h.metric('meshca_sds_nacks_total', { method: 'DeltaSecrets' }), before + 1);
    assert.equal(s.endStatus, undefined);
    s.cancel();
  });

  it('pushes a bundle change as a new resource version', async () => {
    const s = web.deltaSecrets();
    s.send({ resource_names_subscribe: ['ROOTCA'] });
    const r1 = await s.next();
    s.ack(r1);
    await h.fake!.rotateBundle();
    const r2 = await s.next();
    assert.equal(r2.resources[0]!.name, 'ROOTCA');
    assert.notEqual(r2.resources[0]!.version, r1.resources[0]!.version);
    assert.equal(r2.secrets[0]!.validation_context!.trusted_ca!.inline_bytes.toString(), h.authority.bundle().pem);
    s.cancel();
  });

  it('unknown names and wrong type_url end the stream with INVALID_ARGUMENT', async () => {
    const s = web.deltaSecrets();
    s.send({ resource_names_subscribe: ['kubernetes://foo'] });
    const st = await s.status();
    assert.equal(st.code, grpc.status.INVALID_ARGUMENT);
    assert.match(st.details, /kubernetes:\/\/foo/);
    const t = web.deltaSecrets();
    t.send({ resource_names_subscribe: ['ROOTCA'], type_url: 'type.googleapis.com/envoy.config.listener.v3.Listener' });
    assert.equal((await t.status()).code, grpc.status.INVALID_ARGUMENT);
  });
});
