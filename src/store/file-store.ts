import { promises as fs, constants as fsc, type Stats } from 'node:fs';
import { join, resolve } from 'node:path';
import { CaError } from '../util/errors.js';
import type { StateStore } from './types.js';
import { ReentrantMutex } from './mutex.js';
import { DirLock, type DirLockOptions } from './dir-lock.js';

const KEY_RE = /^[a-z0-9][a-z0-9-]{0,63}$/;

/**
 * CA state in a directory: one `<key>.json` file per key, mode 0600, in a 0700 directory. Writes are atomic
 * (temp file, fsync, rename, fsync of the directory). Cross-process exclusion is a DirLock (`lock/`), which a
 * killed holder never leaves blocking a restart.
 */
export class FileStore implements StateStore {
  readonly location: string;
  private readonly dir: string;
  private readonly mutex = new ReentrantMutex();
  private readonly lock: DirLock;

  private constructor(dir: string, lockOpts: Omit<DirLockOptions, 'location'>) {
    this.dir = dir;
    this.location = `dataDir ${dir}`;
    this.lock = new DirLock(dir, { ...lockOpts, location: this.location });
  }

  /** Opens (creating if missing, mode 0700) the data directory. `lock` tunes the DirLock (tests). */
  static async open(dataDir: string, lock: Omit<DirLockOptions, 'location'> = {}): Promise<FileStore> {
    const dir = resolve(dataDir);
    try {
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      const st = await fs.stat(dir);
      if (!st.isDirectory()) throw new Error('not a directory');
      await fs.access(dir, fsc.R_OK | fsc.W_OK | fsc.X_OK);
      if ((st.mode & 0o077) !== 0) await makePrivate(dir, st);
    } catch (e) {
      throw new CaError('FAILED_PRECONDITION', `dataDir ${dir} is not a usable directory: ${(e as Error).message}`, { cause: e });
    }
    await makeStateFilesPrivate(dir);
    return new FileStore(dir, lock);
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
    // Under withLock, a write after the lock went to another process (this one stalled past the lease) would undo
    // that process's read-modify-write: refuse it; the caller retries from a fresh read.
    if (this.mutex.held() && !(await this.lock.holds())) {
      throw new CaError('UNAVAILABLE', `${this.location}: lost the state lock while holding it (this process stalled for longer than the lock lease); retry`, { retryable: true });
    }
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
      const release = await this.lock.acquire();
      try {
        return await fn();
      } finally {
        await release();
      }
    });
  }
}

/**
 * State files hold private keys and are written 0600; one that was opened up since (a copy, a chmod, a restore from
 * backup) is made 0600 again, through a symlink too (reads follow it). Throws FAILED_PRECONDITION naming the file,
 * its owner and the fix when it cannot be.
 */
async function makeStateFilesPrivate(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (e) {
    throw new CaError('FAILED_PRECONDITION', `dataDir ${dir} cannot be listed: ${(e as Error).message}`, { cause: e });
  }
  for (const name of names) {
    if (!name.endsWith('.json')) continue;
    const file = join(dir, name);
    let st: Stats;
    try {
      st = await fs.stat(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed meanwhile, or a dangling symlink: read() says so
      throw new CaError('FAILED_PRECONDITION', `state file ${file} cannot be read: ${(e as Error).message}`, { cause: e });
    }
    if (!st.isFile() || (st.mode & 0o077) === 0) continue;
    try {
      await fs.chmod(file, 0o600);
    } catch (e) {
      const uid = process.getuid?.();
      throw new CaError(
        'FAILED_PRECONDITION',
        `state file ${file} holds private keys but is mode ${(st.mode & 0o777).toString(8)}, owned by uid ${st.uid}, and this process (uid ${uid ?? '?'}) cannot make it 0600 (${(e as Error).message}); ` +
          `chown it to uid ${uid ?? 'of meshca'} or chmod it 0600`,
        { cause: e },
      );
    }
  }
}

/**
 * chmod 0700 of a dataDir, owned by this user, that others can read. A directory owned by someone else (a Kubernetes
 * volume root with fsGroup: root-owned, mode 2777) is refused, also when this process could change it (as root): its
 * owner could open it up again and swap the CA state inside. Say so and point at a subdirectory meshca creates itself.
 */
async function makePrivate(dir: string, st: Stats): Promise<void> {
  const uid = process.getuid?.();
  const refuse = (why: string, cause?: unknown): Error =>
    new Error(
      `it is mode ${(st.mode & 0o7777).toString(8)}, owned by uid ${st.uid}, and this process (uid ${uid ?? '?'}) ${why}; ` +
        `set dataDir to a subdirectory that meshca creates itself, e.g. ${join(dir, 'state')}`,
      cause === undefined ? undefined : { cause },
    );
  if (uid !== undefined && st.uid !== uid) throw refuse('does not own it, so it cannot be made private');
  try {
    await fs.chmod(dir, 0o700);
  } catch (e) {
    throw refuse(`cannot make it private (0700: ${(e as Error).message})`, e);
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
