import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:https';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { FakeAuthority } from '../../fakes/authority.js';
import { SystemClock } from '../../../src/util/clock.js';
import { parseJsonNoDuplicates } from '../../../src/bundle/strict-json.js';
import { bundleMapJson, bundleToJwks, parseBundleMap, parseSpiffeBundle, spiffeBundleJson } from '../../../src/bundle/jwks.js';
import { BundleRegistry, type BundleChange } from '../../../src/bundle/registry.js';
import { bundleEndpointSchema, bundleFilesSchema, checkFederationAgainstOwn, federationSchema } from '../../../src/bundle/config.js';
import { startFilePublisher } from '../../../src/bundle/file-publisher.js';
import { startBundleEndpoint } from '../../../src/bundle/endpoint.js';
import { federationStoreKey, parseBundleText } from '../../../src/bundle/federation.js';
import { registryBundleProvider } from '../../../src/bundle/sds-provider.js';
import { uriSans } from '../../../src/bundle/fetch.js';

const log = pino({ level: 'silent' });
const clock = new SystemClock();

async function fixtures() {
  const a = await FakeAuthority.create({ clock, trustDomain: 'a.test' });
  const b = await FakeAuthority.create({ clock, trustDomain: 'b.test' });
  return { a, b };
}

describe('strict JSON', () => {
  test('parses like JSON.parse', () => {
    const text = '{"a":[1,2.5e3,"x\\u00e9",true,null,{"b":{}}],"c":-0}';
    assert.deepEqual(parseJsonNoDuplicates(text), JSON.parse(text));
  });
  test('fail/duplicate keys at any depth, trailing data, bad literals', () => {
    assert.throws(() => parseJsonNoDuplicates('{"a":1,"a":2}'), /duplicate key "a" in \$/);
    assert.throws(() => parseJsonNoDuplicates('{"x":{"td":{},"td":{}}}'), /duplicate key "td" in \$\.x/);
    assert.throws(() => parseJsonNoDuplicates('{} x'), /unexpected data/);
    assert.throws(() => parseJsonNoDuplicates('{"a":tru}'), /expected a JSON value/);
    assert.throws(() => parseJsonNoDuplicates('['.repeat(100) + ']'.repeat(100)), /nested deeper/);
  });
  test('a "__proto__" key stays an ordinary key', () => {
    const v = parseJsonNoDuplicates('{"__proto__":{"polluted":1}}') as Record<string, unknown>;
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.ok(Object.prototype.hasOwnProperty.call(v, '__proto__'));
  });
});

