import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { createServer as createHttpsServer, request, type Server } from 'node:https';
import { connect, createServer as createTlsServer } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startInstance, type Instance } from '../support/meshca-instance.js';
import { unary, type ApiClients } from '../support/api-client.js';
import { SdsClient, clientProtos } from '../support/sds-client.js';
import { federationStoreKey } from '../../src/bundle/federation.js';
import { checkOwnBundleDoc } from '../support/spiffe-bundle-check.js';

const A = 'a.test';
const B = 'b.test';
const A_WL = `spiffe://${A}/ns/default/sa/frontend`;
const B_WL = `spiffe://${B}/ns/default/sa/backend`;

function uriOf(cert: { subjectaltname?: string }): string[] {
  return (cert.subjectaltname ?? '').split(', ').filter((s) => s.startsWith('URI:')).map((s) => s.slice(4));
}

/**
 * A workload of domain B serves TLS with its SVID; a client that trusts only `caPem` connects and checks the peer's
 * SPIFFE ID. Resolves with the verified peer ID, rejects on any verification failure.
 */
async function handshake(server: { certPem: string; keyPem: string }, caPem: string, expectId: string): Promise<string> {
  const srv = createTlsServer({ cert: server.certPem, key: server.keyPem }, (s) => s.end());
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    return await new Promise<string>((resolve, reject) => {
      const sock = connect({
        host: '127.0.0.1',
        port: (srv.address() as AddressInfo).port,
        ca: caPem,
        checkServerIdentity: (_h, cert) => (uriOf(cert)[0] === expectId ? undefined : new Error(`peer is ${uriOf(cert).join(',')}`)),
      });
      sock.on('secureConnect', () => {
        const id = uriOf(sock.getPeerCertificate())[0]!;
        sock.destroy();
        resolve(id);
      });
      sock.on('error', reject);
    });
  } finally {
    srv.close();
  }
}

/** Fingerprint of the certificate a TLS server presents. */
function endpointLeaf(port: number, caPem: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port, ca: caPem, checkServerIdentity: () => undefined });
    sock.on('secureConnect', () => {
      const fp = sock.getPeerCertificate().fingerprint256;
      sock.destroy();
      resolve(fp);
    });
    sock.on('error', reject);
  });
}

