import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chainToPem, pemToDers, toPem } from '../../../src/x509/pem.js';

test('round-trips DER through PEM with 64-column lines and skips other blocks and text', () => {
  const a = randomBytes(100);
  const b = randomBytes(47);
  const pem = toPem(a);
  assert.ok(pem.split('\n').every((l) => l.length <= 64));
  const mixed = `subject=foo\n${pem}${toPem(randomBytes(10), 'PRIVATE KEY')}\r\n${toPem(b).replace(/\n/g, '\r\n')}`;
  assert.deepEqual(pemToDers(mixed), [a, b]);
  assert.deepEqual(pemToDers(chainToPem([a, b])), [a, b]);
  assert.deepEqual(pemToDers(''), []);
});

test('fail/malformed PEM throws INVALID_ARGUMENT naming the problem', () => {
  const bad = (s: string, re: RegExp): void => assert.throws(() => pemToDers(s), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && re.test(e.message));
  bad('-----BEGIN CERTIFICATE-----\nAAAA\n', /has no END line/);
  bad('-----END CERTIFICATE-----\n', /without BEGIN/);
  bad('-----BEGIN CERTIFICATE-----\nAA*A\n-----END CERTIFICATE-----\n', /invalid base64 on line 2/);
  bad('-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n', /not valid base64/);
  bad('-----BEGIN CERTIFICATE-----\nAA==\nAAAA\n-----END CERTIFICATE-----\n', /not valid base64/);
  bad('-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n', /empty CERTIFICATE block/);
  bad('-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n', /ends with END PRIVATE KEY/);
  bad('-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END CERTIFICATE-----\n', /headers/);
});
