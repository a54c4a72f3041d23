import type { StateStore } from '../../src/store/types.js';

/** In-memory StateStore for unit tests; the lock is a promise chain. */
export class MemoryStore implements StateStore {
  readonly location = 'memory store';
  readonly data = new Map<string, Buffer>();
  writes = 0;
  private chain: Promise<unknown> = Promise.resolve();

  async read(key: string): Promise<Buffer | undefined> {
    return this.data.get(key);
  }
  async write(key: string, value: Buffer): Promise<void> {
    this.writes++;
    this.data.set(key, Buffer.from(value));
  }
  async list(): Promise<string[]> {
    return [...this.data.keys()];
  }
  withLock<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }
}
