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
    return new SystemTimer(fn, Date.now() + Math.max(0, ms));
  }
}

/**
 * A SystemClock timer: one object and one Node Timeout whose callback is a shared function, rather than closures
 * per timer (the SDS certificate cache keeps one timer per connected node, so closures and their contexts added up
 * to ~200 bytes per SDS stream).
 */
class SystemTimer implements Timer {
  private handle: NodeJS.Timeout | undefined;
  private cancelled = false;

  constructor(
    private readonly fn: () => void,
    private readonly due: number,
  ) {
    this.arm();
  }

  cancel(): void {
    this.cancelled = true;
    clearTimeout(this.handle);
  }

  private arm(): void {
    const left = this.due - Date.now();
    this.handle = setTimeout(fireSystemTimer, Math.min(Math.max(0, left), MAX_TIMER_MS), this);
    this.handle.unref();
  }

  /** Called by fireSystemTimer when the Node timer fires. */
  fire(): void {
    if (this.cancelled) return;
    if (this.due - Date.now() > 0) this.arm();
    else this.fn();
  }
}

function fireSystemTimer(t: SystemTimer): void {
  t.fire();
}
