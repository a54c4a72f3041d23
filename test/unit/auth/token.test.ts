import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { interpretTokenReview, jwtExpiryMs, parseServiceAccountUsername, REVIEWS_QUEUED_PER_SLOT, TokenReviewAuthenticator, type TokenReviewer, type TokenReviewStatus } from '../../../src/auth/token.js';
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
  assert.deepEqual(d.kubernetesTokens, { enabled: false, audience: 'meshca', kubeconfig: '', cacheTtl: 30, negativeCacheTtl: 5, cacheSize: 10000, maxConcurrentReviews: 32 });
  assert.equal(kubernetesTokensSchema.parse({ cacheTtl: '2m' }).cacheTtl, 120);
  assert.throws(() => kubernetesTokensSchema.parse({ cacheTtl: '10m' }), /maximum/);
  assert.throws(() => kubernetesTokensSchema.parse({ audience: '' }), /empty/);
  assert.throws(() => kubernetesTokensSchema.parse({ audiences: ['x'] }), /audiences/);
  assert.throws(() => kubernetesTokensSchema.parse({ cacheTtl: '5s', negativeCacheTtl: '10s' }), /negativeCacheTtl|cacheTtl/);
  assert.throws(() => kubernetesTokensSchema.parse({ maxConcurrentReviews: 0 }), /maxConcurrentReviews|>=1|too small/i);
});

/** A reviewer whose answers the test releases by hand, recording how many reviews ran at once. */
function gatedReviewer(): { reviewer: TokenReviewer; calls: string[]; peak: () => number; releaseAll: () => void } {
  const calls: string[] = [];
  const gates: Array<() => void> = [];
  let running = 0;
  let peak = 0;
  return {
    calls,
    peak: () => peak,
    releaseAll: () => {
      for (const g of gates.splice(0)) g();
    },
    reviewer: {
      review(token) {
        calls.push(token);
        running++;
        peak = Math.max(peak, running);
        return new Promise((resolve) =>
          gates.push(() => {
            running--;
            resolve(ok(`system:serviceaccount:ns:${token}`, ['meshca']));
          }),
        );
      },
    },
  };
}

function limited(reviewer: TokenReviewer, maxConcurrentReviews: number, clock = new ManualClock()): TokenReviewAuthenticator {
  return new TokenReviewAuthenticator({
    trustDomain: 'td.test',
    audience: 'meshca',
    reviewer,
    cacheTtlSeconds: 30,
    negativeCacheTtlSeconds: 5,
    cacheSize: 1000,
    reviewTimeoutMs: 2000,
    maxConcurrentReviews,
    clock,
    log: pino({ level: 'silent' }),
    metrics: new Registry(),
  });
}

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));
const bearer = (t: string) => ({ peerCertChainDer: [], viaUds: false, authorization: `Bearer ${t}` });

test('at most maxConcurrentReviews TokenReviews run at once; the others wait their turn and all get answers', async () => {
  const g = gatedReviewer();
  const a = limited(g.reviewer, 4);
  const all = Array.from({ length: 40 }, (_, i) => a.authenticate(bearer(`sa${i}`)));
  await flush();
  assert.equal(g.calls.length, 4, 'only four reviews start');
  while (g.calls.length < 40) {
    g.releaseAll();
    await flush();
  }
  g.releaseAll();
  const callers = await Promise.all(all);
  assert.equal(g.peak(), 4);
  assert.deepEqual(callers.map((c) => c.spiffeId), Array.from({ length: 40 }, (_, i) => `spiffe://td.test/ns/ns/sa/sa${i}`));
  assert.deepEqual(g.calls, Array.from({ length: 40 }, (_, i) => `sa${i}`), 'in arrival order');
});