describe('SPIFFE bundle (de)serialisation', () => {
  test('ok/round trip of our bundle: x509-svid keys with one x5c, no kid, sequence and hint', async () => {
    const { a } = await fixtures();
    const doc = bundleToJwks(a.bundle(), 300);
    assert.equal(doc.keys[0]!.kid, undefined);
    const parsed = parseSpiffeBundle(JSON.stringify(doc));
    assert.equal(parsed.sequence, a.bundle().sequence);
    assert.equal(parsed.refreshHintSeconds, 300);
    assert.deepEqual(parsed.x509Authorities, [...a.bundle().rootsDer]);
  });

  test('ok/unknown use or kty entries are skipped; jwt-svid keys kept; empty keys means all revoked', async () => {
    const { a } = await fixtures();
    const doc = bundleToJwks(a.bundle(), 60) as unknown as { keys: unknown[] };
    doc.keys.push({ kty: 'EC', use: 'enc', x5c: ['AA=='] }, { kty: 'oct', use: 'x509-svid' }, { kty: 'EC' }, { kty: 'EC', use: 'jwt-svid', kid: 'k1', alg: 'ES256', crv: 'P-256', x: 'a', y: 'b' });
    const p = parseSpiffeBundle(JSON.stringify(doc));
    assert.equal(p.x509Authorities.length, 1);
    assert.equal(p.skipped.length, 3);
    assert.equal(p.jwtAuthorities[0]!.kid, 'k1');
    assert.equal(parseSpiffeBundle('{"keys":[]}').x509Authorities.length, 0);
  });

  test('ok/entries of a known use but without kty, or with an unknown kty, are skipped before any other check', async () => {
    const { a } = await fixtures();
    const doc = bundleToJwks(a.bundle(), 60) as unknown as { keys: Record<string, unknown>[] };
    const k = doc.keys[0]!;
    const { kty: _kty, ...noKty } = k;
    // Each would be an error if it were read (a kid on an x509-svid entry, a jwt-svid entry without kid).
    doc.keys.push({ ...noKty, kid: 'x' }, { kty: 'oct', use: 'jwt-svid' }, { use: 'jwt-svid', alg: 'HS256' }, { kty: 'EC', use: 'X509-SVID', kid: 'x' });
    const p = parseSpiffeBundle(JSON.stringify(doc));
    assert.deepEqual(p.x509Authorities, [...a.bundle().rootsDer]);
    assert.deepEqual(p.jwtAuthorities, []);
    assert.deepEqual(p.skipped, ['keys[1]: no "kty"', 'keys[2]: unknown kty "oct"', 'keys[3]: no "kty"', 'keys[4]: unknown use "X509-SVID"']);
  });

  test('ok/x509-svid entries without x5c (or with an empty one) are skipped; only x5c[0] counts', async () => {
    const { a } = await fixtures();
    const doc = bundleToJwks(a.bundle(), 60) as unknown as { keys: Record<string, unknown>[] };
    const k = doc.keys[0]!;
    const b64 = (k.x5c as string[])[0]!;
    doc.keys = [{ ...k, x5c: [b64, 'ignored'] }, { kty: 'EC', use: 'x509-svid' }, { kty: 'EC', use: 'x509-svid', x5c: [] }];
    const p = parseSpiffeBundle(JSON.stringify(doc));
    assert.deepEqual(p.x509Authorities, [...a.bundle().rootsDer]);
    assert.equal(p.skipped.length, 2);
  });

  const bad: Record<string, (d: Record<string, unknown>, k: Record<string, unknown>, b64: string) => unknown> = {
    'fail/not an object': () => [],
    'fail/keys missing': (d) => ({ ...d, keys: undefined }),
    'fail/keys not an array': (d) => ({ ...d, keys: {} }),
    'fail/x5c not an array': (d, k, b) => ({ ...d, keys: [{ ...k, x5c: b }] }),
    'fail/x509-svid with a kid': (d, k) => ({ ...d, keys: [{ ...k, kid: 'x' }] }),
    'fail/x5c not base64': (d, k) => ({ ...d, keys: [{ ...k, x5c: ['!!!'] }] }),
    'fail/x5c url-safe base64': (d, k, b) => ({ ...d, keys: [{ ...k, x5c: [b.replace(/\+/g, '-').replace(/\//g, '_')] }] }),
    'fail/x5c not a certificate': (d, k) => ({ ...d, keys: [{ ...k, x5c: ['AAAA'] }] }),
    'fail/key params not matching the certificate': (d, k) => ({ ...d, keys: [{ ...k, x: 'AAAA' }] }),
    'fail/the same certificate twice': (d, k) => ({ ...d, keys: [k, k] }),
    'fail/jwt-svid without kid': (d) => ({ ...d, keys: [{ kty: 'EC', use: 'jwt-svid' }] }),
    'fail/jwt-svid with a bad alg': (d) => ({ ...d, keys: [{ kty: 'EC', use: 'jwt-svid', kid: 'a', alg: 'HS256' }] }),
    'fail/negative sequence': (d) => ({ ...d, spiffe_sequence: -1 }),
    'fail/fractional sequence': (d) => ({ ...d, spiffe_sequence: 1.5 }),
    'fail/zero refresh hint': (d) => ({ ...d, spiffe_refresh_hint: 0 }),
  };
  for (const [name, mutate] of Object.entries(bad)) {
    test(name, async () => {
      const { a } = await fixtures();
      const d = bundleToJwks(a.bundle(), 60) as unknown as Record<string, unknown> & { keys: Record<string, unknown>[] };
      const k = d.keys[0]!;
      const out = mutate(d, k, (k.x5c as string[])[0]!);
      assert.throws(() => parseSpiffeBundle(JSON.stringify(out), 'test bundle'), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'INVALID_ARGUMENT');
        assert.match(e.message, /^test bundle: /);
        return true;
      });
    });
  }

  test('fail/a leaf certificate in x5c', async () => {
    const { a } = await fixtures();
    const leaf = await a.issue({ spiffeId: 'spiffe://a.test/x' });
    const doc = { keys: [{ kty: 'EC', use: 'x509-svid', x5c: [leaf.chainDer[0]!.toString('base64')] }] };
    assert.throws(() => parseSpiffeBundle(JSON.stringify(doc)), /is not a CA certificate/);
  });

  test('fail/a leaf certificate with an empty subject in x5c is refused by name, not with a crash', async () => {
    const { a } = await fixtures();
    const now = Date.now();
    const leaf = await a.makeLeaf({ uris: ['spiffe://a.test/x'], subject: '', notBefore: new Date(now - 1000), notAfter: new Date(now + 60_000) });
    const doc = { keys: [{ kty: 'EC', use: 'x509-svid', x5c: [leaf.certDer.toString('base64')] }] };
    assert.throws(() => parseSpiffeBundle(JSON.stringify(doc)), /x5c\[0\] \(subject ""\) is not a CA certificate/);
  });

  test('bundle map: one entry per trust domain, duplicates rejected, round trip', async () => {
    const { a, b } = await fixtures();
    const json = bundleMapJson([
      { trustDomain: 'a.test', rootsDer: a.bundle().rootsDer, sequence: 3 },
      { trustDomain: 'b.test', rootsDer: b.bundle().rootsDer },
    ]);
    const doc = JSON.parse(json);
    assert.deepEqual(Object.keys(doc.trust_domains), ['a.test', 'b.test']);
    assert.equal(doc.trust_domains['a.test'].spiffe_refresh_hint, undefined, 'no per-bundle refresh hints');
    const m = parseBundleMap(json);
    assert.deepEqual(m.get('b.test')!.x509Authorities, [...b.bundle().rootsDer]);
    assert.throws(() => bundleMapJson([{ trustDomain: 'a.test', rootsDer: [] }, { trustDomain: 'a.test', rootsDer: [] }]), /appears twice/);
    const dup = `{"trust_domains":{"a.test":{"keys":[]},"a.test":{"keys":[]}}}`;
    assert.throws(() => parseBundleMap(dup), /duplicate key "a.test"/);
    assert.throws(() => parseBundleMap('{"trust_domains":{"A.test":{"keys":[]}}}'), /invalid trust domain/);
  });

  test('bundle files: PEM or SPIFFE JSON', async () => {
    const { a } = await fixtures();
    assert.equal(parseBundleText(a.bundle().pem, 'f').x509Authorities.length, 1);
    assert.equal(parseBundleText(spiffeBundleJson({ rootsDer: a.bundle().rootsDer }), 'f').x509Authorities.length, 1);
    assert.throws(() => parseBundleText('nothing here', 'f'), /neither SPIFFE bundle JSON nor PEM/);
    assert.throws(() => parseBundleText('-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n', 'f'), /"PRIVATE KEY" PEM block/);
  });
});

describe('BundleRegistry', () => {
  test('own + federated, sequences, change events, no merging, no foreign override of our own domain', async () => {
    const { a, b } = await fixtures();
    const reg = new BundleRegistry(a.bundle(), { ownRefreshHintSeconds: 300 });
    const changes: BundleChange[] = [];
    reg.onChange((c) => changes.push(c));
    assert.equal(reg.setFederated('b.test', { rootsDer: b.bundle().rootsDer, refreshHintSeconds: 60, source: 'federated-endpoint' }), true);
    assert.equal(reg.get('b.test')!.sequence, 1, 'counted locally without spiffe_sequence');
    assert.equal(reg.setFederated('b.test', { rootsDer: b.bundle().rootsDer, refreshHintSeconds: 60, source: 'federated-endpoint' }), false, 'unchanged: no event');
    reg.setFederated('b.test', { rootsDer: [...b.bundle().rootsDer, ...a.bundle().rootsDer], refreshHintSeconds: 60, source: 'federated-endpoint' });
    assert.equal(reg.get('b.test')!.sequence, 2);
    reg.setFederated('b.test', { rootsDer: b.bundle().rootsDer, sequence: 40, refreshHintSeconds: 60, source: 'federated-endpoint' });
    assert.equal(reg.get('b.test')!.sequence, 40, 'the source sequence wins when given');
    assert.equal(changes.length, 3);
    // Our copy's sequence increases on every change (SPIFFE spiffe_sequence, served again over BundleService and in
    // SDS bundle maps) even when the source changes its keys without raising its own, or its sequence goes back.
    assert.equal(reg.setFederated('b.test', { rootsDer: a.bundle().rootsDer, sequence: 40, refreshHintSeconds: 60, source: 'federated-endpoint' }), true);
    assert.equal(reg.get('b.test')!.sequence, 41, 'new keys under the same source sequence');
    assert.equal(reg.setFederated('b.test', { rootsDer: b.bundle().rootsDer, sequence: 3, refreshHintSeconds: 60, source: 'federated-endpoint' }), true);
    assert.equal(reg.get('b.test')!.sequence, 42, 'a source sequence that went backwards');
    assert.equal(reg.setFederated('b.test', { rootsDer: b.bundle().rootsDer, sequence: 2, refreshHintSeconds: 60, source: 'federated-endpoint' }), false, 'same keys, older source sequence: no change');
    assert.equal(reg.get('b.test')!.sequence, 42);
    assert.equal(reg.setFederated('b.test', { rootsDer: b.bundle().rootsDer, sequence: 50, refreshHintSeconds: 60, source: 'federated-endpoint' }), true);
    assert.equal(reg.get('b.test')!.sequence, 50, 'a higher source sequence is taken as is');
    changes.splice(3);
    assert.ok(changes.every((c, i) => i === 0 || c.revision > changes[i - 1]!.revision));
    assert.throws(() => reg.setFederated('a.test', { rootsDer: [], refreshHintSeconds: 1, source: 'federated-file' }), /own trust domain/);
    assert.deepEqual(reg.all().map((x) => x.trustDomain), ['a.test', 'b.test']);
    const map = JSON.parse(reg.bundleMapJson());
    assert.deepEqual(Object.keys(map.trust_domains), ['a.test', 'b.test']);
    await a.rotateBundle();
    reg.setOwn(a.bundle());
    assert.equal(reg.own().sequence, a.bundle().sequence);
    assert.equal(changes.at(-1)!.trustDomain, 'a.test');
    reg.removeFederated('b.test');
    assert.equal(reg.get('b.test'), undefined);
    assert.equal(changes.at(-1)!.bundle, undefined);
  });

  test('the SDS provider lists own + federated bundles and leaves out emptied (revoked) ones', async () => {
    const { a, b } = await fixtures();
    const reg = new BundleRegistry(a.bundle(), { ownRefreshHintSeconds: 300 });
    const p = registryBundleProvider(reg);
    let calls = 0;
    p.onChange(() => calls++);
    reg.setFederated('b.test', { rootsDer: b.bundle().rootsDer, refreshHintSeconds: 60, source: 'federated-endpoint' });
    reg.setFederated('c.test', { rootsDer: [], refreshHintSeconds: 60, source: 'federated-endpoint' });
    assert.deepEqual(p.all().map((x) => x.trustDomain), ['a.test', 'b.test']);
    assert.equal(p.own().pem, a.bundle().pem);
    assert.equal(calls, 2);
  });
});

describe('config schemas', () => {
  test('bundle endpoint: profile rules and defaults', () => {
    const web = bundleEndpointSchema.parse({ address: '0.0.0.0:8443', profile: 'https_web', certFile: 'c', keyFile: 'k' });
    assert.equal(web.refreshHint, 300);
    assert.equal(bundleEndpointSchema.safeParse({ address: ':8443', profile: 'https_web' }).success, false);
    assert.equal(bundleEndpointSchema.safeParse({ address: ':8443', profile: 'https_spiffe', certFile: 'c' }).success, false);
    assert.equal(bundleEndpointSchema.safeParse({ address: ':8443', profile: 'https_spiffe', extra: 1 }).success, false);
    assert.equal(bundleEndpointSchema.safeParse({ address: ':8443', profile: 'ftp' }).success, false);
  });
  test('federation: endpoint or file, profile-specific keys, no userinfo, no duplicates, not our own domain', () => {
    const ok = federationSchema.parse({
      trustDomains: [
        { trustDomain: 'b.test', bundleEndpointUrl: 'https://b.example/bundle', profile: 'https_web' },
        { trustDomain: 'c.test', bundleEndpointUrl: 'https://c.example', profile: 'https_spiffe', endpointSpiffeId: 'spiffe://c.test/ep', bootstrapBundleFile: 'c.pem' },
        { trustDomain: 'd.test', bundleFile: 'd.json' },
      ],
    });
    assert.equal(ok.trustDomains.length, 3);
    const bad = [
      { trustDomain: 'b.test' },
      { trustDomain: 'b.test', bundleEndpointUrl: 'http://b.example', profile: 'https_web' },
      { trustDomain: 'b.test', bundleEndpointUrl: 'https://u:p@b.example', profile: 'https_web' },
      { trustDomain: 'b.test', bundleEndpointUrl: 'https://b.example', profile: 'https_spiffe' },
      { trustDomain: 'b.test', bundleFile: 'x', profile: 'https_web' },
      { trustDomain: 'B.test', bundleFile: 'x' },
    ];
    for (const t of bad) assert.equal(federationSchema.safeParse({ trustDomains: [t] }).success, false, JSON.stringify(t));
    assert.equal(federationSchema.safeParse({ trustDomains: [{ trustDomain: 'x.test', bundleFile: 'a' }, { trustDomain: 'x.test', bundleFile: 'b' }] }).success, false);
    assert.equal(checkFederationAgainstOwn('d.test', ok).length, 1);
    assert.equal(bundleFilesSchema.parse({ files: [{ path: '/x' }] }).files[0]!.format, 'pem');
  });
  test('state store keys are valid and distinct', () => {
    assert.equal(federationStoreKey('b-test'), 'federation-b-test');
    assert.notEqual(federationStoreKey('a.b'), federationStoreKey('a-b'));
    for (const td of ['a.b', 'x'.repeat(200), '1.2.3.4']) assert.match(federationStoreKey(td), /^[a-z0-9][a-z0-9-]{0,63}$/);
  });
  test('URI SANs from Node certificate strings', () => {
    assert.deepEqual(uriSans({ subjectaltname: 'DNS:x, URI:spiffe://a/b, URI:"spiffe://a/c,d"' }), ['spiffe://a/b', 'spiffe://a/c,d']);
  });
});

describe('file publisher and https_web bundle endpoint', () => {
  test('writes the PEM (and JWKS) bundle atomically on start and after every change', async () => {
    const { a } = await fixtures();
    const dir = await mkdtemp(join(tmpdir(), 'meshca-files-'));
    try {
      const reg = new BundleRegistry(a.bundle(), { ownRefreshHintSeconds: 300 });
      const metrics = new Registry();
      const pub = await startFilePublisher(bundleFilesSchema.parse({ files: [{ path: join(dir, 'ca.pem') }, { path: join(dir, 'bundle.json'), format: 'jwks' }] }), { registry: reg, log, metrics });
      assert.equal(await readFile(join(dir, 'ca.pem'), 'utf8'), a.bundle().pem);
      assert.equal((await stat(join(dir, 'ca.pem'))).mode & 0o777, 0o644);
      await a.rotateBundle();
      reg.setOwn(a.bundle());
      await pub.flush();
      assert.equal(await readFile(join(dir, 'ca.pem'), 'utf8'), a.bundle().pem);
      assert.equal(JSON.parse(await readFile(join(dir, 'bundle.json'), 'utf8')).spiffe_sequence, a.bundle().sequence);
      await pub.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('creates missing parent directories of a bundle file, mode 0755 (the bundle is public)', async () => {
    const { a } = await fixtures();
    const dir = await mkdtemp(join(tmpdir(), 'meshca-files-'));
    try {
      const reg = new BundleRegistry(a.bundle(), { ownRefreshHintSeconds: 300 });
      const path = join(dir, 'etc', 'ssl', 'meshca', 'bundle.pem');
      const pub = await startFilePublisher(bundleFilesSchema.parse({ files: [{ path }] }), { registry: reg, log, metrics: new Registry() });
      assert.equal(await readFile(path, 'utf8'), a.bundle().pem);
      const umask = process.umask();
      for (const d of [join(dir, 'etc'), join(dir, 'etc', 'ssl'), join(dir, 'etc', 'ssl', 'meshca')]) {
        assert.equal((await stat(d)).mode & 0o777, 0o755 & ~umask, `${d} mode`);
      }
      await pub.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('fail/a bundle file whose parent is a file stops start with an error naming bundle.files[i].path', async () => {
    const { a } = await fixtures();
    const dir = await mkdtemp(join(tmpdir(), 'meshca-files-'));
    try {
      const reg = new BundleRegistry(a.bundle(), { ownRefreshHintSeconds: 300 });
      await writeFile(join(dir, 'plain-file'), 'x');
      const files = bundleFilesSchema.parse({ files: [{ path: join(dir, 'ok.pem') }, { path: join(dir, 'plain-file', 'bundle.pem') }] });
      await assert.rejects(startFilePublisher(files, { registry: reg, log, metrics: new Registry() }), (e: Error) => {
        assert.match(e.message, /^bundle\.files\[1\]\.path: cannot write .*plain-file\/bundle\.pem: .*(ENOTDIR|EEXIST)/);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('https_web serves with configured cert files and picks up replaced files', async () => {
    const { a } = await fixtures();
    const dir = await mkdtemp(join(tmpdir(), 'meshca-ep-'));
    const reg = new BundleRegistry(a.bundle(), { ownRefreshHintSeconds: 300 });
    const s1 = await a.issue({ spiffeId: 'spiffe://a.test/www1', dnsNames: ['localhost'] });
    await writeFile(join(dir, 'c.pem'), s1.chainPem);
    await writeFile(join(dir, 'k.pem'), s1.privateKeyPem!);
    const ep = await startBundleEndpoint(
      bundleEndpointSchema.parse({ address: '127.0.0.1:0', profile: 'https_web', certFile: join(dir, 'c.pem'), keyFile: join(dir, 'k.pem'), refreshHint: '1m' }),
      { registry: reg, log, clock, fileCheckIntervalMs: 20 },
    );
    const get = () =>
      new Promise<{ body: string; cert: string; type: string | undefined }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', servername: 'localhost', port: ep.port, path: '/', ca: a.bundle().pem, agent: false }, (res) => {
          let body = '';
          const cert = (res.socket as import('node:tls').TLSSocket).getPeerCertificate().subjectaltname ?? '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve({ body, cert, type: res.headers['content-type'] }));
        });
        req.on('error', reject);
        req.end();
      });
    try {
      const r1 = await get();
      assert.equal(r1.type, 'application/json');
      assert.equal(JSON.parse(r1.body).spiffe_refresh_hint, 60);
      assert.match(r1.cert, /www1/);
      const s2 = await a.issue({ spiffeId: 'spiffe://a.test/www2', dnsNames: ['localhost'] });
      await writeFile(join(dir, 'k.pem'), s2.privateKeyPem!);
      await writeFile(join(dir, 'c.pem'), s2.chainPem);
      const end = Date.now() + 5000;
      while (!(await get()).cert.includes('www2')) {
        if (Date.now() > end) assert.fail('certificate not reloaded');
        await new Promise((r) => setTimeout(r, 30));
      }
    } finally {
      await ep.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('fail/https_web with unreadable or mismatched files does not start', async () => {
    const { a } = await fixtures();
    const dir = await mkdtemp(join(tmpdir(), 'meshca-ep2-'));
    const reg = new BundleRegistry(a.bundle(), { ownRefreshHintSeconds: 300 });
    try {
      const cfg = bundleEndpointSchema.parse({ address: '127.0.0.1:0', profile: 'https_web', certFile: join(dir, 'c.pem'), keyFile: join(dir, 'k.pem') });
      await assert.rejects(startBundleEndpoint(cfg, { registry: reg, log, clock }), /cannot read certFile/);
      const s1 = await a.issue({ spiffeId: 'spiffe://a.test/x' });
      const s2 = await a.issue({ spiffeId: 'spiffe://a.test/y' });
      await writeFile(join(dir, 'c.pem'), s1.chainPem);
      await writeFile(join(dir, 'k.pem'), s2.privateKeyPem!);
      await assert.rejects(startBundleEndpoint(cfg, { registry: reg, log, clock }), /not a usable pair/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
