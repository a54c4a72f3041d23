import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:https';
import { pino } from 'pino';
import { FakeAuthority } from '../../fakes/authority.js';
import { SystemClock } from '../../../src/util/clock.js';
import { bundleToJwks, spiffeBundleJson } from '../../../src/bundle/jwks.js';
import { BundleRegistry } from '../../../src/bundle/registry.js';
import { bundleEndpointSchema, bundleFilesSchema } from '../../../src/bundle/config.js';
import { startFilePublisher } from '../../../src/bundle/file-publisher.js';
import { startBundleEndpoint } from '../../../src/bundle/endpoint.js';
import { createSelfSignedRoot } from '../../../src/x509/ca-certs.js';
import { toPem } from '../../../src/x509/pem.js';
import { KEY_TYPES } from '../../../src/x509/types.js';
import type { TrustBundle } from '../../../src/authority/types.js';
import { checkOwnBundleDoc, expectedJwkParams } from '../../support/spiffe-bundle-check.js';

/**
 * Every bundle document meshca emits for its own trust domain (bundle endpoint, bundle.files jwks, the JWKS
 * builder behind `meshca bundle --format jwks`) checked by an independent reader (test/support/spiffe-bundle-check.ts)
 * for roots of every key type meshca supports.
 */

const log = pino({ level: 'silent' });
const clock = new SystemClock();
const TD = 'a.test';
let roots: Buffer[] = [];

function bundleOf(rootsDer: Buffer[], sequence: number): TrustBundle {
  return { trustDomain: TD, rootsDer, pem: rootsDer.map((d) => toPem(d)).join(''), sequence };
}

before(async () => {
  roots = [];
  for (const keyType of KEY_TYPES) {
    roots.push((await createSelfSignedRoot({ trustDomain: TD, keyType, ttlSeconds: 86400, now: new Date() })).certDer);
  }
});

