import { pino } from 'pino';
import { Registry } from 'prom-client';
import { pathToFileURL } from 'node:url';
import { startFakeVault, createTestCsr } from '../fakes/vault.js';
import { VaultBackend } from '../../providers/vault/backend.js';
import { vaultConfigSchema } from '../../providers/vault/config.js';
import { SystemClock } from '../../src/util/clock.js';
import type { StateStore } from '../../src/store/types.js';
import type { BackendContext } from '../../providers/types.js';

/**
 * Vault leaf mode throughput against the fake Vault with added latency (default 5 ms per request), signing
 * sequentially and with N signs in flight (request pipelining over node-vault's keep-alive agent), next to
 * intermediate mode's single mint latency (meshca then signs leaves locally; the issuance bench measures that).
 * Run alone: `node dist/test/bench/vault.js [seconds]`.
 */

const TD = 'bench.example';

class MemoryStore implements StateStore {
  readonly location = 'memory';
  private readonly m = new Map<string, Buffer>();
  async read(k: string) {
    return this.m.get(k);
  }
  async write(k: string, v: Buffer) {
    this.m.set(k, v);
  }
  async list() {
    return [...this.m.keys()];
  }
  async withLock<T>(fn: () => Promise<T>) {
    return fn();
  }
}

export async function runVaultBench(opts: { seconds: number; latencyMs?: number; concurrency?: readonly number[] }): Promise<object> {
  const latencyMs = opts.latencyMs ?? 5;
  const levels = opts.concurrency ?? [1, 4, 16, 64];
  const fake = await startFakeVault({ latencyMs });
  fake.setRole('pki', 'meshca', { allowed_uri_sans: `spiffe://${TD}/*`, require_cn: false, key_type: 'any', max_ttl: '24h', no_store: true });
  const ctx = (): BackendContext => ({ trustDomain: TD, clock: new SystemClock(), log: pino({ level: 'silent' }), store: new MemoryStore(), metrics: new Registry() });
  const leafBackend = new VaultBackend(vaultConfigSchema.parse({ address: fake.url, mode: 'leaf', role: 'meshca', auth: { token: fake.rootToken } }), ctx());
  const intBackend = new VaultBackend(vaultConfigSchema.parse({ address: fake.url, auth: { token: fake.rootToken } }), ctx());
  try {
    await leafBackend.init();
    await intBackend.init();
    // A pool of CSRs made up front so the figure measures Vault round trips and signing, not key generation.
    const pool = await Promise.all(
      Array.from({ length: 64 }, async (_, i) => {
        const id = `spiffe://${TD}/ns/bench/sa/w${i}`;
        return { id, csr: await createTestCsr({ uris: [id] }) };
      }),
    );
    let next = 0;
    const signOne = async (): Promise<void> => {
      const p = pool[next++ % pool.length]!;
      await leafBackend.signLeaf({ csrDer: p.csr.der, csrPem: p.csr.pem, publicKey: p.csr.publicKey, spiffeId: p.id, dnsNames: [], ttlSeconds: 3600 });
    };
    const leaf: Array<{ inFlight: number; leavesPerSecond: number; meanLatencyMs: number; signed: number }> = [];
    for (const n of levels) {
      await signOne(); // warm the connection
      const until = performance.now() + opts.seconds * 1000;
      let signed = 0;
      let latencySum = 0;
      const worker = async (): Promise<void> => {
        while (performance.now() < until) {
          const t0 = performance.now();
          await signOne();
          latencySum += performance.now() - t0;
          signed++;
        }
      };
      const t0 = performance.now();
      await Promise.all(Array.from({ length: n }, worker));
      const elapsed = (performance.now() - t0) / 1000;
      leaf.push({ inFlight: n, leavesPerSecond: round(signed / elapsed), meanLatencyMs: round(latencySum / Math.max(1, signed)), signed });
    }
    const seq = leaf.find((l) => l.inFlight === 1)?.leavesPerSecond ?? leaf[0]!.leavesPerSecond;
    const best = leaf.reduce((a, b) => (b.leavesPerSecond > a.leavesPerSecond ? b : a));

    // Intermediate mode: one Vault call per signing-CA rotation.
    const mints: number[] = [];
    for (let i = 0; i < 5; i++) {
      const csr = await createTestCsr({ ca: true, cn: 'meshca bench CA' });
      const t0 = performance.now();
      await intBackend.mintIntermediate({ csrDer: csr.der, csrPem: csr.pem, publicKey: csr.publicKey, ttlSeconds: 48 * 3600 });
      mints.push(performance.now() - t0);
    }
    mints.sort((a, b) => a - b);
    return {
      addedLatencyMs: latencyMs,
      leafMode: leaf,
      pipeliningSpeedup: round(best.leavesPerSecond / seq),
      bestInFlight: best.inFlight,
      intermediateMode: {
        mintLatencyMsMedian: round(mints[Math.floor(mints.length / 2)]!),
        mintLatencyMsMax: round(mints[mints.length - 1]!),
        vaultCallsPerRotation: 1,
        note: 'leaves are then signed locally by meshca; combine with the issuance benchmark',
      },
    };
  } finally {
    await leafBackend.close();
    await intBackend.close();
    await fake.close();
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runVaultBench({ seconds: Number(process.argv[2] ?? process.env.BENCH_SECONDS ?? 2) }).then(
    (r) => {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      process.exit(0);
    },
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
