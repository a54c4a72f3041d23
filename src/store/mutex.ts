import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * An in-process mutex that is re-entrant along one async call chain: code already running inside run() (for
 * example a backend called by the authority while it holds the store lock) runs nested calls directly instead of
 * deadlocking, while unrelated async flows queue in order.
 */
export class ReentrantMutex {
  private readonly owner = new AsyncLocalStorage<ReentrantMutex>();
  private tail: Promise<unknown> = Promise.resolve();
  /** Holders plus waiters. */
  private active = 0;

  /** True when the current async context already holds this mutex. */
  held(): boolean {
    return this.owner.getStore() === this;
  }

  run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.held()) return fn();
    this.active++;
    const result = this.tail.then(() => this.owner.run(this, fn));
    this.tail = result.then(
      () => this.idle(),
      () => this.idle(),
    );
    return result;
  }

  /**
   * On Node 20 an AsyncLocalStorage in use keeps async hooks on for the whole process (a cost on every promise and
   * socket callback, ~2% of an SDS push storm); the store lock is taken rarely, so the hooks are switched off while
   * nobody holds or waits for it. run() switches them on again.
   */
  private idle(): void {
    if (--this.active === 0) this.owner.disable();
  }
}
