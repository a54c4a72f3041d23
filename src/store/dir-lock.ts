import { randomUUID } from 'node:crypto';
import { promises as fs, readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { CaError } from '../util/errors.js';

/**
 * A cross-process lock for a directory: `<dir>/lock/` (mkdir is atomic) holding an `owner` record. It never blocks
 * a restart for long after its holder was killed (kill -9 leaves the directory behind):
 *
 * - Same host and same PID namespace: the owner is alive only if its pid exists AND that process started when the
 *   record says (Linux /proc/<pid>/stat starttime). A reused pid is not mistaken for the holder, and neither is
 *   this very process when it has the pid of the killed one (a restarted container runs as pid 1 again).
 * - Other host or other PID namespace (a new pod, another container sharing the volume): the holder's process
 *   cannot be seen, so the holder refreshes the record's mtime every leaseMs/4 while it holds the lock, and a
 *   record not refreshed for leaseMs is stale.
 * - A record that cannot be read at all (a holder killed between mkdir and writing it) is stale once older than
 *   leaseMs.
 *
 * Taking over a stale lock happens under a guard (`lock.takeover/`, one process at a time) that re-reads the record
 * and removes the lock only if it is still the one judged stale: without it, two waiters that both saw the dead
 * lock could each remove it, the second removing the first's fresh lock. A holder releases only a lock whose record
 * still carries its own nonce (one taken over while its event loop stalled past the lease is left to its new owner).
 */
export interface DirLockOptions {
  /** How long acquire() waits for a live holder before failing UNAVAILABLE. */
  readonly waitMs?: number;
  /** Heartbeat lease for holders this process cannot see (see above). */
  readonly leaseMs?: number;
  /** Names the locked thing in errors, e.g. "dataDir /var/lib/meshca". */
  readonly location: string;
}

interface OwnerRecord {
  readonly pid: number;
  readonly host: string;
  /** Process start time in clock ticks since boot (/proc/<pid>/stat field 22); absent off Linux. */
  readonly start?: string;
  /** PID namespace (readlink /proc/self/ns/pid); absent off Linux. */
  readonly pidns?: string;
  /** Random per acquisition: which hold of the lock this is. */
  readonly nonce?: string;
}

/**
 * A verdict on the lock as found; `text` is the record read (undefined when there was none). `absent`: there was no
 * lock at all, so there is nothing to take over (removing "it" later could remove a lock made in between).
 */
type OwnerState =
  | { readonly stale: true; readonly text: string | undefined; readonly absent?: true }
  | { readonly stale: false; readonly who: string };

const LOCK_DIR = 'lock';
const OWNER_FILE = 'owner';
const DEFAULT_WAIT_MS = 15_000;
const DEFAULT_LEASE_MS = 10_000;
/** A takeover guard older than this was left by a process that died while taking over. */
const GUARD_STALE_MS = 5_000;

export class DirLock {
  private readonly lockDir: string;
  private readonly guardDir: string;
  /** The record of the hold in progress, if any. */
  private record: string | undefined;
  private readonly ownerFile: string;
  private readonly waitMs: number;
  private readonly leaseMs: number;

  constructor(
    dir: string,
    private readonly opts: DirLockOptions,
  ) {
    this.lockDir = join(dir, LOCK_DIR);
    this.guardDir = join(dir, `${LOCK_DIR}.takeover`);
    this.ownerFile = join(this.lockDir, OWNER_FILE);
    this.waitMs = opts.waitMs ?? DEFAULT_WAIT_MS;
    this.leaseMs = opts.leaseMs ?? DEFAULT_LEASE_MS;
  }

  /** Takes the lock (waiting up to waitMs for a live holder); returns its release function. */
  async acquire(): Promise<() => Promise<void>> {
    const deadline = Date.now() + this.waitMs;
    for (let attempt = 0; ; attempt++) {
      const record = JSON.stringify({ ...selfRecord(), nonce: randomUUID() });
      try {
        await fs.mkdir(this.lockDir, { mode: 0o700 });
        await fs.writeFile(this.ownerFile, record, { mode: 0o600, flag: 'wx' });
        return this.held(record);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        // EEXIST: held (or being taken over); ENOENT: our fresh lock went before its record was written (a takeover
        // that judged the directory stale): try again.
        if (code !== 'EEXIST' && code !== 'ENOENT') {
          throw new CaError('FAILED_PRECONDITION', `${this.opts.location}: cannot create lock: ${(e as Error).message}`, { cause: e });
        }
      }
      const owner = await this.ownerState();
      if (owner.stale) {
        if (!owner.absent) await this.takeOver(owner.text);
        continue;
      }
      if (Date.now() > deadline) {
        throw new CaError('UNAVAILABLE', `${this.opts.location} is locked by ${owner.who} (waited ${this.waitMs / 1000}s)`);
      }
      await new Promise((r) => setTimeout(r, Math.min(20 * (attempt + 1), 200)));
    }
  }

  /**
   * Whether the lock this object took is still ours: false once released, or once another process took it over
   * (a holder whose event loop stalled past the lease). Checked before each state write made under the lock.
   */
  async holds(): Promise<boolean> {
    if (this.record === undefined) return false;
    return (await fs.readFile(this.ownerFile, 'utf8').catch(() => undefined)) === this.record;
  }

  /** Starts the heartbeat and returns the release function, which removes the lock only while it is still ours. */
  private held(record: string): () => Promise<void> {
    this.record = record;
    const beat = setInterval(() => {
      const now = new Date();
      fs.utimes(this.ownerFile, now, now).catch(() => undefined);
    }, Math.max(10, this.leaseMs / 4));
    beat.unref();
    return async () => {
      clearInterval(beat);
      const mine = await this.holds();
      this.record = undefined;
      if (mine) await removeDir(this.lockDir);
    };
  }

  /** Removes the lock judged stale (its record `judged`) if it still is, under the takeover guard. */
  private async takeOver(judged: string | undefined): Promise<void> {
    try {
      await fs.mkdir(this.guardDir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new CaError('FAILED_PRECONDITION', `${this.opts.location}: cannot take over a stale lock: ${(e as Error).message}`, { cause: e });
      // Another process is taking over; a guard left by one that died doing so is cleared once old.
      const st = await fs.stat(this.guardDir).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > GUARD_STALE_MS) await removeDir(this.guardDir);
      return;
    }
    try {
      const again = await this.ownerState();
      if (again.stale && !again.absent && again.text === judged) await removeDir(this.lockDir);
    } finally {
      await removeDir(this.guardDir);
    }
  }

  private async ownerState(): Promise<OwnerState> {
    let text: string;
    let ageMs: number;
    try {
      const st = await fs.stat(this.ownerFile);
      ageMs = Date.now() - st.mtimeMs;
      text = await fs.readFile(this.ownerFile, 'utf8');
    } catch {
      // No record yet (its holder is between mkdir and writeFile) or lost: judged by the directory's age.
      const st = await fs.stat(this.lockDir).catch(() => undefined);
      if (!st) return { stale: true, text: undefined, absent: true };
      return Date.now() - st.mtimeMs > this.leaseMs ? { stale: true, text: undefined } : { stale: false, who: 'another process' };
    }
    const stale = { stale: true, text } as const;
    const rec = parseRecord(text);
    if (!rec) return ageMs > this.leaseMs ? stale : { stale: false, who: 'another process' };
    const me = selfRecord();
    // A record without a namespace (legacy, or off Linux) is taken to be from this namespace.
    const visible = rec.host === me.host && (rec.pidns === undefined || rec.pidns === me.pidns);
    if (!visible) {
      // Its process cannot be checked from here: alive while it keeps the record fresh.
      const who = rec.host === me.host ? `pid ${rec.pid} in another PID namespace` : `pid ${rec.pid} on ${rec.host}`;
      return ageMs > this.leaseMs ? stale : { stale: false, who };
    }
    if (rec.pid === process.pid) {
      // This process, or an earlier one that had the same pid (a container restarted as pid 1).
      return rec.start === me.start ? { stale: false, who: `this process (pid ${rec.pid})` } : stale;
    }
    if (!processExists(rec.pid)) return stale;
    const start = startTimeOf(rec.pid);
    if (rec.start !== undefined && start !== undefined && start !== rec.start) return stale; // pid reused
    return { stale: false, who: `pid ${rec.pid}` };
  }
}

/** rm -rf that tolerates a concurrent removal of the same directory. */
async function removeDir(dir: string): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT' && e.code !== 'ENOTEMPTY') throw e;
  });
}

