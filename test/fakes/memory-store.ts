import type { StateStore } from '../../src/store/types.js';
import { ReentrantMutex } from '../../src/store/mutex.js';

/** In-memory StateStore for unit tests; the lock is a re-entrant in-process mutex, like FileStore's. */
export class MemoryStore implements StateStore {
  readonly location = 'memory store';
  readonly data = new Map<string, Buffer>();
  writes = 0;
  private readonly mutex = new ReentrantMutex();

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
    return this.mutex.run(fn);
  }
}
