/**
 * Time comes from a Clock so that rotation, renewal and expiry can be tested by moving time instead of sleeping.
 * Timers created through a Clock fire according to that clock: the system clock uses real timers, a manual clock
 * (test/fakes/clock.ts) fires them when a test advances it.
 */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  now(): Date;
  /** Milliseconds since the epoch; same source as now(). */
  nowMs(): number;
  /** Runs fn once after ms milliseconds of this clock's time. Timers never keep the process alive. */
  setTimer(fn: () => void, ms: number): Timer;
}

/** Longest delay a Node timer accepts (about 24.8 days); longer waits are chained. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class SystemClock implements Clock {
  now(): Date {
    return new Date();
  }
  nowMs(): number {
    return Date.now();
  }
  setTimer(fn: () => void, ms: number): Timer {
    let handle: NodeJS.Timeout;
    let cancelled = false;
    const due = Date.now() + Math.max(0, ms);
    const arm = (): void => {
      const left = due - Date.now();
      handle = setTimeout(() => {
        if (cancelled) return;
        if (due - Date.now() > 0) arm();
        else fn();
      }, Math.min(Math.max(0, left), MAX_TIMER_MS));
      handle.unref();
    };
    arm();
    return {
      cancel: () => {
        cancelled = true;
        clearTimeout(handle);
      },
    };
  }
}
