import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startHarness, type Harness } from '../support/sds-harness.js';
import { SdsClient } from '../support/sds-client.js';
import { FakeAuthority } from '../fakes/authority.js';

const WEB = 'spiffe://example.org/ns/default/sa/web';

async function expectUnauthenticated(c: SdsClient, pattern: RegExp): Promise<void> {
  const s = c.streamSecrets();
  s.request(['ROOTCA']);
  const st = await s.status();
  assert.equal(st.code, grpc.status.UNAUTHENTICATED, `got ${st.code} ${st.details}`);
  assert.match(st.details, pattern);
  await assert.rejects(c.fetchSecrets(['ROOTCA']), (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED);
}

describe('SDS caller authentication', { timeout: 60_000 }, () => {
  let h: Harness;
  let dir: string;
  let bootstrap: FakeAuthority;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshca-sds-auth-'));
    // A separate "bootstrap" CA (server.grpc.clientCaFile) for proxies' bootstrap certificates.
    const { ManualClock } = await import('../fakes/clock.js');
    bootstrap = await FakeAuthority.create({ clock: new ManualClock(Date.now()), trustDomain: 'example.org' });
    const caFile = join(dir, 'bootstrap-ca.pem');
    await writeFile(caFile, bootstrap.bundle().pem);
    h = await startHarness({ clientCaFile: caFile, uds: { path: join(dir, 'sock', 'sds.sock'), identity: 'spiffe://example.org/node-agent' } });
  });
  after(async () => {
    await h.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('no client certificate: UNAUTHENTICATED', async () => {
    await expectUnauthenticated(h.rawClient({}), /no client certificate/);
    assert.ok((await h.metric('meshca_auth_failures_total', { reason: 'no-certificate' })) >= 1);
  });

  it('a certificate from a foreign CA: UNAUTHENTICATED', async () => {
    const foreign = await FakeAuthority.create({ clock: h.clock, trustDomain: 'example.org' });
    const now = h.clock.nowMs();
    const leaf = await foreign.makeLeaf({ uris: [WEB], notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000) });
    await expectUnauthenticated(h.rawClient({ certPem: leaf.certPem, keyPem: leaf.keyPem }), /does not chain/);
    assert.ok((await h.metric('meshca_auth_failures_total', { reason: 'untrusted' })) >= 1);
  });

  it('an expired certificate: UNAUTHENTICATED', async () => {
    const now = h.clock.nowMs();
    const leaf = await h.fake!.makeLeaf({ uris: [WEB], notBefore: new Date(now - 7200_000), notAfter: new Date(now - 60_000) });
    await expectUnauthenticated(h.rawClient({ certPem: leaf.certPem, keyPem: leaf.keyPem }), /expired/);
    assert.ok((await h.metric('meshca_auth_failures_total', { reason: 'expired' })) >= 1);
  });

  it('an expired certificate with an empty subject (as meshca issues them): UNAUTHENTICATED, not INTERNAL', async () => {
    const now = h.clock.nowMs();
    const before = await h.metric('meshca_auth_failures_total', { reason: 'expired' });
    const leaf = await h.fake!.makeLeaf({ uris: [WEB], subject: '', notBefore: new Date(now - 7200_000), notAfter: new Date(now - 60_000) });
    await expectUnauthenticated(h.rawClient({ certPem: leaf.certPem, keyPem: leaf.keyPem }), /client certificate \(no subject\) expired at/);
    assert.equal(await h.metric('meshca_auth_failures_total', { reason: 'expired' }), before + 2);
  });

  it('a certificate without a SPIFFE ID, or with one of another trust domain: UNAUTHENTICATED', async () => {
    const now = h.clock.nowMs();
    const span = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000) };
    const noId = await h.fake!.makeLeaf({ uris: [], dnsNames: ['web.local'], ...span });
    await expectUnauthenticated(h.rawClient({ certPem: noId.certPem, keyPem: noId.keyPem }), /exactly one URI SAN/);
    const twoIds = await h.fake!.makeLeaf({ uris: [WEB, 'spiffe://example.org/other'], ...span });
    await expectUnauthenticated(h.rawClient({ certPem: twoIds.certPem, keyPem: twoIds.keyPem }), /exactly one URI SAN/);
    const otherTd = await h.fake!.makeLeaf({ uris: ['spiffe://evil.org/web'], ...span });
    await expectUnauthenticated(h.rawClient({ certPem: otherTd.certPem, keyPem: otherTd.keyPem }), /not in trust domain/);
    assert.ok((await h.metric('meshca_auth_failures_total', { reason: 'no-spiffe-id' })) >= 3);
  });

  it('a CA certificate as client certificate: UNAUTHENTICATED', async () => {
    const now = h.clock.nowMs();
    const ca = await h.fake!.makeLeaf({ uris: [WEB], isCa: true, notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000) });
    await expectUnauthenticated(h.rawClient({ certPem: ca.certPem, keyPem: ca.keyPem }), /CA certificate/);
  });

  it('a bearer token without a token authenticator configured: the client certificate decides; with no certificate, UNAUTHENTICATED', async () => {
    // istio-agent sends its ServiceAccount token on every call, also over mTLS; the token cannot be checked here, so
    // it grants nothing and the certificate's identity is the caller's.
    const c = await h.client(WEB);
    const fetchWith = (client: typeof c.client, md: grpc.Metadata, names: string[]) =>
      new Promise<{ resources: Array<{ value: Buffer }> }>((resolve, reject) => {
        client.FetchSecrets(
          { node: { id: 'n', cluster: 'c' }, resource_names: names, type_url: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret' },
          md,
          (err: grpc.ServiceError | null, r: { resources: Array<{ value: Buffer }> }) => (err ? reject(err) : resolve(r)),
        );
      });
    const md = new grpc.Metadata();
    md.set('authorization', 'Bearer abc.def.ghi');
    const own = await fetchWith(c.client, md, ['default']);
    assert.equal(own.resources.length, 1, 'served as the certificate identity');
    await assert.rejects(fetchWith(c.client, md, ['spiffe://example.org/other']), (e: grpc.ServiceError) => e.code === grpc.status.PERMISSION_DENIED);
    const anon = h.rawClient({});
    await assert.rejects(
      fetchWith(anon.client, md, ['ROOTCA']),
      (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED && /bearer token/.test(e.details),
    );
  });

  it('a bootstrap certificate from server.grpc.clientCaFile is accepted', async () => {
    const now = h.clock.nowMs();
    const leaf = await bootstrap.makeLeaf({ uris: [WEB], notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000) });
    const c = h.rawClient({ certPem: leaf.certPem, keyPem: leaf.keyPem });
    const r = await c.fetchSecrets(['default']);
    assert.equal(r.secrets[0]!.name, 'default');
  });

  it('the Unix socket is mode 0600 and its callers act as server.uds.identity', async () => {
    const path = join(dir, 'sock', 'sds.sock');
    const st = await stat(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    // The directory meshca created for it is private too: nobody else may replace the socket.
    assert.equal((await stat(join(dir, 'sock'))).mode & 0o777, 0o700);
    const c = new SdsClient({ target: `unix:${path}`, node: { id: 'agent', cluster: 'node' } });
    try {
      const r = await c.fetchSecrets(['default']);
      const { X509Certificate } = await import('node:crypto');
      const cert = new X509Certificate(r.secrets[0]!.tls_certificate!.certificate_chain.inline_bytes.toString());
      assert.equal(cert.subjectAltName, 'URI:spiffe://example.org/node-agent');
    } finally {
      c.close();
    }
  });

  it('the server presents spiffe://<td>/meshca with the configured DNS and IP SANs', async () => {
    const svid = h.running.server.servingSvid!;
    assert.equal(svid.spiffeId, 'spiffe://example.org/meshca');
    const { X509Certificate } = await import('node:crypto');
    const cert = new X509Certificate(svid.chainDer[0]!);
    assert.match(cert.subjectAltName!, /URI:spiffe:\/\/example\.org\/meshca/);
    assert.match(cert.subjectAltName!, /DNS:localhost/);
    assert.match(cert.subjectAltName!, /IP Address:127\.0\.0\.1/);
  });

  it('the serving certificate is re-issued at renewAt and new connections get it without a restart', async () => {
    const first = h.running.server.servingSvid!;
    h.manual!.set(first.renewAt);
    for (let i = 0; i < 50 && h.running.server.servingSvid === first; i++) await new Promise((r) => setTimeout(r, 20));
    const second = h.running.server.servingSvid!;
    assert.notEqual(second.serialHex, first.serialHex);
    // The manual clock is now ahead of the wall clock, so only the serial is compared (no validity check).
    const { connect } = await import('node:tls');
    const seen = await new Promise<string>((resolve, reject) => {
      const sock = connect({ host: '127.0.0.1', port: h.running.port, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['h2'] }, () => {
        const serial = sock.getPeerCertificate().serialNumber;
        sock.destroy();
        resolve(serial);
      });
      sock.on('error', reject);
    });
    assert.equal(seen.toLowerCase(), second.serialHex.toLowerCase());
  });
});
