import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { generateKeyPair, importPkcs8DerAndWipe } from '../../../src/x509/keys.js';

/** Records every Buffer that Buffer.from returns while fn runs (copies of the key would show up here). */
function capturingBufferFrom<T>(fn: () => T): { result?: T; error?: unknown; made: Buffer[] } {
  const orig = Buffer.from;
  const made: Buffer[] = [];
  (Buffer as { from: unknown }).from = function (this: unknown, ...args: unknown[]) {
    const b = (orig as (...a: unknown[]) => Buffer).apply(Buffer, args);
    made.push(b);
    return b;
  };
  try {
    return { result: fn(), made };
  } catch (e) {
    return { error: e, made };
  } finally {
    (Buffer as { from: unknown }).from = orig;
  }
}

test('the CA key sent to a signer worker is zeroed after import, with no unwiped copy left behind', () => {
  const kp = generateKeyPair('ec-p256');
  const der = new Uint8Array(kp.privateKey.export({ type: 'pkcs8', format: 'der' }));
  const { result, error, made } = capturingBufferFrom(() => importPkcs8DerAndWipe(der));
  assert.equal(error, undefined);
  assert.ok(createPublicKey(result!).equals(kp.publicKey), 'the imported key is the CA key');
  assert.ok(der.every((b) => b === 0), 'the received DER is zeroed');
  for (const b of made) assert.ok(b.every((x) => x === 0), 'no copy of the key DER is left unwiped');
});

test('a CA key that fails to import is zeroed too', () => {
  const kp = generateKeyPair('ec-p256');
  const der = new Uint8Array(kp.privateKey.export({ type: 'pkcs8', format: 'der' }));
  der[0] = 0x31; // not a SEQUENCE: the import fails
  const { error, made } = capturingBufferFrom(() => importPkcs8DerAndWipe(der));
  assert.ok(error instanceof Error);
  assert.ok(der.every((b) => b === 0), 'the received DER is zeroed');
  for (const b of made) assert.ok(b.every((x) => x === 0), 'no copy of the key DER is left unwiped');
});
