import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { readlinkSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DirLock, startTimeOf } from '../../../src/store/dir-lock.js';
import { FileStore } from '../../../src/store/file-store.js';

const linux = process.platform === 'linux';
const myPidns = linux ? readlinkSync('/proc/self/ns/pid') : undefined;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'meshca-lock-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Leaves a lock record as a killed holder would have. */
async function plant(dir: string, record: object | string, ageMs = 0): Promise<void> {
  await mkdir(join(dir, 'lock'));
  const owner = join(dir, 'lock', 'owner');
  await writeFile(owner, typeof record === 'string' ? record : JSON.stringify(record));
  if (ageMs > 0) {
    const t = new Date(Date.now() - ageMs);
    await utimes(owner, t, t);
  }
}

/** Takes the lock and releases it; returns how long taking it took. */
async function takeAndRelease(lock: DirLock): Promise<number> {
  const t0 = Date.now();
  const release = await lock.acquire();
  const took = Date.now() - t0;
  await release();
  return took;
}

async function withChild(fn: (child: ChildProcess) => Promise<void>): Promise<void> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  await new Promise((r) => child.once('spawn', r));
  try {
    await fn(child);
  } finally {
    child.kill('SIGKILL');
  }
}

test('a lock left by an earlier process that had this pid (a restarted container is pid 1 again) is taken over at once', { skip: !linux }, async () => {
  await withDir(async (dir) => {
    await plant(dir, { pid: process.pid, host: hostname(), start: '1', pidns: myPidns });
    assert.ok((await takeAndRelease(new DirLock(dir, { location: 'test', waitMs: 2000 }))) < 1000);
  });
});

test('a lock whose pid now belongs to another live process is taken over at once', { skip: !linux }, async () => {
  await withDir(async (dir) =>
    withChild(async (child) => {
      await plant(dir, { pid: child.pid, host: hostname(), start: '1', pidns: myPidns });
      assert.ok((await takeAndRelease(new DirLock(dir, { location: 'test', waitMs: 2000 }))) < 1000);
    }),
  );
});

test('a lock held by a live process on this host blocks, naming its pid', { skip: !linux }, async () => {
  await withDir(async (dir) =>
    withChild(async (child) => {
      await plant(dir, { pid: child.pid, host: hostname(), start: startTimeOf(child.pid!), pidns: myPidns });
      await assert.rejects(new DirLock(dir, { location: 'dataDir X', waitMs: 300 }).acquire(), (e: Error) => {
        assert.match(e.message, new RegExp(`dataDir X is locked by pid ${child.pid} \\(waited 0.3s\\)`));
        return true;
      });
    }),
  );
});

test('a lock from a dead pid in the old "pid@host" record format is taken over at once', async () => {
  await withDir(async (dir) => {
    await plant(dir, `999999@${hostname()}`);
    assert.ok((await takeAndRelease(new DirLock(dir, { location: 'test', waitMs: 2000 }))) < 1000);
  });
});

test('a lock from another host or PID namespace blocks while its heartbeat is fresh and is taken over once it is older than the lease', async () => {
  await withDir(async (dir) => {
    await plant(dir, { pid: 1, host: 'other-pod', start: '5', pidns: 'pid:[1]' });
    await assert.rejects(new DirLock(dir, { location: 'test', waitMs: 200, leaseMs: 5000 }).acquire(), /locked by pid 1 on other-pod/);
    await rm(join(dir, 'lock'), { recursive: true });
    await plant(dir, { pid: 1, host: 'other-pod', start: '5', pidns: 'pid:[1]' }, 6000);
    assert.ok((await takeAndRelease(new DirLock(dir, { location: 'test', waitMs: 2000, leaseMs: 5000 }))) < 1000);
    await plant(dir, { pid: 1, host: hostname(), start: '5', pidns: 'pid:[1]' });
    await assert.rejects(new DirLock(dir, { location: 'test', waitMs: 200, leaseMs: 5000 }).acquire(), /locked by pid 1 in another PID namespace/);
  });
});

