import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LeafSignerPool } from '../../../src/x509/signer-pool.js';
import { NOW, TD, makeCa } from './fixtures.js';

const validity = { notBefore: new Date(NOW.getTime() - 30_000), notAfter: new Date(NOW.getTime() + 3600_000) };

for (const workers of [0, 1]) {
  test(`a pool built with a trust domain profile-checks every leaf where it is signed (workers: ${workers})`, { timeout: 20_000 }, async () => {
    const ca = await makeCa();
    const pool = new LeafSignerPool({ workers, trustDomain: TD, inlineShare: 0 });
    try {
      pool.setCa(ca.signingCa);
      assert.equal(pool.checksProfile, true);
      const ok = await pool.signWithNewKey({ spiffeId: `spiffe://${TD}/w`, dnsNames: [], keyType: 'ec-p256', ...validity });
      assert.ok(ok.certDer.length > 100);
      // A leaf that breaks the profile (foreign trust domain) never comes back from the pool.
      await assert.rejects(
        pool.signWithNewKey({ spiffeId: 'spiffe://other.example/w', dnsNames: [], keyType: 'ec-p256', ...validity }),
        /trust domain/,
      );
    } finally {
      await pool.close();
    }
  });
}
