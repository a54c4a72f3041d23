import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { writeFileAtomic } from '../store/file-store.js';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { errorMessage, invalidArgument } from '../util/errors.js';
import type { BundleFilesConfig } from './config.js';
import { bundleToJwks } from './jwks.js';
import { counter } from '../telemetry/metrics.js';
import type { BundleRegistry, RegisteredBundle } from './registry.js';

export interface FilePublisherDeps {
  readonly registry: BundleRegistry;
  readonly log: Logger;
  readonly metrics?: Registry;
}

export interface FilePublisher {
  /** Resolves when every write queued so far has finished (tests, shutdown). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

function render(b: RegisteredBundle, format: 'pem' | 'jwks'): string {
  if (format === 'pem') return b.pem;
  return `${JSON.stringify(bundleToJwks({ trustDomain: b.trustDomain, rootsDer: b.rootsDer, pem: b.pem, sequence: b.sequence }, b.refreshHintSeconds))}\n`;
}

/**
 * Writes our own trust bundle to every bundle.files[].path now and after every change, atomically (temp file +
 * rename, mode 0644: trust anchors are public), for tools that read CA files. Missing parent directories are
 * created before every write (mode 0755, as public as the bundle; existing ones are left as they are), so a path
 * in a directory nobody made yet, or one removed while serving, still gets its file. Writes are serialised so an
 * older bundle never overwrites a newer one. A failed write is logged, counted
 * (meshca_bundle_file_write_errors_total) and retried at the next change; it never stops the server. start: the
 * first writes are awaited and their errors thrown as INVALID_ARGUMENT naming bundle.files[i].path, so a path
 * that cannot be written (its parent is a file, no permission) fails `serve` at startup.
 */
export async function startFilePublisher(cfg: BundleFilesConfig, deps: FilePublisherDeps): Promise<FilePublisher> {
  const log = deps.log.child({ component: 'bundle-files' });
  const errors = counter(deps.metrics, 'meshca_bundle_file_write_errors_total', 'Failed writes of bundle.files', ['path']);
  for (const f of cfg.files) errors.inc({ path: f.path }, 0);
  let chain: Promise<void> = Promise.resolve();
  const writeAll = async (b: RegisteredBundle, throwErrors: boolean): Promise<void> => {
    for (const [i, f] of cfg.files.entries()) {
      const key = `bundle.files[${i}].path`;
      try {
        try {
          await mkdir(dirname(f.path), { recursive: true, mode: 0o755 });
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          const why = code === 'EEXIST' || code === 'ENOTDIR' ? `a file is in the way (${errorMessage(e)})` : errorMessage(e);
          throw new Error(`cannot write ${f.path}: cannot create its directory ${dirname(f.path)}: ${why}`, { cause: e });
        }
        await writeFileAtomic(f.path, render(b, f.format), 0o644);
        log.debug({ path: f.path, sequence: b.sequence }, 'bundle file written');
      } catch (e) {
        errors.inc({ path: f.path });
        log.error({ path: f.path, configKey: key, err: errorMessage(e) }, 'cannot write bundle file');
        if (throwErrors) throw invalidArgument(`${key}: ${errorMessage(e)}`);
      }
    }
  };
  await writeAll(deps.registry.own(), true);
  const unsub = deps.registry.onChange((c) => {
    if (c.trustDomain !== deps.registry.ownTrustDomain || !c.bundle) return;
    const b = c.bundle;
    chain = chain.then(() => writeAll(b, false));
  });
  return {
    flush: () => chain,
    close: async () => {
      unsub();
      await chain;
    },
  };
}