test('a lock directory without a readable record blocks only until it is older than the lease', async () => {
  await withDir(async (dir) => {
    await mkdir(join(dir, 'lock'));
    await assert.rejects(new DirLock(dir, { location: 'test', waitMs: 200, leaseMs: 5000 }).acquire(), /locked by another process/);
    const old = new Date(Date.now() - 6000);
    await utimes(join(dir, 'lock'), old, old);
    assert.ok((await takeAndRelease(new DirLock(dir, { location: 'test', waitMs: 2000, leaseMs: 5000 }))) < 1000);
  });
});

test('a holder refreshes its record while it holds the lock, so a long hold is not taken for a dead one', async () => {
  await withDir(async (dir) => {
    const lock = new DirLock(dir, { location: 'test', leaseMs: 200 });
    const release = await lock.acquire();
    const owner = join(dir, 'lock', 'owner');
    const record = JSON.parse(await readFile(owner, 'utf8')) as { pid: number; host: string };
    assert.equal(record.pid, process.pid);
    assert.equal(record.host, hostname());
    await sleep(450);
    assert.ok(Date.now() - (await stat(owner)).mtimeMs < 200, 'the record was refreshed within the lease');
    await release();
    await assert.rejects(stat(join(dir, 'lock')), /ENOENT/);
  });
});

test('two holders in one process take turns: the second waits for the first to release', async () => {
  await withDir(async (dir) => {
    const a = await FileStore.open(dir);
    const b = await FileStore.open(dir);
    const order: string[] = [];
    await Promise.all([
      a.withLock(async () => {
        order.push('a in');
        await sleep(100);
        order.push('a out');
      }),
      sleep(20).then(() => b.withLock(async () => void order.push('b in'))),
    ]);
    assert.deepEqual(order, ['a in', 'a out', 'b in']);
  });
});

test('a dataDir others can read that this user cannot chmod is refused with a way out', { skip: !linux }, async () => {
  // A Kubernetes volume with fsGroup looks like this to the container's user: root-owned, mode 2777.
  await withDir(async (dir) => {
    await chmod(dir, 0o755);
    const data = join(dir, 'volume');
    await mkdir(data);
    await chmod(data, 0o2777);
    const storeModule = new URL('../../../src/store/file-store.js', import.meta.url).href;
    const script = `import(${JSON.stringify(storeModule)}).then((m) => m.FileStore.open(${JSON.stringify(data)})).then(
      () => console.log('opened'), (e) => console.log(e.message))`;
    // As root the chmod would succeed: run the check as an unprivileged user, as the container does.
    const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', ...asUser });
    const uid = process.getuid?.() === 0 ? 65534 : process.getuid?.();
    assert.match(out, new RegExp(`dataDir ${data} is not a usable directory: it is mode 2777, owned by uid ${process.getuid?.() === 0 ? 0 : '\\d+'}, and this process \\(uid ${uid}\\) does not own it, so it cannot be made private`));
    assert.match(out, new RegExp(`set dataDir to a subdirectory that meshca creates itself, e\\.g\\. ${data}/state`));
  });
});

test('state files opened up since they were written (0644 after a copy or chmod) are made 0600 again at open', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'authority.json'), '{}', { mode: 0o644 });
    await chmod(join(dir, 'authority.json'), 0o644);
    await writeFile(join(dir, 'notes.txt'), 'x', { mode: 0o644 });
    await chmod(join(dir, 'notes.txt'), 0o644);
    const elsewhere = join(dir, '..', `${dir.split('/').pop()}-target.json`);
    await writeFile(elsewhere, '{}', { mode: 0o644 });
    await chmod(elsewhere, 0o644);
    await symlink(elsewhere, join(dir, 'internal-root.json'));
    try {
      await FileStore.open(dir);
      assert.equal((await stat(elsewhere)).mode & 0o777, 0o600, 'through a symlink too (reads follow it)');
    } finally {
      await rm(elsewhere, { force: true });
    }
    assert.equal((await stat(join(dir, 'authority.json'))).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, 'notes.txt'))).mode & 0o777, 0o644, 'only state files are touched');
  });
});

