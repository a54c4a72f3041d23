import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * An in-process mutex that is re-entrant along one async call chain: code already running inside run() (for
 * example a backend called by the authority while it holds the store lock) runs nested calls directly instead of
 * deadlocking, while unrelated async flows queue in order.
 */
export class ReentrantMutex {
  private readonly owner = new AsyncLocalStorage<ReentrantMutex>();
  private tail: Promise<unknown> = Promise.resolve();

  /** True when the current async context already holds this mutex. */
  held(): boolean {
    return this.owner.getStore() === this;
  }

  run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.held()) return fn();
    const result = this.tail.then(() => this.owner.run(this, fn));
    this.tail = result.catch(() => undefined);
    return result;
  }
}
