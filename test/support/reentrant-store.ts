import { AsyncLocalStorage } from 'node:async_hooks';
import type { StateStore } from '../../src/store/types.js';

/**
 * Wraps a StateStore so that withLock() called inside withLock() (same async context) runs directly instead of
 * waiting for itself. Works around the authority holding the store lock while the internal backend takes it again
 * in mintIntermediate (reported to the core owner); harmless once that is fixed.
 */
export function reentrant(store: StateStore): StateStore {
  const held = new AsyncLocalStorage<boolean>();
  return {
    location: store.location,
    read: (k) => store.read(k),
    write: (k, v) => store.write(k, v),
    list: () => store.list(),
    withLock: (fn) => (held.getStore() ? fn() : store.withLock(() => held.run(true, fn))),
    ...(store.close ? { close: () => store.close!() } : {}),
  };
}
