import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspectChain, formatDuration } from '../../../src/x509/inspect.js';
import { chainToPem } from '../../../src/x509/pem.js';
import { LeafSigner } from '../../../src/x509/leaf-signer.js';
import { generateKeyPair } from '../../../src/x509/keys.js';
import { NOW, TD, buildLeaf, makeCa } from './fixtures.js';

test('formats durations with the two largest units', () => {
  assert.equal(formatDuration(47 * 60_000 + 12_000), '47m12s');
  assert.equal(formatDuration(3 * 60_000), '3m');
  assert.equal(formatDuration(26 * 3600_000 + 5), '1d2h');
  assert.equal(formatDuration(400), '0s');
});

test('reports a good chain with SPIFFE ID, time left, key, roles and chaining', async () => {
  const ca = await makeCa();
  const s = new LeafSigner(ca.signingCa);
  const leaf = s.sign({ spiffeId: `spiffe://${TD}/ns/a`, dnsNames: ['a.svc'], ipAddresses: ['10.0.0.1'], publicKey: generateKeyPair('ed25519').publicKey, notBefore: new Date(NOW.getTime() - 1000), notAfter: new Date(NOW.getTime() + 47 * 60_000 + 12_000) });
  const out = inspectChain(chainToPem([leaf, ca.interDer, ca.rootDer]), { now: NOW });
  assert.match(out, /Certificate 1 of 3\n  role:       leaf\n  subject:    \(empty\)/);
  assert.match(out, /SPIFFE ID:  spiffe:\/\/example\.org\/ns\/a/);
  assert.match(out, /DNS SANs:   a\.svc/);
  assert.match(out, /IP SANs:    10\.0\.0\.1/);
  assert.match(out, /expires in 47m12s/);
  assert.match(out, /key:        ed25519/);
  assert.match(out, /role:       CA \(intermediate\)/);
  assert.match(out, /role:       CA \(self-signed root\)/);
  assert.match(out, /1 <- 2: issued and signed by the next certificate/);
  assert.match(out, /3: self-signed \(trust anchor\)/);
  assert.doesNotMatch(out, /PROBLEM/);
  const later = inspectChain(chainToPem([leaf]), { now: new Date(NOW.getTime() + 51 * 60_000) });
  assert.match(later, /EXPIRED 3m\d*s? ago/);
});

test('reports profile problems and broken chaining', async () => {
  const ca = await makeCa();
  const other = await makeCa();
  const bad = buildLeaf(ca, { uris: [`spiffe://${TD}/a`, `spiffe://${TD}/b`] });
  const out = inspectChain(chainToPem([bad, other.interDer]), { now: NOW, trustDomain: TD });
  assert.match(out, /SPIFFE ID:  \(ambiguous: 2 URI SANs\)/);
  assert.match(out, /PROBLEM:    must have exactly one URI SAN, found 2/);
  assert.match(out, /1 <- 2: PROBLEM: (issuer name does not match|signature does not verify)/);
  assert.throws(() => inspectChain('nothing here'), /no CERTIFICATE blocks/);
});
