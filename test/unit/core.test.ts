import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config/load.js';
import { ttlNotCovered } from '../../src/core.js';

const vault = { address: 'https://vault.example:8200', auth: { token: 't' } };

test('a workload.ttl within 1/6 of the signing CA lifetime is always covered (the defaults: 1h of 48h)', () => {
  assert.equal(ttlNotCovered(parseConfig({})), undefined);
  assert.equal(ttlNotCovered(parseConfig({ workload: { ttl: '8h' } })), undefined);
});

test('a workload.ttl beyond 1/6 of the signing CA lifetime names the signing-CA key and the shortest leaf', () => {
  assert.deepEqual(ttlNotCovered(parseConfig({ workload: { ttl: '1h' }, authority: { internal: { signingCaTtl: '2h' } } })), {
    signingCaTtlKey: 'authority.internal.signingCaTtl',
    signingCaTtlSeconds: 7200,
    shortestLeafSeconds: 1200,
  });
  assert.equal(
    ttlNotCovered(parseConfig({ workload: { ttl: '24h', maxTtl: '24h' }, authority: { type: 'vault', vault: { ...vault, intermediateTtl: '48h' } } }))?.signingCaTtlKey,
    'authority.vault.intermediateTtl',
  );
  assert.equal(
    ttlNotCovered(
      parseConfig({ workload: { ttl: '2h' }, authority: { type: 'cert-manager', certManager: { namespace: 'meshca', issuerRef: { name: 'ca' }, signingCaTtl: '10m' } } }),
    )?.signingCaTtlKey,
    'authority.certManager.signingCaTtl',
  );
});

test('leaf mode has no signing CA of meshca\'s own, so nothing cuts leaves short', () => {
  const cfg = parseConfig({ workload: { ttl: '1h' }, authority: { type: 'vault', vault: { ...vault, mode: 'leaf', role: 'meshca', intermediateTtl: '1m' } } });
  assert.equal(ttlNotCovered(cfg), undefined);
  const ctb = parseConfig({ workload: { ttl: '1h' }, authority: { type: 'cluster-trust-bundle', clusterTrustBundle: { signerName: 'example.com/meshca', mode: 'leaf', signingCaTtl: '10m' } } });
  assert.equal(ttlNotCovered(ctb), undefined);
});
