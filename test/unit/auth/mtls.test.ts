import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { Registry } from 'prom-client';
import { MtlsAuthenticator } from '../../../src/auth/mtls.js';
import { SystemClock } from '../../../src/util/clock.js';
import { CaError } from '../../../src/util/errors.js';
import { FakeAuthority } from '../../fakes/authority.js';

const WEB = 'spiffe://example.org/ns/default/sa/web';

async function setup() {
  const clock = new SystemClock();
  const ca = await FakeAuthority.create({ clock, trustDomain: 'example.org' });
  const auth = new MtlsAuthenticator({ trustDomain: 'example.org', bundle: () => ca.bundle(), clock, log: pino({ level: 'silent' }), metrics: new Registry() });
  const now = Date.now();
  const leaf = await ca.makeLeaf({ uris: [WEB], notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000) });
  return { auth, chain: [leaf.certDer] };
}

test('a chain OpenSSL refused for time alone stays refused with the wall clock: the time error may hide purpose, path length or critical-extension errors', async () => {
  const { auth, chain } = await setup();
  // The chain is valid now; OpenSSL's verdict at the handshake (not yet valid) still stands.
  for (const tlsError of ['CERT_NOT_YET_VALID', 'CERT_HAS_EXPIRED']) {
    await assert.rejects(
      auth.authenticate({ peerCertChainDer: chain, peerLeafDer: chain[0]!, tlsVerified: false, tlsError, viaUds: false }),
      (e: unknown) => e instanceof CaError && e.code === 'UNAUTHENTICATED' && e.message.includes(`failed TLS verification (${tlsError})`),
      tlsError,
    );
  }
  // Not from the cache either: a leaf accepted once is refused on a connection OpenSSL refused.
  assert.equal((await auth.authenticate({ peerCertChainDer: chain, viaUds: false })).spiffeId, WEB);
  await assert.rejects(auth.authenticate({ peerCertChainDer: chain, peerLeafDer: chain[0]!, tlsVerified: false, tlsError: 'CERT_HAS_EXPIRED', viaUds: false }));
});
