import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Authorizer } from '../../../src/identity/authorization.js';
import { resolveNames, type NameContext } from '../../../src/servers/sds/names.js';
import type { BundleProvider } from '../../../src/servers/sds/bundles.js';
import { CaError } from '../../../src/util/errors.js';
import { splitSans } from '../../../src/auth/mtls.js';

const TD = 'example.org';
const bundles: BundleProvider = {
  own: () => ({ trustDomain: TD, pem: 'A', sequence: 1 }),
  all: () => [
    { trustDomain: TD, pem: 'A', sequence: 1 },
    { trustDomain: 'partner.net', pem: 'B', sequence: 1 },
  ],
  onChange: () => () => undefined,
};
const ctx: NameContext = {
  trustDomain: TD,
  bundles,
  authorizer: new Authorizer([{ id: `spiffe://${TD}/ctrl`, allow: [`spiffe://${TD}/ns/a/*`], maxTtlSeconds: 3600, generateKeys: false }]),
};
const web = { spiffeId: `spiffe://${TD}/ns/a/web`, via: 'mtls' as const };
const ctrl = { spiffeId: `spiffe://${TD}/ctrl`, via: 'mtls' as const };

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return `${(e as CaError).code}: ${(e as CaError).message}`;
  }
  return 'ok';
}

describe('SDS resource names', () => {
  it('ok/the SPIRE names resolve', () => {
    assert.deepEqual(resolveNames(['default', 'ROOTCA', 'ALL', `spiffe://${TD}`, 'spiffe://partner.net', web.spiffeId], web, ctx), [
      { kind: 'cert', name: 'default', spiffeId: web.spiffeId },
      { kind: 'bundle', name: 'ROOTCA', trustDomain: TD },
      { kind: 'all', name: 'ALL' },
      { kind: 'bundle', name: `spiffe://${TD}`, trustDomain: TD },
      { kind: 'bundle', name: 'spiffe://partner.net', trustDomain: 'partner.net' },
      { kind: 'cert', name: web.spiffeId, spiffeId: web.spiffeId },
    ]);
  });

  it('ok/a controller gets identities its rule allows when it may have meshca generate keys (SDS always does)', () => {
    const keyCtx: NameContext = {
      ...ctx,
      authorizer: new Authorizer([{ id: `spiffe://${TD}/ctrl`, allow: [`spiffe://${TD}/ns/a/*`], maxTtlSeconds: 3600, generateKeys: true }]),
    };
    assert.deepEqual(resolveNames([`spiffe://${TD}/ns/a/db`], ctrl, keyCtx), [{ kind: 'cert', name: `spiffe://${TD}/ns/a/db`, spiffeId: `spiffe://${TD}/ns/a/db` }]);
    // Without generateKeys the same controller is refused: SDS hands out meshca-generated private keys.
    assert.match(code(() => resolveNames([`spiffe://${TD}/ns/a/db`], ctrl, ctx)), /^PERMISSION_DENIED: .*ns\/a\/db.*generateKeys: false/);
  });

  it('fail/another identity is PERMISSION_DENIED naming every denied resource', () => {
    const r = code(() => resolveNames([`spiffe://${TD}/ns/a/db`, `spiffe://${TD}/ns/b/x`, 'ROOTCA'], web, ctx));
    assert.match(r, /^PERMISSION_DENIED: .*ns\/a\/db.*ns\/b\/x/);
    assert.match(code(() => resolveNames([`spiffe://${TD}/ns/b/x`], ctrl, ctx)), /^PERMISSION_DENIED/);
  });

  it('fail/unknown, malformed, foreign and non-canonical names are INVALID_ARGUMENT naming them (before any denial)', () => {
    for (const [name, why] of [
      ['file-root:system', /not a name meshca serves/],
      ['*', /not a name meshca serves/],
      ['rootca', /not a name meshca serves/],
      ['spiffe://unknown.org', /unknown trust domain/],
      ['spiffe://partner.net/ns/a/web', /not this CA's trust domain/],
      [`spiffe://${TD}/a//b`, /segments must not be empty/],
      [`SPIFFE://${TD}/a`, /canonical/],
    ] as const) {
      assert.match(code(() => resolveNames([name, `spiffe://${TD}/ns/b/denied`], web, ctx)), new RegExp(`^INVALID_ARGUMENT: .*${name.replace(/[/.*]/g, '\\$&')}`));
      assert.match(code(() => resolveNames([name], web, ctx)), why);
    }
  });

  it('fail/hundreds of bad names give an error short enough for a gRPC status (the first ten, then a count)', () => {
    const unknown = Array.from({ length: 700 }, (_, i) => `no-such-secret-${i}-${'x'.repeat(90)}`);
    const r = code(() => resolveNames(unknown, web, ctx));
    assert.match(r, /^INVALID_ARGUMENT: unknown or invalid SDS resource names "no-such-secret-0-x+", .*"no-such-secret-9-x+" and 690 more/);
    assert.ok(!r.includes('no-such-secret-10-'), 'only the first ten are listed');
    assert.ok(r.length < 4096, `message is ${r.length} characters`);
    const denied = Array.from({ length: 300 }, (_, i) => `spiffe://${TD}/ns/b/w${i}`);
    const d = code(() => resolveNames(denied, web, ctx));
    assert.match(d, /^PERMISSION_DENIED: .*ns\/b\/w9" and 290 more/);
    assert.ok(d.length < 4096, `message is ${d.length} characters`);
  });
});

describe('splitSans', () => {
  it('splits Node subjectAltName strings, including quoted values', () => {
    assert.deepEqual(splitSans('URI:spiffe://a/b, DNS:x.example, IP Address:127.0.0.1'), ['URI:spiffe://a/b', 'DNS:x.example', 'IP Address:127.0.0.1']);
    assert.deepEqual(splitSans('DNS:"a, URI:spiffe://evil/x", URI:spiffe://a/b'), ['DNS:a, URI:spiffe://evil/x', 'URI:spiffe://a/b']);
    assert.deepEqual(splitSans(''), []);
  });
});

describe("meshca's reserved identity over SDS", () => {
  it('is refused as default and by name even to a caller presenting it (PERMISSION_DENIED naming the resource)', () => {
    const reservedCtx: NameContext = {
      ...ctx,
      authorizer: Authorizer.fromConfig({ trustDomain: TD, authorization: { controllers: [] } }),
    };
    const holder = { spiffeId: `spiffe://${TD}/meshca`, via: 'mtls' as const };
    for (const name of ['default', `spiffe://${TD}/meshca`]) {
      assert.match(code(() => resolveNames([name], holder, reservedCtx)), new RegExp(`^PERMISSION_DENIED: .*${name.replace(/[/.]/g, '\\$&')}.*reserved for meshca itself`));
    }
    assert.deepEqual(resolveNames(['ROOTCA'], holder, reservedCtx).map((t) => t.kind), ['bundle'], 'the bundle is public');
    assert.equal(resolveNames(['default'], web, reservedCtx)[0]!.kind, 'cert', 'other callers are unaffected');
  });
});