function parseRecord(text: string): OwnerRecord | undefined {
  // Records written by meshca 0.1 before this format: "pid@host" (no start time, no namespace).
  const legacy = /^(\d+)@(.*)$/.exec(text.trim());
  if (legacy) return { pid: Number(legacy[1]), host: legacy[2]! };
  try {
    const o = JSON.parse(text) as Partial<Record<keyof OwnerRecord, unknown>>;
    if (!Number.isSafeInteger(o.pid) || typeof o.host !== 'string') return undefined;
    return {
      pid: o.pid as number,
      host: o.host,
      ...(typeof o.start === 'string' ? { start: o.start } : {}),
      ...(typeof o.pidns === 'string' ? { pidns: o.pidns } : {}),
    };
  } catch {
    return undefined;
  }
}

let self: OwnerRecord | undefined;

/** This process's record (constant for its life, so computed once). */
function selfRecord(): OwnerRecord {
  if (self) return self;
  const start = startTimeOf(process.pid);
  let pidns: string | undefined;
  try {
    pidns = readlinkSync('/proc/self/ns/pid');
  } catch {
    pidns = undefined;
  }
  self = { pid: process.pid, host: hostname(), ...(start !== undefined ? { start } : {}), ...(pidns !== undefined ? { pidns } : {}) };
  return self;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** Field 22 (starttime) of /proc/<pid>/stat; undefined where /proc is not available. */
export function startTimeOf(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Field 2 (comm) is in parentheses and may hold spaces or ')': the fields after the LAST ')' start at field 3.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return rest[22 - 3];
}
