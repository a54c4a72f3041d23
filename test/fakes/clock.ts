import type { Clock, Timer } from '../../src/util/clock.js';

interface PendingTimer {
  readonly id: number;
  readonly dueMs: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/**
 * A Clock whose time moves only when a test says so. Timers fire from advance() in due order (ties in creation
 * order), each seeing now() equal to its due time; timers created by a firing timer fire in the same advance()
 * when they fall due before its end. set() jumps to a date and fires what became due.
 */
export class ManualClock implements Clock {
  private ms: number;
  private seq = 0;
  private timers: PendingTimer[] = [];

  constructor(start: Date | number = Date.UTC(2026, 0, 1, 0, 0, 0)) {
    this.ms = typeof start === 'number' ? start : start.getTime();
  }

  now(): Date {
    return new Date(this.ms);
  }

  nowMs(): number {
    return this.ms;
  }

  setTimer(fn: () => void, ms: number): Timer {
    const t: PendingTimer = { id: ++this.seq, dueMs: this.ms + Math.max(0, ms), fn, cancelled: false };
    this.timers.push(t);
    return {
      cancel: () => {
        t.cancelled = true;
        this.timers = this.timers.filter((x) => x !== t);
      },
    };
  }

  /** Number of timers not yet fired or cancelled. */
  pendingTimers(): number {
    return this.timers.length;
  }

  /** Moves time forward by ms, firing every timer that falls due, in order. */
  advance(ms: number): void {
    if (ms < 0) throw new Error(`ManualClock.advance: negative step ${ms}`);
    this.runUntil(this.ms + ms);
  }

  /** Jumps to a date (forward or backward). Going forward fires due timers; going back fires nothing. */
  set(date: Date | number): void {
    const target = typeof date === 'number' ? date : date.getTime();
    if (target <= this.ms) {
      this.ms = target;
      return;
    }
    this.runUntil(target);
  }

  /** advance(), then lets promise callbacks run so async work started by timers can settle. */
  async advanceAsync(ms: number): Promise<void> {
    this.advance(ms);
    for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
  }

  private runUntil(target: number): void {
    for (;;) {
      let next: PendingTimer | undefined;
      for (const t of this.timers) {
        if (t.dueMs <= target && (!next || t.dueMs < next.dueMs || (t.dueMs === next.dueMs && t.id < next.id))) next = t;
      }
      if (!next) break;
      this.timers = this.timers.filter((x) => x !== next);
      this.ms = Math.max(this.ms, next.dueMs);
      if (!next.cancelled) next.fn();
    }
    this.ms = target;
  }
}
