import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { answerBatch, batchEntryError, responseTooLarge } from '../../../src/servers/controller/issue-batch.js';
import type { PreparedIssue, ProtoIssueBatchResult, ProtoIssueRequest, ProtoIssueResponse } from '../../../src/servers/controller/identity-service.js';
import { CaError, permissionDenied } from '../../../src/util/errors.js';
import type { KeyType } from '../../../src/x509/types.js';

const RESOURCE_EXHAUSTED = 8;

/**
 * A batch of fake entries: `size` is what each certificate result encodes to (carried in serial_number), an error
 * result encodes to its message length plus 10. `deny` entries fail authorisation.
 */
function harness(entries: { id: string; size: number; keyType?: KeyType; deny?: boolean }[], maxMessageBytes: number) {
  const requests: ProtoIssueRequest[] = entries.map((e) => ({ spiffe_id: e.id }));
  const byId = new Map(entries.map((e) => [e.id, e]));
  const prepared: string[] = [];
  const minted: string[] = [];
  /** Entries minted per wave (calls to mint before the first of them resolves). */
  const waves: string[][] = [];
  let wave: string[] | undefined;
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'warn' }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  const run = () =>
    answerBatch({
      requests,
      prepare: async (r) => {
        prepared.push(r.spiffe_id!);
        const e = byId.get(r.spiffe_id!)!;
        if (e.deny) throw permissionDenied(`not allowed: ${e.id}`);
        return { target: e.id, dnsNames: [], ttl: 3600, csr: undefined, keyType: e.keyType ?? 'ec-p256' } satisfies PreparedIssue;
      },
      mint: async (p) => {
        if (!wave) {
          wave = [];
          waves.push(wave);
          queueMicrotask(() => (wave = undefined));
        }
        wave.push(p.target);
        minted.push(p.target);
        return { spiffe_id: p.target, serial_number: String(byId.get(p.target)!.size) } as ProtoIssueResponse;
      },
      entryError: batchEntryError,
      encodedSize: (r: ProtoIssueBatchResult) => (r.certificate ? Number(r.certificate.serial_number) : r.error!.message.length + 10),
      maxMessageBytes,
      log,
    });
  return { run, prepared, minted, waves, logs };
}

const TOO_BIG = responseTooLarge(20_000);
const leftOut = TOO_BIG.length + 10;

test('entries are answered in order while they fit; from the first that would not, every entry gets RESOURCE_EXHAUSTED and none of them is minted', async () => {
  const ids = Array.from({ length: 30 }, (_, i) => `spiffe://td.test/w${i}`);
  const h = harness(ids.map((id) => ({ id, size: 1000 })), 20_000);
  const results = await h.run();
  assert.deepEqual(results.map((r) => r.spiffe_id), ids);
  const fitted = results.findIndex((r) => !r.certificate);
  // Certificates of 1000 bytes, and room kept for a RESOURCE_EXHAUSTED result for every later entry.
  const expected = Math.max(...Array.from({ length: 31 }, (_, k) => k).filter((k) => k * 1000 + (30 - k) * leftOut <= 20_000));
  assert.equal(fitted, expected);
  assert.deepEqual(h.minted, ids.slice(0, fitted), 'nothing minted that is not sent');
  for (const r of results.slice(fitted)) assert.deepEqual(r.error, { code: RESOURCE_EXHAUSTED, message: TOO_BIG, details: [] });
  assert.deepEqual(h.logs, [], 'no certificate left out');
});

test('the first entry of each kind of key is minted before any other of its kind, to learn its size; the rest are minted together', async () => {
  const h = harness(
    [
      { id: 'spiffe://td.test/a1', size: 900 },
      { id: 'spiffe://td.test/b1', size: 2500, keyType: 'rsa-2048' },
      { id: 'spiffe://td.test/a2', size: 900 },
      { id: 'spiffe://td.test/b2', size: 2500, keyType: 'rsa-2048' },
      { id: 'spiffe://td.test/a3', size: 900 },
    ],
    4_000_000,
  );
  const results = await h.run();
  assert.ok(results.every((r) => r.certificate));
  assert.deepEqual(h.waves, [['spiffe://td.test/a1', 'spiffe://td.test/b1'], ['spiffe://td.test/a2', 'spiffe://td.test/b2', 'spiffe://td.test/a3']]);
});

test('validation and authorisation errors keep their place and their own code, and cost only their size', async () => {
  const h = harness(
    [
      { id: 'spiffe://td.test/ok1', size: 1000 },
      { id: 'spiffe://td.test/no', size: 0, deny: true },
      { id: 'spiffe://td.test/ok2', size: 1000 },
    ],
    20_000,
  );
  const results = await h.run();
  assert.equal(results[0]!.certificate?.spiffe_id, 'spiffe://td.test/ok1');
  assert.equal(results[1]!.error?.code, 7);
  assert.match(results[1]!.error!.message, /not allowed/);
  assert.equal(results[2]!.certificate?.spiffe_id, 'spiffe://td.test/ok2');
});

test('a certificate larger than its kind predicted is left out, and logged as minted but not sent', async () => {
  // w1 teaches 1000 bytes; w2..w4 are predicted at 1000 + margin but are 3000: the wave overshoots.
  const h = harness(
    [
      { id: 'spiffe://td.test/w1', size: 1000 },
      { id: 'spiffe://td.test/w2', size: 3000 },
      { id: 'spiffe://td.test/w3', size: 3000 },
      { id: 'spiffe://td.test/w4', size: 3000 },
    ],
    6000,
  );
  const results = await h.run();
  assert.deepEqual(results.map((r) => (r.certificate ? 'cert' : r.error!.code)), ['cert', 'cert', RESOURCE_EXHAUSTED, RESOURCE_EXHAUSTED]);
  assert.deepEqual(h.minted, ['spiffe://td.test/w1', 'spiffe://td.test/w2', 'spiffe://td.test/w3', 'spiffe://td.test/w4']);
  const warn = h.logs.find((l) => String(l.msg).includes('minted but left out'));
  assert.equal(warn?.dropped, 2);
});

test('fail/a batch whose RESOURCE_EXHAUSTED answers alone would not fit fails whole, before anything is authorised or minted', async () => {
  const ids = Array.from({ length: 100 }, (_, i) => `spiffe://td.test/w${i}`);
  const h = harness(ids.map((id) => ({ id, size: 1000 })), 100 * leftOut - 1);
  await assert.rejects(h.run(), (e: CaError) => {
    assert.equal(e.code, 'RESOURCE_EXHAUSTED');
    assert.match(e.message, /the response would exceed server\.grpc\.maxMessageBytes \(\d+ bytes\) even without certificates; send fewer entries per batch/);
    return true;
  });
  assert.deepEqual(h.prepared, []);
  assert.deepEqual(h.minted, []);
});
