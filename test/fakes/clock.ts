import type { Clock, Timer } from '../../src/util/clock.js';

/**
 * A clock tests move by hand. Timers fire, in due order, only inside advance()/set(); a timer that schedules
 * another timer which is already due fires in the same advance. runDue() lets promises settle between timers.
 */
export class ManualClock implements Clock {
  private ms: number;
  private seq = 0;
  private timers: { due: number; seq: number; fn: () => void; cancelled: boolean }[] = [];

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
    const t = { due: this.ms + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.timers.push(t);
    return {
      cancel: () => {
        t.cancelled = true;
      },
    };
  }

  /** Number of timers still pending. */
  pending(): number {
    this.timers = this.timers.filter((t) => !t.cancelled);
    return this.timers.length;
  }

  /** Moves time forward by ms, firing due timers in order and letting async work settle after each. */
  async advance(ms: number): Promise<void> {
    await this.set(this.ms + ms);
  }

  async set(target: Date | number): Promise<void> {
    const end = typeof target === 'number' ? target : target.getTime();
    for (;;) {
      this.timers = this.timers.filter((t) => !t.cancelled);
      const due = this.timers.filter((t) => t.due <= end).sort((a, b) => a.due - b.due || a.seq - b.seq)[0];
      if (!due) break;
      this.timers.splice(this.timers.indexOf(due), 1);
      this.ms = Math.max(this.ms, due.due);
      due.fn();
      await settle();
    }
    this.ms = Math.max(this.ms, end);
    await settle();
  }
}

/** Lets pending promise chains and I/O callbacks run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}
