import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { healthProblem, vaultHeaders } from '../../../providers/vault/wire.js';
import { caNotAfterFromRefusal, leafNotAfterFromRefusal, ttlWithin } from '../../../providers/vault/ttl.js';
import { leafRefusal } from '../../../providers/vault/refusals.js';

describe('vault wire helpers', () => {
  it('ok/headers: X-Vault-Request always, the token only when given, a fresh object each time', () => {
    assert.deepEqual(vaultHeaders(), { 'X-Vault-Request': 'true' });
    assert.deepEqual(vaultHeaders('t'), { 'X-Vault-Request': 'true', 'X-Vault-Token': 't' });
    assert.notEqual(vaultHeaders(), vaultHeaders());
  });

  it('ok/sys/health bodies in Vault\'s order', () => {
    const base = { initialized: true, sealed: false, standby: false, performance_standby: false, replication_dr_mode: 'disabled' };
    assert.equal(healthProblem(base), undefined);
    assert.equal(healthProblem({ ...base, standby: true }), undefined);
    assert.equal(healthProblem({ ...base, standby: true, performance_standby: true }), undefined);
    assert.equal(healthProblem({ ...base, replication_dr_mode: 'primary' }), undefined);
    assert.equal(healthProblem({ ...base, initialized: false, sealed: true }), 'vault: not initialized');
    assert.equal(healthProblem({ ...base, sealed: true }), 'vault: sealed');
    assert.match(healthProblem({ ...base, replication_dr_mode: 'secondary' })!, /^vault: DR secondary \(472\)/);
  });

  it('fail/sys/health answers that are not Vault\'s are problems', () => {
    for (const body of [undefined, null, '', '<html>502 Bad Gateway</html>', {}, { errors: ['x'] }, { initialized: 'true', sealed: false }]) {
      assert.match(healthProblem(body)!, /^vault: sys\/health answered without Vault's health fields/, JSON.stringify(body));
    }
  });

  it('ok/reads the CA notAfter from Vault\'s leaf_not_after_behavior=err refusal (RFC 3339, nanoseconds too)', () => {
    const text = 'cannot satisfy request, as TTL would result in notAfter of 2026-12-05T10:00:00.123456789Z that is beyond the expiration of the CA certificate at 2026-12-05T09:30:00.5Z';
    assert.equal(caNotAfterFromRefusal(text), Date.parse('2026-12-05T09:30:00.500Z'));
    assert.equal(caNotAfterFromRefusal('unknown role: x'), undefined);
    assert.equal(caNotAfterFromRefusal('beyond the expiration of the CA certificate'), undefined);
  });

  it('ok/reads the leaf notAfter Vault computed (its clock + TTL) from the same refusal', () => {
    const text = 'cannot satisfy request, as TTL would result in notAfter of 2026-12-05T10:00:00.123456789Z that is beyond the expiration of the CA certificate at 2026-12-05T09:30:00.5Z';
    assert.equal(leafNotAfterFromRefusal(text), Date.parse('2026-12-05T10:00:00.123Z'));
    assert.equal(leafNotAfterFromRefusal('beyond the expiration of the CA certificate at 2026-12-05T09:30:00Z'), undefined);
    assert.equal(leafNotAfterFromRefusal('unknown role: x'), undefined);
  });

  it('ok/ttlWithin keeps a fitting TTL, shortens one that outlives the issuer (5 s margin), gives up near the end', () => {
    const now = 1_000_000_000_000;
    assert.equal(ttlWithin(3600, now, undefined), 3600);
    assert.equal(ttlWithin(3600, now, now + 7200_000), 3600);
    assert.equal(ttlWithin(3600, now, now + 1800_000), 1795);
    assert.equal(ttlWithin(3600, now, now + 6000), 1);
    assert.equal(ttlWithin(3600, now, now + 5999), undefined);
    assert.equal(ttlWithin(3600, now, now - 1000), undefined);
  });

  it('fail/leaf refusals: role set-up problems are FAILED_PRECONDITION, the workload\'s are INVALID_ARGUMENT', () => {
    const o = { role: 'meshca', pkiMount: 'pki_int', path: 'pki_int/sign/meshca', spiffeId: 'spiffe://td/a' };
    assert.equal(leafRefusal('unknown role: meshca', o).code, 'FAILED_PRECONDITION');
    assert.equal(leafRefusal('role requires keys of type rsa', o).code, 'FAILED_PRECONDITION');
    assert.equal(leafRefusal('the common_name field is required, or must be provided in a CSR', o).code, 'FAILED_PRECONDITION');
    const uri = leafRefusal('URI Subject Alternative Names were provided via CSR which are not valid for this role', o);
    assert.equal(uri.code, 'INVALID_ARGUMENT');
    assert.match(uri.message, /^vault: role meshca does not allow URI SAN spiffe:\/\/td\/a/);
    const other = leafRefusal('request signature invalid', o);
    assert.equal(other.code, 'INVALID_ARGUMENT');
    assert.equal(other.message, 'vault: pki_int/sign/meshca refused spiffe://td/a: request signature invalid');
  });
});
