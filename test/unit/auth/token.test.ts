import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { interpretTokenReview, jwtExpiryMs, parseServiceAccountUsername, TokenReviewAuthenticator, type TokenReviewStatus } from '../../../src/auth/token.js';
import { authConfigSchema, kubernetesTokensSchema } from '../../../src/auth/config.js';
import { ManualClock } from '../../fakes/clock.js';
import { CaError } from '../../../src/util/errors.js';

const ok = (username: string, audiences?: string[]): TokenReviewStatus => ({ authenticated: true, user: { username }, ...(audiences ? { audiences } : {}) });

test('service account usernames parse; everything else does not', () => {
  assert.deepEqual(parseServiceAccountUsername('system:serviceaccount:shop:cart'), { namespace: 'shop', name: 'cart' });
  assert.deepEqual(parseServiceAccountUsername('system:serviceaccount:a-b:x.y-z'), { namespace: 'a-b', name: 'x.y-z' });
  for (const u of [
    'alice',
    'system:node:worker-1',
    'system:serviceaccount:shop',
    'system:serviceaccount:shop:cart:extra',
    'system:serviceaccount::cart',
    'system:serviceaccount:Shop:cart',
    'system:serviceaccount:shop:Cart',
    'system:serviceaccount:shop:ca/rt',
    `system:serviceaccount:${'a'.repeat(64)}:cart`,
  ]) {
    assert.equal(parseServiceAccountUsername(u), undefined, u);
  }
});

test('interpretTokenReview: authenticated SA for our audience is ok', () => {
  assert.deepEqual(interpretTokenReview(ok('system:serviceaccount:ns1:sa1', ['meshca', 'x']), 'meshca'), { ok: true, namespace: 'ns1', serviceAccount: 'sa1' });
});

test('interpretTokenReview: refusals by reason', () => {
  const cases: Record<string, [TokenReviewStatus | undefined, string]> = {
    'no status': [undefined, 'invalid'],
    'expired error text': [{ user: {}, error: '[invalid bearer token, service account token has expired]' }, 'expired'],
    'audience error text': [{ user: {}, error: '[invalid bearer token, token audiences ["a"] is invalid for the target audiences ["meshca"]]' }, 'wrong-audience'],
    'other error text': [{ user: {}, error: '[invalid bearer token, token lookup failed]' }, 'invalid'],
    'authenticated without audiences (API server audience only)': [ok('system:serviceaccount:a:b'), 'wrong-audience'],
    'authenticated for another audience': [ok('system:serviceaccount:a:b', ['istio-ca']), 'wrong-audience'],
    'not a service account': [ok('system:node:n1', ['meshca']), 'not-service-account'],
    'authenticated is a string': [{ authenticated: 'true' as unknown as boolean, user: { username: 'system:serviceaccount:a:b' }, audiences: ['meshca'] }, 'invalid'],
  };
  for (const [name, [status, reason]] of Object.entries(cases)) {
    const r = interpretTokenReview(status, 'meshca');
    assert.equal(r.ok, false, name);
    assert.equal(!r.ok && r.reason, reason, name);
  }
});

test('jwtExpiryMs reads exp without trusting anything else', () => {
  const enc = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  assert.equal(jwtExpiryMs(`${enc({})}.${enc({ exp: 1700000000 })}.sig`), 1700000000_000);
  assert.equal(jwtExpiryMs(`${enc({})}.${enc({})}.sig`), undefined);
  assert.equal(jwtExpiryMs('opaque-token'), undefined);
  assert.equal(jwtExpiryMs('a.!!!.c'), undefined);
});

test('the authenticator works against any TokenReviewer and sends exactly our audience', async () => {
  const seen: string[][] = [];
  const a = new TokenReviewAuthenticator({
    trustDomain: 'td.test',
    audience: 'aud-1',
    reviewer: {
      async review(_token, audiences) {
        seen.push([...audiences]);
        return ok('system:serviceaccount:n:s', ['aud-1']);
      },
    },
    cacheTtlSeconds: 30,
    negativeCacheTtlSeconds: 5,
    cacheSize: 10,
    clock: new ManualClock(),
    log: pino({ level: 'silent' }),
    metrics: new Registry(),
  });
  const c = await a.authenticate({ peerCertChainDer: [], viaUds: false, authorization: 'bearer opaque-token' });
  assert.equal(c.spiffeId, 'spiffe://td.test/ns/n/sa/s');
  assert.deepEqual(seen, [['aud-1']]);
});

test('a hung TokenReview fails after the timeout (retryable)', async () => {
  const clock = new ManualClock();
  const a = new TokenReviewAuthenticator({
    trustDomain: 'td.test',
    audience: 'meshca',
    reviewer: { review: () => new Promise(() => undefined) },
    cacheTtlSeconds: 30,
    negativeCacheTtlSeconds: 5,
    cacheSize: 10,
    reviewTimeoutMs: 2000,
    clock,
    log: pino({ level: 'silent' }),
    metrics: new Registry(),
  });
  const p = a.authenticate({ peerCertChainDer: [], viaUds: false, authorization: 'Bearer hung' });
  clock.advance(2001);
  await assert.rejects(p, (e: unknown) => e instanceof CaError && e.code === 'UNAUTHENTICATED' && e.retryable);
});

test('config: defaults, bounds, unknown keys', () => {
  const d = authConfigSchema.parse(undefined);
  assert.deepEqual(d.kubernetesTokens, { enabled: false, audience: 'meshca', kubeconfig: '', cacheTtl: 30, negativeCacheTtl: 5, cacheSize: 10000 });
  assert.equal(kubernetesTokensSchema.parse({ cacheTtl: '2m' }).cacheTtl, 120);
  assert.throws(() => kubernetesTokensSchema.parse({ cacheTtl: '10m' }), /maximum/);
  assert.throws(() => kubernetesTokensSchema.parse({ audience: '' }), /empty/);
  assert.throws(() => kubernetesTokensSchema.parse({ audiences: ['x'] }), /audiences/);
  assert.throws(() => kubernetesTokensSchema.parse({ cacheTtl: '5s', negativeCacheTtl: '10s' }), /negativeCacheTtl|cacheTtl/);
});