async function eventually(cond: () => boolean | Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function httpsGet(url: string, opts: { ca: string; method?: string; expectId?: string }): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: opts.method ?? 'GET',
        ca: opts.ca,
        agent: false,
        ...(opts.expectId ? { checkServerIdentity: (_h: string, c: { subjectaltname?: string }) => (uriOf(c)[0] === opts.expectId ? undefined : new Error('wrong id')) } : {}),
      },
      (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('two meshca instances federated over https_spiffe bundle endpoints', { timeout: 90_000 }, () => {
  let a: Instance;
  let b: Instance;
  let dir: string;
  let aWl: ApiClients;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshca-fed-'));
    const ep = { address: '127.0.0.1:0', profile: 'https_spiffe', refreshHint: '1s' };
    a = await startInstance({ trustDomain: A, bundleEndpoint: ep });
    b = await startInstance({ trustDomain: B, bundleEndpoint: ep });
    // Bootstrap bundles exchanged out of band, as an operator would.
    await writeFile(join(dir, 'a-bootstrap.pem'), a.core.authority.bundle().pem);
    await writeFile(join(dir, 'b-bootstrap.json'), b.registry.spiffeBundleJson(B)!);
    await a.federate({
      trustDomains: [
        {
          trustDomain: B,
          bundleEndpointUrl: `https://127.0.0.1:${b.endpoint!.port}/`,
          profile: 'https_spiffe',
          endpointSpiffeId: `spiffe://${B}/meshca/bundle-endpoint`,
          bootstrapBundleFile: join(dir, 'b-bootstrap.json'),
        },
      ],
    });
    await b.federate({
      trustDomains: [
        {
          trustDomain: A,
          bundleEndpointUrl: `https://127.0.0.1:${a.endpoint!.port}/bundle`,
          profile: 'https_spiffe',
          endpointSpiffeId: `spiffe://${A}/meshca/bundle-endpoint`,
          bootstrapBundleFile: join(dir, 'a-bootstrap.pem'),
        },
      ],
    });
    await a.federation!.refreshNow(B);
    await b.federation!.refreshNow(A);
    aWl = await a.clientsAs(A_WL);
  });
  after(async () => {
    aWl?.close();
    await a?.close();
    await b?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the bundle endpoint serves our bundle as SPIFFE JWKS over https_spiffe, GET only, no client certificate', async () => {
    const url = `https://127.0.0.1:${a.endpoint!.port}/`;
    const r = await httpsGet(url, { ca: a.core.authority.bundle().pem, expectId: `spiffe://${A}/meshca/bundle-endpoint` });
    assert.equal(r.status, 200);
    assert.equal(r.type, 'application/json');
    const doc = JSON.parse(r.body);
    assert.equal(doc.spiffe_sequence, a.core.authority.bundle().sequence);
    assert.equal(doc.spiffe_refresh_hint, 1);
    assert.equal(doc.keys.length, a.core.authority.bundle().rootsDer.length);
    for (const k of doc.keys) {
      assert.equal(k.use, 'x509-svid');
      assert.equal(k.kid, undefined);
      assert.equal(k.x5c.length, 1);
      assert.ok(new X509Certificate(Buffer.from(k.x5c[0], 'base64')).ca);
      assert.equal(k.kty, 'EC');
    }
    const post = await httpsGet(url, { ca: a.core.authority.bundle().pem, method: 'POST', expectId: `spiffe://${A}/meshca/bundle-endpoint` });
    assert.equal(post.status, 405);
    checkOwnBundleDoc(r.body, { rootsDer: a.core.authority.bundle().rootsDer, sequence: a.core.authority.bundle().sequence, refreshHintSeconds: 1 }, 'bundle endpoint');
  });

  test('BundleService of A serves B\'s bundle, kept apart from A\'s own', async () => {
    const res = await unary(aWl.bundle, 'GetBundle', {});
    assert.deepEqual(res.bundles.map((x: { trust_domain: string }) => x.trust_domain), [A, B]);
    const fb = res.bundles[1];
    assert.equal(fb.source, 'BUNDLE_SOURCE_FEDERATED_ENDPOINT');
    assert.equal(Number(fb.sequence), b.core.authority.bundle().sequence);
    assert.deepEqual(fb.x509_authorities.map((d: Buffer) => d.toString('hex')), b.core.authority.bundle().rootsDer.map((d) => d.toString('hex')));
  });

  test('a workload of A verifies a certificate of B using only what meshca A served (BundleService and SDS spiffe://b.test)', async () => {
    const bSvid = await b.credentialsFor(B_WL);
    // 1. BundleService.
    const res = await unary(aWl.bundle, 'GetBundle', { trust_domains: [B] });
    assert.equal(await handshake(bSvid, res.bundles[0].x509_authorities_pem, B_WL), B_WL);
    // A's own bundle does not validate B's workload (domains never merged).
    await assert.rejects(handshake(bSvid, a.core.authority.bundle().pem, B_WL));
    // 2. SDS on A's gRPC server, as Envoy would ask for it.
    const creds = await a.credentialsFor(A_WL);
    const sds = new SdsClient({ target: `127.0.0.1:${a.grpcPort}`, tls: { caPem: a.rootsPem(), certPem: creds.certPem, keyPem: creds.keyPem }, node: { id: 'n1', cluster: 'c1' } });
    try {
      const r = await sds.fetchSecrets([`spiffe://${B}`]);
      const vc = r.secrets[0]!.validation_context!;
      let pem: string;
      if (vc.custom_validator_config) {
        const cfg = clientProtos().spiffeValidator.deserialize(vc.custom_validator_config.typed_config.value) as { trust_domains: { name: string; trust_bundle: { inline_bytes: Buffer } }[] };
        assert.deepEqual(cfg.trust_domains.map((t) => t.name), [B]);
        pem = cfg.trust_domains[0]!.trust_bundle.inline_bytes.toString();
      } else {
        pem = vc.trusted_ca!.inline_bytes.toString();
      }
      assert.equal(await handshake(bSvid, pem, B_WL), B_WL);
      const all = await sds.fetchSecrets(['ALL']);
      const cfg = clientProtos().spiffeValidator.deserialize(all.secrets[0]!.validation_context!.custom_validator_config!.typed_config.value) as { trust_domains: { name: string }[] };
      assert.deepEqual(cfg.trust_domains.map((t) => t.name).sort(), [A, B]);
    } finally {
      sds.close();
    }
  });

  test('a root rotation in B reaches A before B\'s endpoint uses it, and WatchBundle pushes it', async () => {
    const stream = aWl.bundle.WatchBundle({ trust_domains: [B] });
    const msgs: { bundles: { sequence: string; x509_authorities: Buffer[] }[] }[] = [];
    stream.on('data', (d: (typeof msgs)[number]) => msgs.push(d));
    stream.on('error', () => undefined);
    try {
      await eventually(() => msgs.length >= 1, 'first WatchBundle message');
      const before = Number(msgs[0]!.bundles[0]!.sequence);
      await b.core.authority.rotate({ root: true });
      assert.ok(b.core.authority.bundle().sequence > before);
      await a.federation!.refreshNow(B);
      await eventually(() => msgs.length >= 2, `pushed change (${JSON.stringify(a.federation!.status())} ${a.registry.get(B)?.sequence} ${b.registry.own().sequence})`);
      assert.equal(Number(msgs[1]!.bundles[0]!.sequence), b.core.authority.bundle().sequence);
      assert.equal(msgs[1]!.bundles[0]!.x509_authorities.length, b.core.authority.bundle().rootsDer.length);
      const st = a.federation!.status().find((s) => s.trustDomain === B)!;
      assert.equal(st.lastError, undefined);
      // B's endpoint switches to an SVID under the new root within 3 refresh hints (3 s here); A, verifying with the
      // latest bundle it fetched, keeps up.
      const oldLeaf = await endpointLeaf(b.endpoint!.port, b.core.authority.bundle().pem);
      await eventually(async () => (await endpointLeaf(b.endpoint!.port, b.core.authority.bundle().pem)) !== oldLeaf, 'endpoint SVID re-issued', 10_000);
      await a.federation!.refreshNow(B);
      assert.equal(a.federation!.status().find((s) => s.trustDomain === B)!.lastError, undefined);
    } finally {
      stream.cancel();
    }
  });

  test('the last good bundle is persisted in the state store', async () => {
    const raw = await a.core.store.read(federationStoreKey(B));
    assert.ok(raw);
    const doc = JSON.parse(raw.toString());
    assert.equal(doc.trustDomain, B);
    assert.equal(JSON.parse(doc.bundle).spiffe_sequence, a.registry.get(B)!.sequence);
  });

  test('fail/an endpoint presenting another SPIFFE ID is refused and nothing changes', async () => {
    const wrong = await startInstance({ trustDomain: 'c.test' });
    try {
      await writeFile(join(dir, 'wrong-id.pem'), b.core.authority.bundle().pem);
      const fed = await wrong.federate({
        trustDomains: [
          {
            trustDomain: B,
            bundleEndpointUrl: `https://127.0.0.1:${b.endpoint!.port}/`,
            profile: 'https_spiffe',
            endpointSpiffeId: `spiffe://${B}/not-the-endpoint`,
            bootstrapBundleFile: join(dir, 'wrong-id.pem'),
          },
        ],
      });
      await fed.refreshNow(B);
      assert.equal(wrong.registry.get(B), undefined);
      assert.match(fed.status()[0]!.lastError!, /presents SPIFFE ID spiffe:\/\/b\.test\/meshca\/bundle-endpoint, expected spiffe:\/\/b\.test\/not-the-endpoint/);
    } finally {
      await wrong.close();
    }
  });
  test('https_spiffe redirects: followed when the target presents the same SPIFFE ID, refused otherwise', async () => {
    const epId = `spiffe://${B}/meshca/bundle-endpoint`;
    const same = await b.core.authority.issue({ spiffeId: epId, source: 'cli' });
    const other = await b.core.authority.issue({ spiffeId: `spiffe://${B}/elsewhere`, source: 'cli' });
    const serve = (creds: { chainPem: string; privateKeyPem?: string }, handler: (res: import('node:http').ServerResponse) => void) =>
      new Promise<Server>((resolve) => {
        const s = createHttpsServer({ cert: creds.chainPem, key: creds.privateKeyPem! }, (_req, res) => handler(res));
        s.listen(0, '127.0.0.1', () => resolve(s));
      });
    const doc = b.registry.spiffeBundleJson(B)!;
    const wrongTarget = await serve(other, (res) => res.writeHead(200, { 'content-type': 'application/json' }).end(doc));
    const toWrong = await serve(same, (res) => res.writeHead(302, { location: `https://127.0.0.1:${(wrongTarget.address() as AddressInfo).port}/` }).end());
    const toRight = await serve(same, (res) => res.writeHead(307, { location: `https://127.0.0.1:${b.endpoint!.port}/` }).end());
    const c = await startInstance({ trustDomain: 'c2.test' });
    try {
      await writeFile(join(dir, 'redir.pem'), b.core.authority.bundle().pem);
      const entry = (port: number) => ({ trustDomain: B, bundleEndpointUrl: `https://127.0.0.1:${port}/`, profile: 'https_spiffe', endpointSpiffeId: epId, bootstrapBundleFile: join(dir, 'redir.pem') });
      const f1 = await c.federate({ trustDomains: [entry((toWrong.address() as AddressInfo).port)] });
      await f1.refreshNow(B);
      assert.equal(c.registry.get(B), undefined);
      assert.match(f1.status()[0]!.lastError!, /presents SPIFFE ID spiffe:\/\/b\.test\/elsewhere/);
      await f1.close();
      const f2 = await c.federate({ trustDomains: [entry((toRight.address() as AddressInfo).port)] });
      await f2.refreshNow(B);
      assert.equal(f2.status()[0]!.lastError, undefined);
      assert.equal(c.registry.get(B)!.rootsDer.length, b.core.authority.bundle().rootsDer.length);
    } finally {
      await c.close();
      for (const s of [wrongTarget, toWrong, toRight]) {
        s.closeAllConnections();
        s.close();
      }
    }
  });
});

