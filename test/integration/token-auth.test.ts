import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { startFakeKubeApiServer, type FakeKube } from '../fakes/kube-apiserver.js';
import { ManualClock } from '../fakes/clock.js';
import { TokenReviewAuthenticator, createTokenAuthenticator, kubeTokenReviewer } from '../../src/auth/token.js';
import { hungApiServer, kubeFor } from '../support/hung-api.js';
import { SystemClock } from '../../src/util/clock.js';
import { kubernetesTokensSchema } from '../../src/auth/config.js';
import { CaError } from '../../src/util/errors.js';
import { CompositeAuthenticator } from '../../src/auth/composite.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** JWT-shaped test tokens (the fake only looks them up; the authenticator reads `exp` to bound its cache). */
function jwt(sub: string, expSeconds?: number): string {
  const enc = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${enc({ alg: 'RS256', kid: 'k' })}.${enc({ sub, ...(expSeconds !== undefined ? { exp: expSeconds } : {}) })}.c2lnbmF0dXJl${sub.length}`;
}

const clock = new ManualClock(new Date('2026-03-01T00:00:00Z'));
const nowS = (): number => Math.floor(clock.nowMs() / 1000);
const GOOD = jwt('good', nowS() + 3600);
const SHORT = jwt('short', nowS() + 10);
const EXPIRED = jwt('expired');
const OTHER_AUD = jwt('other-aud');
const USER = jwt('user');
const UNKNOWN = jwt('unknown');

let kube: FakeKube;
const lines: string[] = [];
const log = pino(
  { level: 'debug' },
  new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  }),
);

before(async () => {
  kube = await startFakeKubeApiServer({
    clock,
    users: {
      // meshca's own service account: may create TokenReviews, nothing else.
      meshca: { rules: [{ apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] }] },
      nobody: { rules: [] },
    },
    tokens: {
      [GOOD]: { username: 'system:serviceaccount:shop:cart', audiences: ['meshca'], groups: ['system:serviceaccounts', 'system:serviceaccounts:shop'] },
      [SHORT]: { username: 'system:serviceaccount:shop:short', audiences: ['meshca'] },
      [EXPIRED]: { username: 'system:serviceaccount:shop:cart', audiences: ['meshca'], expiresAt: new Date(clock.nowMs() - 1000) },
      [OTHER_AUD]: { username: 'system:serviceaccount:shop:cart', audiences: ['istio-ca'] },
      [USER]: { username: 'alice@example.com', audiences: ['meshca'] },
    },
  });
});

after(async () => {
  await kube.close();
});

function makeAuth(user = 'meshca', over: Partial<{ cacheTtl: string; negativeCacheTtl: string; cacheSize: number }> = {}) {
  const cfg = kubernetesTokensSchema.parse({ enabled: true, ...over });
  return createTokenAuthenticator(cfg, { trustDomain: 'td.test', clock, log, metrics: new Registry(), kubeConfig: kube.kubeConfig(user) });
}

const reviews = (): number => kube.requests.filter((r) => r.resource === 'tokenreviews').length;
const bearer = (t: string) => ({ peerCertChainDer: [], viaUds: false, authorization: `Bearer ${t}` });

async function refusal(a: TokenReviewAuthenticator, token: string): Promise<CaError> {
  try {
    await a.authenticate(bearer(token));
  } catch (e) {
    assert.ok(e instanceof CaError, `expected CaError, got ${e}`);
    return e;
  }
  assert.fail('expected the token to be refused');
}

test('a projected service account token for our audience becomes spiffe://td/ns/<ns>/sa/<sa>', async () => {
  const a = (await makeAuth())!;
  const caller = await a.authenticate(bearer(GOOD));
  assert.deepEqual(caller, { spiffeId: 'spiffe://td.test/ns/shop/sa/cart', via: 'k8s-token' });
  const tr = kube.requests.filter((r) => r.resource === 'tokenreviews').at(-1)!;
  assert.equal(tr.user, 'meshca');
  assert.equal(tr.status, 201);
});

test('the review asks for our audience only', async () => {
  const cfg = kubernetesTokensSchema.parse({ enabled: true, audience: 'istio-ca' });
  const a = (await createTokenAuthenticator(cfg, { trustDomain: 'td.test', clock, log, metrics: new Registry(), kubeConfig: kube.kubeConfig('meshca') }))!;
  // OTHER_AUD was issued for istio-ca: accepted with that audience configured...
  assert.equal((await a.authenticate(bearer(OTHER_AUD))).spiffeId, 'spiffe://td.test/ns/shop/sa/cart');
  // ...and GOOD (issued for meshca) is refused.
  const e = await refusal(a, GOOD);
  assert.match(e.message, /not issued for audience "istio-ca"/);
});

test('an expired token is UNAUTHENTICATED with reason expired', async () => {
  const a = (await makeAuth())!;
  const e = await refusal(a, EXPIRED);
  assert.equal(e.code, 'UNAUTHENTICATED');
  assert.match(e.message, /expired/);
});

test('a token for another audience is UNAUTHENTICATED naming the audience we need', async () => {
  const a = (await makeAuth())!;
  const e = await refusal(a, OTHER_AUD);
  assert.equal(e.code, 'UNAUTHENTICATED');
  assert.match(e.message, /not issued for audience "meshca"/);
});

test('a token of a user that is not a service account is refused', async () => {
  const a = (await makeAuth())!;
  const e = await refusal(a, USER);
  assert.equal(e.code, 'UNAUTHENTICATED');
  assert.match(e.message, /belongs to "alice@example.com", not to a Kubernetes service account/);
});

test('an unknown token and malformed headers are refused', async () => {
  const a = (await makeAuth())!;
  assert.match((await refusal(a, UNKNOWN)).message, /rejected by the Kubernetes API server/);
  const before1 = reviews();
  for (const h of ['Bearer', 'Bearer a b', 'Basic dXNlcjpwYXNz', 'Bearer tok\u00e9n']) {
    await assert.rejects(a.authenticate({ peerCertChainDer: [], viaUds: false, authorization: h }), (e: unknown) => e instanceof CaError && e.code === 'UNAUTHENTICATED' && /Bearer|well-formed/.test(e.message));
  }
  assert.equal(reviews(), before1, 'malformed headers never reach the API server');
});

test('a cached review answers the second call without a TokenReview, until cacheTtl passes', async () => {
  const a = (await makeAuth('meshca', { cacheTtl: '30s' }))!;
  const n0 = reviews();
  await a.authenticate(bearer(GOOD));
  await a.authenticate(bearer(GOOD));
  await Promise.all([1, 2, 3].map(() => a.authenticate(bearer(GOOD))));
  assert.equal(reviews(), n0 + 1, 'one TokenReview for five calls');
  clock.advance(31_000);
  await a.authenticate(bearer(GOOD));
  assert.equal(reviews(), n0 + 2, 'asked again after cacheTtl');
});

test('concurrent calls with one new token share one TokenReview', async () => {
  const a = (await makeAuth())!;
  const n0 = reviews();
  const out = await Promise.all(Array.from({ length: 20 }, () => a.authenticate(bearer(GOOD))));
  assert.equal(out.length, 20);
  assert.equal(reviews(), n0 + 1);
});

test("a cached review never outlives the token's exp", async () => {
  const a = (await makeAuth('meshca', { cacheTtl: '60s' }))!;
  const n0 = reviews();
  const shortTok = jwt('short2', nowS() + 5);
  kube.addToken(shortTok, { username: 'system:serviceaccount:shop:s2', audiences: ['meshca'], expiresAt: new Date(clock.nowMs() + 5000) });
  await a.authenticate(bearer(shortTok));
  clock.advance(6000);
  const e = await refusal(a, shortTok);
  assert.match(e.message, /expired/);
  assert.equal(reviews(), n0 + 2, 'the expired token was reviewed again, not served from cache');
});

test('refusals are cached briefly; a token that becomes valid is accepted after negativeCacheTtl', async () => {
  const a = (await makeAuth('meshca', { negativeCacheTtl: '5s' }))!;
  const late = jwt('late', nowS() + 3600);
  const n0 = reviews();
  await refusal(a, late);
  await refusal(a, late);
  assert.equal(reviews(), n0 + 1, 'second refusal from cache');
  kube.addToken(late, { username: 'system:serviceaccount:shop:late', audiences: ['meshca'] });
  clock.advance(5001);
  assert.equal((await a.authenticate(bearer(late))).spiffeId, 'spiffe://td.test/ns/shop/sa/late');
});

test('the cache is bounded', async () => {
  const a = (await makeAuth('meshca', { cacheSize: 3 }))!;
  for (let i = 0; i < 6; i++) {
    const t = jwt(`bounded${i}`, nowS() + 3600);
    kube.addToken(t, { username: `system:serviceaccount:shop:b${i}`, audiences: ['meshca'] });
    await a.authenticate(bearer(t));
  }
  assert.equal(a.cacheSize(), 3);
});

test('API server failure: retryable UNAUTHENTICATED, not cached; missing RBAC is logged with the permission to grant', async () => {
  const a = (await makeAuth())!;
  const t = jwt('flaky', nowS() + 3600);
  kube.addToken(t, { username: 'system:serviceaccount:shop:flaky', audiences: ['meshca'] });
  kube.failNext(1, { code: 503, match: (r) => r.resource === 'tokenreviews' });
  const e = await refusal(a, t);
  assert.equal(e.code, 'UNAUTHENTICATED');
  assert.equal(e.retryable, true);
  assert.match(e.message, /TokenReview failed/);
  assert.doesNotMatch(e.message, /503|injected/, 'backend detail stays out of the caller-facing message');
  assert.equal((await a.authenticate(bearer(t))).spiffeId, 'spiffe://td.test/ns/shop/sa/flaky', 'the failure was not cached');

  const denied = (await makeAuth('nobody'))!;
  const e2 = await refusal(denied, t);
  assert.match(e2.message, /TokenReview failed/);
  assert.match(e2.detail ?? '', /403.*tokenreviews.*create|create.*tokenreviews/);
  assert.ok(lines.some((l) => l.includes('needs \\"create\\" on tokenreviews.authentication.k8s.io') || l.includes('needs "create" on tokenreviews')));
});

test('the composite authenticator routes Bearer headers to the token authenticator (never to mTLS)', async () => {
  const token = (await makeAuth())!;
  const mtls = { authenticate: async () => assert.fail('mTLS must not be consulted for a bearer token') };
  const c = new CompositeAuthenticator({ mtls, token, log, metrics: new Registry() });
  assert.equal((await c.authenticate(bearer(GOOD))).via, 'k8s-token');
  await assert.rejects(c.authenticate(bearer(OTHER_AUD)), (e: unknown) => e instanceof CaError && e.code === 'UNAUTHENTICATED');
});

test('auth.kubernetesTokens.kubeconfig: a kubeconfig file is used; a bad path is named', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'meshca-token-'));
  try {
    const file = join(dir, 'kubeconfig');
    await writeFile(file, kube.kubeconfigYaml('meshca'), { mode: 0o600 });
    const a = (await createTokenAuthenticator(kubernetesTokensSchema.parse({ enabled: true, kubeconfig: file }), { trustDomain: 'td.test', clock, log, metrics: new Registry() }))!;
    assert.equal((await a.authenticate(bearer(GOOD))).spiffeId, 'spiffe://td.test/ns/shop/sa/cart');
    await assert.rejects(
      createTokenAuthenticator(kubernetesTokensSchema.parse({ enabled: true, kubeconfig: join(dir, 'missing') }), { trustDomain: 'td.test', clock, log, metrics: new Registry() }),
      /auth\.kubernetesTokens\.kubeconfig: cannot load kubeconfig/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('disabled config builds no authenticator', async () => {
  assert.equal(await createTokenAuthenticator(kubernetesTokensSchema.parse({}), { trustDomain: 'td.test', clock, log, metrics: new Registry() }), undefined);
});

test('metrics count reviews by result and cache hits', async () => {
  const metrics = new Registry();
  const cfg = kubernetesTokensSchema.parse({ enabled: true });
  const a = (await createTokenAuthenticator(cfg, { trustDomain: 'td.test', clock, log, metrics, kubeConfig: kube.kubeConfig('meshca') }))!;
  const t = jwt('metrics', nowS() + 3600);
  kube.addToken(t, { username: 'system:serviceaccount:shop:m', audiences: ['meshca'] });
  await a.authenticate(bearer(t));
  await a.authenticate(bearer(t));
  await refusal(a, EXPIRED);
  const text = await metrics.metrics();
  assert.match(text, /meshca_token_reviews_total\{result="ok"\} 1/);
  assert.match(text, /meshca_token_reviews_total\{result="expired"\} 1/);
  assert.match(text, /meshca_token_review_cache_total\{result="hit"\} 1/);
  assert.match(text, /meshca_auth_failures_total\{reason="token-expired"\} 1/);
});

// Runs last: every token used above must be absent from every log line and error message.
test('no token text ever appears in logs or errors', async () => {
  const a = (await makeAuth())!;
  const msgs: string[] = [];
  for (const t of [GOOD, SHORT, EXPIRED, OTHER_AUD, USER, UNKNOWN]) {
    try {
      await a.authenticate(bearer(t));
    } catch (e) {
      msgs.push((e as CaError).message, (e as CaError).detail ?? '');
    }
  }
  const all = lines.join('') + msgs.join('\n');
  assert.ok(lines.length > 5, 'there were log lines to check');
  for (const t of [GOOD, SHORT, EXPIRED, OTHER_AUD, USER, UNKNOWN]) {
    assert.ok(!all.includes(t), 'a token leaked');
    assert.ok(!all.includes(t.split('.')[1]!), 'a token payload leaked');
  }
});

test('the real client aborts a TokenReview the API server never answers, at the review timeout', async () => {
  const h = await hungApiServer();
  try {
    const a = new TokenReviewAuthenticator({
      trustDomain: 'td.test',
      audience: 'meshca',
      reviewer: kubeTokenReviewer(await kubeFor(h.port)),
      cacheTtlSeconds: 30,
      negativeCacheTtlSeconds: 5,
      cacheSize: 10,
      reviewTimeoutMs: 300,
      maxConcurrentReviews: 1,
      clock: new SystemClock(),
      log: pino({ level: 'silent' }),
      metrics: new Registry(),
    });
    const t0 = Date.now();
    await assert.rejects(a.authenticate({ peerCertChainDer: [], viaUds: false, authorization: 'Bearer hung-1' }), (e: unknown) => e instanceof CaError && e.code === 'UNAUTHENTICATED' && e.retryable);
    assert.ok(Date.now() - t0 < 3000);
    const deadline = Date.now() + 3000;
    while (h.closed() < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(h.requests.length, 1);
    assert.equal(h.closed(), 1, 'the HTTP request was aborted, not left open');
    // The only slot is free again: the next token's review is sent (and hangs and is aborted in turn).
    await assert.rejects(a.authenticate({ peerCertChainDer: [], viaUds: false, authorization: 'Bearer hung-2' }), (e: unknown) => e instanceof CaError && e.code === 'UNAUTHENTICATED');
    assert.equal(h.requests.length, 2);
  } finally {
    h.server.closeAllConnections();
    await new Promise((r) => h.server.close(r));
  }
});