describe('SPIFFE bundle documents meshca emits', () => {
  test('the independent checker derives JWK parameters that differ per key type (it can fail)', () => {
    const kinds = roots.map((r) => {
      const p = expectedJwkParams(r);
      return `${p.kty}/${p.crv ?? (p.n ? `${Buffer.from(p.n, 'base64url').length * 8}` : '')}`;
    });
    assert.deepEqual(kinds, ['EC/P-256', 'EC/P-384', 'RSA/2048', 'RSA/3072', 'OKP/Ed25519']);
    const good = JSON.stringify(bundleToJwks(bundleOf(roots, 3), 300));
    checkOwnBundleDoc(good, { rootsDer: roots, sequence: 3, refreshHintSeconds: 300 });
    const broken = (f: (d: { keys: Record<string, unknown>[] } & Record<string, unknown>) => void): string => {
      const d = JSON.parse(good) as { keys: Record<string, unknown>[] } & Record<string, unknown>;
      f(d);
      return JSON.stringify(d);
    };
    const check = (text: string) => checkOwnBundleDoc(text, { rootsDer: roots });
    assert.throws(() => check(broken((d) => (d.keys[0]!.kid = 'k'))), /no kid/);
    assert.throws(() => check(broken((d) => (d.keys[0]!.x = `${d.keys[0]!.x as string}=`))), /keys\[0\]\.x/);
    assert.throws(() => check(broken((d) => (d.keys[2]!.x5c = [(d.keys[2]!.x5c as string[])[0]!.replace(/\+/g, '-')]))), /x5c\[0\]/);
    assert.throws(() => check(broken((d) => (d.keys[1]!.x5c = [roots[1]!.toString('base64'), roots[0]!.toString('base64')]))), /exactly one certificate/);
    assert.throws(() => check(broken((d) => delete d.spiffe_sequence)), /members/);
    assert.throws(() => check(broken((d) => (d.extra = 1))), /members/);
    assert.throws(() => check(broken((d) => (d.keys[3]!.alg = 'RS256'))), /members for kty RSA/);
    assert.throws(() => check(broken((d) => (d.spiffe_refresh_hint = 1.5))), /spiffe_refresh_hint/);
  });

  test('bundleToJwks and spiffeBundleJson: one x509-svid key per root for every key type', () => {
    checkOwnBundleDoc(JSON.stringify(bundleToJwks(bundleOf(roots, 7), 42)), { rootsDer: roots, sequence: 7, refreshHintSeconds: 42 });
    checkOwnBundleDoc(spiffeBundleJson({ rootsDer: roots, sequence: 0, refreshHintSeconds: 5 }), { rootsDer: roots, sequence: 0, refreshHintSeconds: 5 });
    // An empty bundle (every key revoked) is still a valid document with "keys": [].
    const empty = checkOwnBundleDoc(JSON.stringify(bundleToJwks(bundleOf([], 9), 300)), { rootsDer: [], sequence: 9 });
    assert.deepEqual(empty.keys, []);
  });

  test('bundle.files jwks: the exact format after every change, with an increasing sequence', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshca-fmt-files-'));
    try {
      const reg = new BundleRegistry(bundleOf(roots.slice(0, 1), 1), { ownRefreshHintSeconds: 120 });
      const file = join(dir, 'bundle.json');
      const pub = await startFilePublisher(bundleFilesSchema.parse({ files: [{ path: file, format: 'jwks' }] }), { registry: reg, log });
      const seen: number[] = [];
      seen.push(checkOwnBundleDoc(await readFile(file, 'utf8'), { rootsDer: roots.slice(0, 1), sequence: 1, refreshHintSeconds: 120 }).spiffe_sequence);
      for (let n = 2; n <= roots.length; n++) {
        reg.setOwn(bundleOf(roots.slice(0, n), n));
        await pub.flush();
        seen.push(checkOwnBundleDoc(await readFile(file, 'utf8'), { rootsDer: roots.slice(0, n), sequence: n }, `after change ${n}`).spiffe_sequence);
      }
      assert.deepEqual(seen, [1, 2, 3, 4, 5]);
      await pub.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('bundle endpoint HTTP behaviour', () => {
  type Answer = { status: number; headers: Record<string, string | string[] | undefined>; body: string };
  let call: (method: string, path: string) => Promise<Answer>;
  let reg: BundleRegistry;
  let close: () => Promise<void> = async () => undefined;

  before(async () => {
    const a = await FakeAuthority.create({ clock, trustDomain: TD });
    const dir = await mkdtemp(join(tmpdir(), 'meshca-fmt-ep-'));
    const s = await a.issue({ spiffeId: `spiffe://${TD}/web`, dnsNames: ['localhost'] });
    await writeFile(join(dir, 'c.pem'), s.chainPem);
    await writeFile(join(dir, 'k.pem'), s.privateKeyPem!);
    reg = new BundleRegistry(bundleOf(roots, 11), { ownRefreshHintSeconds: 300 });
    const ep = await startBundleEndpoint(
      bundleEndpointSchema.parse({ address: '127.0.0.1:0', profile: 'https_web', certFile: join(dir, 'c.pem'), keyFile: join(dir, 'k.pem'), refreshHint: '90s' }),
      { registry: reg, log, clock },
    );
    close = async () => {
      await ep.close();
      await rm(dir, { recursive: true, force: true });
    };
    call = (method, path) =>
      new Promise((resolve, reject) => {
        // No client certificate is offered: the endpoint must not require one.
        const req = request({ host: '127.0.0.1', servername: 'localhost', port: ep.port, path, method, ca: a.bundle().pem, agent: false }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        });
        req.on('error', reject);
        req.end();
      });
  });

  test('GET answers 200 with the bundle as application/json in the exact SPIFFE format', async () => {
    try {
      const r = await call('GET', '/');
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'application/json');
      checkOwnBundleDoc(r.body, { rootsDer: roots, sequence: 11, refreshHintSeconds: 90 });
      reg.setOwn(bundleOf(roots.slice(1), 12));
      const r2 = await call('GET', '/');
      checkOwnBundleDoc(r2.body, { rootsDer: roots.slice(1), sequence: 12, refreshHintSeconds: 90 });
    } finally {
      reg.setOwn(bundleOf(roots, 13));
    }
  });

  test('HEAD answers like GET without a body (RFC 9110 9.3.2); other methods get 405 with Allow', async () => {
    const get = await call('GET', '/');
    const head = await call('HEAD', '/');
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-type'], 'application/json');
    assert.equal(head.headers['content-length'], get.headers['content-length']);
    assert.equal(head.body, '');
    for (const m of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      const r = await call(m, '/');
      assert.equal(r.status, 405, m);
      assert.equal(r.headers.allow, 'GET, HEAD', m);
    }
  });

  test('last: close', async () => {
    await close();
  });
});
