import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { backoffMs, cleanVaultText, isRetryable, toVaultFailure, unavailableReason, withRetry, VaultCallError } from '../../../providers/vault/retry.js';
import { certsFrom, pathToRoot } from '../../../providers/vault/chain.js';

const apiError = (status: number, errors: string[]) => Object.assign(new Error(errors[0] ?? `Status ${status}`), { response: { statusCode: status, body: { errors } } });

describe('vault retry classification', () => {
  it('ok/transient statuses and transport errors are retryable; 4xx are not', () => {
    for (const s of [412, 429, 472, 473, 500, 502, 503, 504]) assert.ok(isRetryable(toVaultFailure(apiError(s, []))), `${s}`);
    for (const s of [400, 403, 404, 405, 501]) assert.ok(!isRetryable(toVaultFailure(apiError(s, []))), `${s}`);
    assert.ok(isRetryable(toVaultFailure(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))));
    assert.equal(toVaultFailure(Object.assign(new Error('timeout of 10ms exceeded'), { code: 'ECONNABORTED' })).kind, 'timeout');
    assert.equal(toVaultFailure(Object.assign(new Error('x'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' })).kind, 'tls');
  });

  it('ok/keeps only Vault\'s error text, unwrapping multierror formatting', () => {
    assert.equal(cleanVaultText('1 error occurred:\n\t* permission denied\n\n'), 'permission denied');
    assert.equal(unavailableReason(toVaultFailure(apiError(503, ['Vault is sealed']))), 'vault: sealed');
    const f = toVaultFailure(Object.assign(apiError(400, ['bad']), { config: { headers: { 'X-Vault-Token': 'hvs.secret' } } }));
    assert.ok(!JSON.stringify(f).includes('hvs.secret'));
  });

  it('ok/backoff is capped, exponential and jittered within [d/2, d]', () => {
    const p = { attempts: 10, baseMs: 100, maxMs: 1000 };
    assert.equal(backoffMs(p, 0, () => 0), 50);
    assert.equal(backoffMs(p, 0, () => 1), 100);
    assert.equal(backoffMs(p, 3, () => 1), 800);
    assert.equal(backoffMs(p, 8, () => 1), 1000);
  });

  it('fail/retries transient failures up to attempts, never 4xx', async () => {
    let calls = 0;
    const sleeps: number[] = [];
    await assert.rejects(
      withRetry(async () => {
        calls++;
        throw apiError(503, ['Vault is sealed']);
      }, { policy: { attempts: 4, baseMs: 10, maxMs: 20 }, sleep: async (ms) => void sleeps.push(ms), random: () => 1 }),
      (e: unknown) => e instanceof VaultCallError && e.exhausted && e.failure.status === 503,
    );
    assert.equal(calls, 4);
    assert.deepEqual(sleeps, [10, 20, 20]);
    calls = 0;
    await assert.rejects(
      withRetry(async () => {
        calls++;
        throw apiError(400, ['unknown role: x']);
      }, { policy: { attempts: 4, baseMs: 1, maxMs: 1 }, sleep: async () => {} }),
      (e: unknown) => e instanceof VaultCallError && !e.exhausted && e.failure.errors[0] === 'unknown role: x',
    );
    assert.equal(calls, 1);
  });

  it('ok/chain helpers dedupe and find no root in an empty pool', () => {
    assert.deepEqual(certsFrom(undefined, '', []), []);
    assert.equal(typeof pathToRoot, 'function');
  });
});
