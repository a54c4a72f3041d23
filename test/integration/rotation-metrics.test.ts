import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli, startServe, tempDir, writeTestConfig } from '../support/cli.js';

/** meshca_ca_rotations_total by kind, from a live /metrics (a kind without a series is absent, not 0). */
async function rotations(httpPort: number): Promise<Record<string, number>> {
  const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`);
  assert.equal(res.status, 200);
  const out: Record<string, number> = {};
  for (const m of (await res.text()).matchAll(/^meshca_ca_rotations_total\{kind="([a-z]+)"\} (\S+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/** Polls /metrics until kind="forced" reaches `want` (a running serve re-reads the store every 2 s). */
async function forcedReaches(httpPort: number, want: number, ms = 15_000): Promise<Record<string, number>> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await rotations(httpPort);
    if (r.forced === want || Date.now() > end) return r;
    await new Promise((res) => setTimeout(res, 200));
  }
}

/**
 * `meshca rotate` runs in its own short-lived process, whose registry nobody scrapes: the running `meshca serve`
 * counts the forced rotation when it adopts the rotated state, once per rotate, and not again after a restart.
 */
test('meshca serve counts each `meshca rotate` from another process as kind="forced", once, and not again after restart', { timeout: 120_000 }, async () => {
  const t = await tempDir();
  const cfg = await writeTestConfig(t.dir);
  let server = await startServe(cfg);
  try {
    assert.deepEqual(await rotations(server.httpPort), { mint: 1, prepare: 0, activate: 0, forced: 0 }, 'every kind listed from the start');

    const first = await runCli(['rotate', '--config', cfg]);
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(await forcedReaches(server.httpPort, 1), { mint: 1, prepare: 0, activate: 0, forced: 1 });

    const second = await runCli(['rotate', '--config', cfg]);
    assert.equal(second.code, 0, second.stderr);
    assert.deepEqual(await forcedReaches(server.httpPort, 2), { mint: 1, prepare: 0, activate: 0, forced: 2 });

    const stopped = await server.stop('SIGTERM');
    assert.equal(stopped.code, 0, server.logs());
    server = await startServe(cfg);
    // Give the restarted server a few store polls: the two stored rotations must not be counted again.
    await new Promise((res) => setTimeout(res, 4500));
    assert.deepEqual(await rotations(server.httpPort), { mint: 0, prepare: 0, activate: 0, forced: 0 }, 'a restart adopts the stored state without counting it');
  } finally {
    await server.stop('SIGKILL');
    await t.cleanup();
  }
});
