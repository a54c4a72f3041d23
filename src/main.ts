import 'reflect-metadata';
import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
import { openCore, type Core } from './core.js';
import { startOpsServer, splitHostPort } from './servers/ops-http.js';
import { createLogger } from './telemetry/logger.js';
import { SystemClock, type Clock } from './util/clock.js';
import { errorMessage } from './util/errors.js';

/** Hard limit for a SIGTERM drain; the brief promises exit within 20 s. */
const DRAIN_LIMIT_MS = 15_000;

export interface RunningServer {
  readonly core: Core;
  readonly httpPort: number;
  readonly grpcPort: number | undefined;
  /** Drains and stops everything; resolves when all listeners are closed. */
  stop(): Promise<void>;
}

export interface StartOptions {
  readonly log?: Logger;
  readonly clock?: Clock;
}

/**
 * The composition root: opens the CA core and starts the listeners. Only this module sees every part.
 */
export async function startServer(cfg: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger(cfg.log.level);
  const clock = opts.clock ?? new SystemClock();
  const core = await openCore(cfg, { log, clock });
  core.authority.start();
  const closers: (() => Promise<void>)[] = [];
  try {
    const { host, port } = splitHostPort(cfg.server.http.address);
    const ops = await startOpsServer({ host, port, metrics: core.metrics, health: () => core.authority.health() });
    closers.push(() => ops.close());
    log.info({ address: `${host}:${ops.port}` }, 'ops HTTP listening (/healthz, /readyz, /metrics)');
    let stopped = false;
    return {
      core,
      httpPort: ops.port,
      grpcPort: undefined,
      stop: async () => {
        if (stopped) return;
        stopped = true;
        for (const c of closers.reverse()) await c().catch((e) => log.warn({ err: errorMessage(e) }, 'close failed'));
        await core.close();
      },
    };
  } catch (e) {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    await core.close();
    throw e;
  }
}

/** `meshca serve`: start, then drain and exit on SIGTERM/SIGINT. */
export async function runServe(cfg: Config): Promise<void> {
  const log = createLogger(cfg.log.level);
  const server = await startServer(cfg, { log });
  log.info({ trustDomain: cfg.trustDomain, dataDir: cfg.dataDir, authority: cfg.authority.type }, 'meshca ready');
  await new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      log.info({ signal: sig }, 'draining');
      const hard = setTimeout(() => {
        log.error('drain took too long; exiting');
        process.exit(1);
      }, DRAIN_LIMIT_MS);
      hard.unref();
      server.stop().then(
        () => {
          log.info('stopped');
          resolve();
        },
        (e) => {
          log.error({ err: errorMessage(e) }, 'stop failed');
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  process.exit(0);
}
