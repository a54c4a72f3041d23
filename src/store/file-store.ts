import { promises as fs, constants as fsc } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { CaError } from '../util/errors.js';
import type { StateStore } from './types.js';
import { ReentrantMutex } from './mutex.js';

const KEY_RE = /^[a-z0-9][a-z0-9-]{0,63}$/;
const LOCK_DIR = 'lock';
const LOCK_WAIT_MS = 15_000;
const UNREADABLE_LOCK_STALE_MS = 10_000;

/**
 * CA state in a directory: one `<key>.json` file per key, mode 0600, in a 0700 directory. Writes are atomic
 * (temp file, fsync, rename, fsync of the directory). The lock is a directory `lock/` holding the owner's pid and
 * host: a lock whose owner process no longer exists (kill -9) is taken over at once, so it never blocks a restart.
 */
export class FileStore implements StateStore {
  readonly location: string;
  private readonly dir: string;
  private readonly mutex = new ReentrantMutex();

  private constructor(dir: string) {
    this.dir = dir;
    this.location = `dataDir ${dir}`;
  }

  /** Opens (creating if missing, mode 0700) the data directory. */
  static async open(dataDir: string): Promise<FileStore> {
    const dir = resolve(dataDir);
    try {
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      const st = await fs.stat(dir);
      if (!st.isDirectory()) throw new Error('not a directory');
      await fs.access(dir, fsc.R_OK | fsc.W_OK | fsc.X_OK);
      if ((st.mode & 0o077) !== 0) await fs.chmod(dir, 0o700);
    } catch (e) {
      throw new CaError('FAILED_PRECONDITION', `dataDir ${dir} is not a usable directory: ${(e as Error).message}`, { cause: e });
    }
    return new FileStore(dir);
  }

  private file(key: string): string {
    if (!KEY_RE.test(key)) throw new CaError('INTERNAL', `invalid state key "${key}"`);
    return join(this.dir, `${key}.json`);
  }

  async read(key: string): Promise<Buffer | undefined> {
    try {
      return await fs.readFile(this.file(key));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new CaError('FAILED_PRECONDITION', `${this.location}: cannot read ${key}.json: ${(e as Error).message}`, { cause: e });
    }
  }

  async write(key: string, value: Buffer): Promise<void> {
    await writeFileAtomic(this.file(key), value, 0o600);
  }

  async list(): Promise<string[]> {
    const names = await fs.readdir(this.dir);
    return names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5));
  }

  /** Re-entrant within one async call chain; serialised within the process; exclusive across processes. */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    if (this.mutex.held()) return fn();
    return this.mutex.run(async () => {
      const release = await this.acquire();
      try {
        return await fn();
      } finally {
        await release();
      }
    });
  }

  private async acquire(): Promise<() => Promise<void>> {
    const lockDir = join(this.dir, LOCK_DIR);
    const deadline = Date.now() + LOCK_WAIT_MS;
    const me = `${process.pid}@${hostname()}`;
    for (let attempt = 0; ; attempt++) {
      try {
        await fs.mkdir(lockDir, { mode: 0o700 });
        await fs.writeFile(join(lockDir, 'owner'), me, { mode: 0o600 });
        return async () => {
          await fs.rm(lockDir, { recursive: true, force: true });
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new CaError('FAILED_PRECONDITION', `${this.location}: cannot create lock: ${(e as Error).message}`, { cause: e });
        }
      }
      const owner = await this.lockOwner(lockDir);
      if (owner === 'stale') {
        await fs.rm(lockDir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new CaError('UNAVAILABLE', `${this.location} is locked by ${owner} (waited ${LOCK_WAIT_MS / 1000}s)`);
      }
      await new Promise((r) => setTimeout(r, Math.min(20 * (attempt + 1), 200)));
    }
  }

  /** "stale" when the lock's owner is gone, else a description of the owner. */
  private async lockOwner(lockDir: string): Promise<string> {
    let text: string;
    try {
      text = (await fs.readFile(join(lockDir, 'owner'), 'utf8')).trim();
    } catch {
      // Owner file not written yet (lock just created) or lost: stale only once old enough.
      try {
        const st = await fs.stat(lockDir);
        return Date.now() - st.mtimeMs > UNREADABLE_LOCK_STALE_MS ? 'stale' : 'another process';
      } catch {
        return 'stale';
      }
    }
    const m = /^(\d+)@(.*)$/.exec(text);
    if (!m) return 'stale';
    const pid = Number(m[1]);
    if (m[2] !== hostname()) return `pid ${pid} on ${m[2]}`;
    if (pid === process.pid) return `this process (pid ${pid})`;
    try {
      process.kill(pid, 0);
      return `pid ${pid}`;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ESRCH' ? 'stale' : `pid ${pid}`;
    }
  }
}

/** Writes a file atomically: temp file in the same directory, fsync, rename, fsync the directory. */
export async function writeFileAtomic(path: string, data: Buffer | string, mode: number): Promise<void> {
  const dir = resolve(path, '..');
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  let fh: fs.FileHandle | undefined;
  try {
    fh = await fs.open(tmp, 'wx', mode);
    await fh.writeFile(data);
    await fh.chmod(mode);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fs.rename(tmp, path);
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw new CaError('INTERNAL', `cannot write ${path}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const dh = await fs.open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    // Some filesystems do not support fsync on directories; the rename is still atomic.
  }
}
