/**
 * `npm run bench`: runs every benchmark and prints one JSON document. Figures that depend on the machine are
 * reported as ratios to baselines measured in the same run (raw Node crypto rates, sequential backends), so a noisy
 * or slower machine does not change the verdict. Set BENCH_ONLY=issuance,sds,vault to run a subset and
 * BENCH_SECONDS to change the per-measurement time.
 */
const only = (process.env.BENCH_ONLY ?? '').split(',').filter(Boolean);
const seconds = Number(process.env.BENCH_SECONDS ?? 3);
const want = (name: string) => only.length === 0 || only.includes(name);

async function main(): Promise<void> {
  const results: Record<string, unknown> = {
    node: process.version,
    cores: (await import('node:os')).availableParallelism(),
    startedAt: new Date().toISOString(),
  };
  if (want('issuance')) {
    const { runIssuanceBench } = await import('./issuance.js');
    results.issuance = await runIssuanceBench({ seconds });
    console.error(JSON.stringify({ issuance: results.issuance }));
  }
  if (want('vault')) {
    const { runVaultBench } = await import('./vault.js');
    results.vault = await runVaultBench({ seconds });
    console.error(JSON.stringify({ vault: results.vault }));
  }
  if (want('sds')) {
    const { runSdsBench } = await import('./sds.js');
    const streams = (process.env.BENCH_STREAMS ?? '1000,10000').split(',').map(Number);
    results.sds = await runSdsBench({ streams });
  }
  process.stdout.write(JSON.stringify(results, null, 2) + '\n');
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