test('as root, a dataDir others can read and another user owns is refused, not chmodded', { skip: !linux || process.getuid?.() !== 0 }, async () => {
  await withDir(async (dir) => {
    const data = join(dir, 'theirs');
    await mkdir(data);
    await chmod(data, 0o2777);
    await chown(data, 65534, 65534);
    await assert.rejects(FileStore.open(data), (e: Error) =>
      new RegExp(`dataDir ${data} is not a usable directory: it is mode 2777, owned by uid 65534, and this process \\(uid 0\\) does not own it`).test(e.message),
    );
    assert.equal((await stat(data)).mode & 0o7777, 0o2777, 'left as it was');
  });
});

test('processes that all find the same dead lock take it over one at a time, never two at once', { timeout: 60_000 }, async () => {
  const lockModule = new URL('../../../src/store/dir-lock.js', import.meta.url).href;
  const child = `const { DirLock } = await import(${JSON.stringify(lockModule)});
    const [dir, startAt] = process.argv.slice(1);
    while (Date.now() < Number(startAt)) {}
    const release = await new DirLock(dir, { location: 'race', waitMs: 20000 }).acquire();
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 150));
    const t1 = Date.now();
    await release();
    console.log(JSON.stringify({ t0, t1 }));`;
  for (let round = 0; round < 3; round++) {
    await withDir(async (dir) => {
      await plant(dir, { pid: 999999, host: hostname() });
      const startAt = String(Date.now() + 1000);
      const held = await Promise.all(
        Array.from({ length: 6 }, () =>
          new Promise<{ t0: number; t1: number }>((resolve, reject) => {
            const p = spawn(process.execPath, ['--input-type=module', '-e', child, dir, startAt], { stdio: ['ignore', 'pipe', 'inherit'] });
            let out = '';
            p.stdout!.on('data', (d) => (out += d));
            p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { t0: number; t1: number }) : reject(new Error(`lock child exited ${code}`))));
          }),
        ),
      );
      held.sort((a, b) => a.t0 - b.t0);
      for (let i = 1; i < held.length; i++) assert.ok(held[i]!.t0 >= held[i - 1]!.t1, `round ${round}: holders ${i - 1} and ${i} overlap`);
    });
  }
});

test('a holder whose lock was taken over (its event loop stalled past the lease) does not remove the new owner\'s lock', async () => {
  await withDir(async (dir) => {
    const release = await new DirLock(dir, { location: 'test' }).acquire();
    const theirs = JSON.stringify({ pid: 1, host: 'other-pod', nonce: 'theirs' });
    await writeFile(join(dir, 'lock', 'owner'), theirs);
    await release();
    assert.equal(await readFile(join(dir, 'lock', 'owner'), 'utf8'), theirs);
  });
});

test('a state write under a lock that another process took over is refused (retryable), and nothing is written', async () => {
  await withDir(async (dir) => {
    const store = await FileStore.open(dir);
    await store.withLock(async () => {
      await store.write('mine', Buffer.from('1'));
      await writeFile(join(dir, 'lock', 'owner'), JSON.stringify({ pid: 1, host: 'other-pod', nonce: 'theirs' }));
      await assert.rejects(store.write('mine', Buffer.from('2')), (e: Error & { code?: string; retryable?: boolean }) => {
        assert.equal(e.code, 'UNAVAILABLE');
        assert.match(e.message, /lost the state lock while holding it/);
        return true;
      });
    });
    assert.equal((await store.read('mine'))!.toString(), '1');
  });
});