test('past the waiting bound a new token is refused at once as UNAVAILABLE (retryable), without a TokenReview', async () => {
  const g = gatedReviewer();
  const a = limited(g.reviewer, 1);
  const held = Array.from({ length: 1 + REVIEWS_QUEUED_PER_SLOT }, (_, i) => a.authenticate(bearer(`t${i}`)));
  await flush();
  await assert.rejects(a.authenticate(bearer('one-too-many')), (e: unknown) => e instanceof CaError && e.code === 'UNAVAILABLE' && e.retryable && /too many TokenReviews pending; retry$/.test(e.message));
  // A token already under review still joins it rather than queueing again.
  const again = a.authenticate(bearer('t0'));
  while (g.calls.length < held.length) {
    g.releaseAll();
    await flush();
  }
  g.releaseAll();
  await Promise.all([...held, again]);
  assert.ok(!g.calls.includes('one-too-many'));
  assert.equal(g.peak(), 1);
});

test('at the review timeout a hung TokenReview is aborted and frees its slot; a token still queued then is UNAVAILABLE, never sent', async () => {
  const clock = new ManualClock();
  const signals: AbortSignal[] = [];
  const sent: string[] = [];
  const reviewer: TokenReviewer = {
    review(token, _aud, signal) {
      sent.push(token);
      signals.push(signal!);
      if (token !== 'later') return new Promise(() => undefined); // an API server that never answers
      return Promise.resolve(ok('system:serviceaccount:ns:later', ['meshca']));
    },
  };
  const registry = new Registry();
  const a = new TokenReviewAuthenticator({
    trustDomain: 'td.test',
    audience: 'meshca',
    reviewer,
    cacheTtlSeconds: 30,
    negativeCacheTtlSeconds: 5,
    cacheSize: 10,
    reviewTimeoutMs: 2000,
    maxConcurrentReviews: 1,
    clock,
    log: pino({ level: 'silent' }),
    metrics: registry,
  });
  const first = a.authenticate(bearer('first'));
  const queued = a.authenticate(bearer('queued'));
  await flush();
  assert.deepEqual(sent, ['first']);
  clock.advance(2001);
  await assert.rejects(first, (e: unknown) => e instanceof CaError && e.code === 'UNAUTHENTICATED' && e.retryable);
  await assert.rejects(queued, (e: unknown) => e instanceof CaError && e.code === 'UNAVAILABLE' && e.retryable && !/\d/.test(e.message));
  assert.equal(signals[0]!.aborted, true, 'the hung request was aborted');
  // The slot is free again although the hung request never settled.
  assert.equal((await a.authenticate(bearer('later'))).spiffeId, 'spiffe://td.test/ns/ns/sa/later');
  assert.deepEqual(sent, ['first', 'later'], 'the token that timed out while queued was never sent');
  const metrics = await registry.metrics();
  assert.match(metrics, /meshca_auth_failures_total\{reason="token-review-overloaded"\} 1/);
  assert.match(metrics, /meshca_token_reviews_total\{result="error"\} 1/, 'only the review that was sent counts as one');
  assert.match(metrics, /meshca_token_review_duration_seconds_count 2/, 'latency of the two reviews sent, not of the wait of the third');
});

test('TokenReview results and cache outcomes are listed at 0 before the first bearer token', async () => {
  const registry = new Registry();
  new TokenReviewAuthenticator({
    trustDomain: 'td.test',
    audience: 'meshca',
    reviewer: { review: () => Promise.reject(new Error('not called')) },
    cacheTtlSeconds: 30,
    negativeCacheTtlSeconds: 5,
    cacheSize: 10,
    reviewTimeoutMs: 2000,
    maxConcurrentReviews: 1,
    clock: new ManualClock(),
    log: pino({ level: 'silent' }),
    metrics: registry,
  });
  const metrics = await registry.metrics();
  for (const result of ['ok', 'error', 'invalid', 'expired', 'wrong-audience', 'not-service-account']) {
    assert.match(metrics, new RegExp(`^meshca_token_reviews_total\\{result="${result}"\\} 0$`, 'm'));
  }
  for (const result of ['hit', 'miss']) assert.match(metrics, new RegExp(`^meshca_token_review_cache_total\\{result="${result}"\\} 0$`, 'm'));
});