describe('federation over https_web: malformed bundles, restarts, static files', { timeout: 90_000 }, () => {
  let web: Instance;
  let dir: string;
  let server: Server;
  let port: number;
  let answer: { status: number; body: string };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshca-fedweb-'));
    // A Web-PKI-style server certificate for localhost from an unrelated CA (here: another meshca's SVID).
    web = await startInstance({ trustDomain: 'webpki.test' });
    const svidCreds = await web.core.authority.issue({ spiffeId: 'spiffe://webpki.test/www', dnsNames: ['localhost'], source: 'cli' });
    await writeFile(join(dir, 'ca.pem'), web.core.authority.bundle().pem);
    server = createHttpsServer({ cert: svidCreds.chainPem, key: svidCreds.privateKeyPem! }, (_req, res) => {
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server?.close();
    await web?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const fedCfg = () => ({
    trustDomains: [{ trustDomain: 'remote.test', bundleEndpointUrl: `https://localhost:${port}/`, profile: 'https_web', caFile: join(dir, 'ca.pem') }],
  });

  test('malformed JWKS is logged with a clear error and counted; the last good bundle stays; it survives a restart', async () => {
    const remote = await startInstance({ trustDomain: 'remote.test' });
    const goodDoc = remote.registry.spiffeBundleJson('remote.test')!;
    await remote.close();
    const dataDir = await mkdtemp(join(tmpdir(), 'meshca-fedstate-'));
    try {
      answer = { status: 200, body: goodDoc };
      const m = await startInstance({ trustDomain: 'local.test', dataDir });
      try {
        await m.federate(fedCfg());
        await m.federation!.refreshNow('remote.test');
        const good = m.registry.get('remote.test')!;
        assert.equal(good.rootsDer.length, 1);
        const bad: [string, string][] = [
          ['{"keys": [', /not valid JSON/.source],
          ['{"spiffe_sequence": 5}', /"keys" is required/.source],
          [goodDoc.replace('"keys":', '"keys": [], "keys":'), /duplicate key "keys"/.source],
          [JSON.stringify({ ...JSON.parse(goodDoc), keys: JSON.parse(goodDoc).keys.map((k: Record<string, unknown>) => ({ ...k, x5c: ['!!!'] })) }), /x5c\[0\] is not standard base64/.source],
          [JSON.stringify({ ...JSON.parse(goodDoc), keys: JSON.parse(goodDoc).keys.map((k: Record<string, unknown>) => ({ ...k, kid: 'x' })) }), /must not have a "kid"/.source],
        ];
        for (const [body, re] of bad) {
          answer = { status: 200, body };
          await m.federation!.refreshNow('remote.test');
          const st = m.federation!.status()[0]!;
          assert.match(st.lastError ?? '', new RegExp(re));
          assert.equal(m.registry.get('remote.test'), good, 'last good bundle kept');
          const line = m.logs.find((l) => l.msg === 'federated bundle refresh failed' && String(l.err).match(new RegExp(re)));
          assert.equal(line?.reason, 'malformed');
        }
        const metrics = await m.core.metrics.getSingleMetricAsString('meshca_federation_errors_total');
        assert.match(metrics, /meshca_federation_errors_total\{trust_domain="remote.test",reason="malformed"\} 5/);
        answer = { status: 503, body: 'down' };
        await m.federation!.refreshNow('remote.test');
        assert.match(m.federation!.status()[0]!.lastError!, /HTTP 503/);
      } finally {
        await m.close();
      }
      // Restart while the endpoint is down: the persisted copy is trusted at once.
      const again = await startInstance({ trustDomain: 'local.test', dataDir });
      try {
        await again.federate(fedCfg());
        const b = again.registry.get('remote.test');
        assert.ok(b, 'bundle restored from the state store');
        assert.equal(b.rootsDer.length, 1);
        await again.federation!.refreshNow('remote.test');
        assert.ok(again.registry.get('remote.test'), 'still there after a failed fetch');
      } finally {
        await again.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('an x509-svid entry without x5c is skipped and x5c values after the first are ignored (X509-SVID §6.2)', async () => {
    const remote = await startInstance({ trustDomain: 'remote.test' });
    const goodDoc = JSON.parse(remote.registry.spiffeBundleJson('remote.test')!) as { keys: Record<string, unknown>[] };
    const rootDer = remote.core.authority.bundle().rootsDer[0]!;
    await remote.close();
    const m = await startInstance({ trustDomain: 'local4.test' });
    try {
      const k = goodDoc.keys[0]!;
      const extra = Buffer.from('not a certificate').toString('base64');
      const keys = [{ kty: k.kty, use: 'x509-svid' }, { ...k, x5c: [(k.x5c as string[])[0]!, extra] }];
      answer = { status: 200, body: JSON.stringify({ ...goodDoc, keys }) };
      await m.federate(fedCfg());
      await m.federation!.refreshNow('remote.test');
      assert.equal(m.federation!.status()[0]!.lastError ?? '', '');
      const got = m.registry.get('remote.test');
      assert.ok(got, 'bundle accepted');
      assert.deepEqual(got.rootsDer, [rootDer]);
    } finally {
      await m.close();
    }
  });

  test('fail/https_web refuses a server whose certificate does not chain to caFile', async () => {
    const other = await startInstance({ trustDomain: 'other.test' });
    try {
      await writeFile(join(dir, 'other-ca.pem'), other.core.authority.bundle().pem);
      const fed = await other.federate({
        trustDomains: [{ trustDomain: 'remote.test', bundleEndpointUrl: `https://localhost:${port}/`, profile: 'https_web', caFile: join(dir, 'other-ca.pem') }],
      });
      answer = { status: 200, body: '{"keys":[]}' };
      await fed.refreshNow('remote.test');
      assert.match(fed.status()[0]!.lastError!, /TLS verification failed/);
      assert.equal(other.registry.get('remote.test'), undefined);
    } finally {
      await other.close();
    }
  });

  test('a static bundleFile is loaded at start and re-read when it changes', async () => {
    const peer = await startInstance({ trustDomain: 'static.test' });
    const m = await startInstance({ trustDomain: 'local2.test', fileCheckIntervalMs: 30 });
    try {
      const file = join(dir, 'static.pem');
      await writeFile(file, peer.core.authority.bundle().pem);
      await m.federate({ trustDomains: [{ trustDomain: 'static.test', bundleFile: file }] });
      const first = m.registry.get('static.test')!;
      assert.equal(first.source, 'federated-file');
      assert.equal(first.rootsDer.length, 1);
      await peer.core.authority.rotate({ root: true });
      await new Promise((r) => setTimeout(r, 50));
      await writeFile(file, peer.registry.spiffeBundleJson('static.test')!);
      await eventually(() => m.registry.get('static.test')!.rootsDer.length === 2, 'reloaded static bundle');
      const metric = async (name: string) => (await m.core.metrics.getSingleMetric(name)!.get()).values.filter((v) => v.labels.trust_domain === 'static.test');
      const count = async (name: string, labels: Record<string, string>) =>
        (await metric(name)).find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;
      // A file (re)load counts as a refresh, as an endpoint fetch does: start + one reload.
      assert.equal(await count('meshca_federation_refresh_total', { result: 'success' }), 2);
      assert.equal(await count('meshca_federation_refresh_total', { result: 'error' }), 0, 'listed at 0');
      assert.ok(((await metric('meshca_federation_last_success_timestamp_seconds'))[0]?.value ?? 0) > 0, 'last success of the file');
      await writeFile(file, 'garbage');
      await eventually(() => (m.federation!.status()[0]!.lastError ?? '') !== '', 'error noticed');
      assert.equal(m.registry.get('static.test')!.rootsDer.length, 2, 'kept the previous bundle');
      assert.equal(await count('meshca_federation_refresh_total', { result: 'error' }), 1);
      assert.equal(await count('meshca_federation_errors_total', { reason: 'malformed' }), 1);
      await rm(file);
      await eventually(async () => (await count('meshca_federation_errors_total', { reason: 'unreadable' })) === 1, 'a missing file counted as unreadable');
      assert.equal(m.registry.get('static.test')!.rootsDer.length, 2, 'still the previous bundle');
    } finally {
      await m.close();
      await peer.close();
    }
  });

  test('fail/a static bundleFile that cannot be read fails start with a clear error', async () => {
    const m = await startInstance({ trustDomain: 'local3.test' });
    try {
      await assert.rejects(m.federate({ trustDomains: [{ trustDomain: 'x.test', bundleFile: join(dir, 'missing.pem') }] }), /bundleFile of x\.test: cannot read/);
      await writeFile(join(dir, 'bad.json'), '{"keys": 1}');
      await assert.rejects(m.federate({ trustDomains: [{ trustDomain: 'x.test', bundleFile: join(dir, 'bad.json') }] }), /"keys" must be an array/);
      void readFile;
    } finally {
      await m.close();
    }
  });
});

describe('federation: endpoint failures (network, HTTP, size, redirects, slow answers)', { timeout: 90_000 }, () => {
  let web: Instance;
  let dir: string;
  let server: Server;
  let base: string;
  let goodDoc: string;
  const drips: NodeJS.Timeout[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshca-fedfail-'));
    web = await startInstance({ trustDomain: 'webpki2.test' });
    const creds = await web.core.authority.issue({ spiffeId: 'spiffe://webpki2.test/www', dnsNames: ['localhost'], source: 'cli' });
    await writeFile(join(dir, 'ca.pem'), web.core.authority.bundle().pem);
    goodDoc = web.registry.spiffeBundleJson('webpki2.test')!;
    server = createHttpsServer({ cert: creds.chainPem, key: creds.privateKeyPem! }, (req, res) => {
      const path = req.url ?? '/';
      if (path === '/drip') {
        // Headers at once, then one byte every 200 ms: never idle long enough for a socket idle timeout.
        res.writeHead(200, { 'content-type': 'application/json' });
        const t = setInterval(() => res.write(' '), 200);
        drips.push(t);
        res.on('close', () => clearInterval(t));
        return;
      }
      if (path === '/big') return void res.writeHead(200).end(Buffer.alloc(5 * 1024 * 1024, 0x20));
      if (path === '/redirect') return void res.writeHead(302, { location: '/good' }).end();
      if (path === '/loop') return void res.writeHead(302, { location: '/loop' }).end();
      if (path === '/plain') return void res.writeHead(302, { location: `http://localhost:1/good` }).end();
      if (path === '/500') return void res.writeHead(500).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end(goodDoc);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `https://localhost:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    for (const t of drips) clearInterval(t);
    server?.closeAllConnections();
    server?.close();
    await web?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const fed = (path: string) => ({
    trustDomains: [{ trustDomain: 'webpki2.test', bundleEndpointUrl: `${base}${path}`, profile: 'https_web', caFile: join(dir, 'ca.pem') }],
  });

  test('ok/a redirect to the same origin is followed; the bundle is taken', async () => {
    const m = await startInstance({ trustDomain: 'ff1.test' });
    try {
      const f = await m.federate(fed('/redirect'));
      await f.refreshNow('webpki2.test');
      assert.equal(f.status()[0]!.lastError, undefined);
      assert.equal(m.registry.get('webpki2.test')!.rootsDer.length, 1);
    } finally {
      await m.close();
    }
  });

  for (const [path, reason, text] of [
    ['/500', 'http', /HTTP 500/],
    ['/big', 'size', /larger than/],
    ['/loop', 'http', /more than 3 redirects/],
    ['/plain', 'http', /non-https/],
  ] as const) {
    test(`fail/${path.slice(1)}: refused with reason ${reason}, nothing trusted`, async () => {
      const m = await startInstance({ trustDomain: 'ff2.test' });
      try {
        const f = await m.federate(fed(path));
        await f.refreshNow('webpki2.test');
        assert.match(f.status()[0]!.lastError ?? '', text);
        assert.equal(m.registry.get('webpki2.test'), undefined);
        const metric = await m.core.metrics.getSingleMetricAsString('meshca_federation_errors_total');
        assert.match(metric, new RegExp(`meshca_federation_errors_total\\{trust_domain="webpki2.test",reason="${reason}"\\} 1`));
      } finally {
        await m.close();
      }
    });
  }

  test('fail/an unreachable endpoint is a connect error; the next refresh is scheduled', async () => {
    const m = await startInstance({ trustDomain: 'ff3.test' });
    try {
      const f = await m.federate({ trustDomains: [{ trustDomain: 'webpki2.test', bundleEndpointUrl: 'https://127.0.0.1:1/', profile: 'https_web', caFile: join(dir, 'ca.pem') }] });
      await f.refreshNow('webpki2.test');
      const st = f.status()[0]!;
      assert.match(st.lastError ?? '', /ECONNREFUSED/);
      assert.ok(st.nextRefresh && st.nextRefresh.getTime() > Date.now(), 'a retry is scheduled');
    } finally {
      await m.close();
    }
  });

  test('fail/an endpoint that trickles its answer is cut off at the fetch timeout, and refreshes go on', async () => {
    const m = await startInstance({ trustDomain: 'ff4.test' });
    try {
      const f = await m.federate(fed('/drip'));
      const started = Date.now();
      // federate() sets fetchTimeoutMs 3000: the whole fetch, not just an idle gap, must end by then.
      await Promise.race([f.refreshNow('webpki2.test'), new Promise((_r, rej) => setTimeout(() => rej(new Error('refresh still running after 8 s')), 8000))]);
      assert.ok(Date.now() - started < 6000, `took ${Date.now() - started} ms`);
      assert.match(f.status()[0]!.lastError ?? '', /no answer within 3000 ms/);
      const metric = await m.core.metrics.getSingleMetricAsString('meshca_federation_errors_total');
      assert.match(metric, /reason="timeout"\} 1/);
      assert.ok(f.status()[0]!.nextRefresh!.getTime() > Date.now(), 'a retry is scheduled');
    } finally {
      await m.close();
    }
  });
});
