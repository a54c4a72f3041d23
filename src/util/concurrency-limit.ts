/** Thrown by ConcurrencyLimit.enter() when `maxQueued` tickets are already waiting. */
export class QueueFullError extends Error {
  constructor(limit: number, queued: number) {
    super(`${limit} running and ${queued} waiting`);
    this.name = 'QueueFullError';
  }
}

/**
 * One caller's place in a ConcurrencyLimit: `ready` resolves once it holds a slot. release() gives the slot back, or
 * leaves the queue if it is still waiting (then `ready` never resolves). Idempotent.
 */
export interface Ticket {
  readonly ready: Promise<void>;
  /** True from release() on: a caller whose ready fires late (it gave up first) must not start its work. */
  readonly released: boolean;
  release(): void;
}

/**
 * At most `max` holders at once; up to `maxQueued` more wait in arrival order, and beyond that enter() refuses at
 * once, so a flood of distinct requests costs a bounded amount of memory and of work downstream.
 */
export class ConcurrencyLimit {
  private holders = 0;
  /** Waiting tickets in arrival order (a Map iterates in insertion order), each with its grant function. */
  private readonly queue = new Map<TicketImpl, () => void>();

  constructor(
    readonly max: number,
    readonly maxQueued: number,
  ) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`max must be a positive integer, got ${max}`);
    if (!Number.isInteger(maxQueued) || maxQueued < 0) throw new RangeError(`maxQueued must be a non-negative integer, got ${maxQueued}`);
  }

  /** Holders now. */
  get active(): number {
    return this.holders;
  }

  /** Tickets waiting now. */
  get waiting(): number {
    return this.queue.size;
  }

  enter(): Ticket {
    if (this.holders < this.max) {
      this.holders++;
      return new TicketImpl(this, Promise.resolve(), 'holding');
    }
    if (this.queue.size >= this.maxQueued) throw new QueueFullError(this.max, this.queue.size);
    let grant!: () => void;
    const ticket = new TicketImpl(this, new Promise<void>((r) => (grant = r)), 'waiting');
    this.queue.set(ticket, grant);
    return ticket;
  }

  /** @internal TicketImpl.release() */
  leave(t: TicketImpl, was: 'waiting' | 'holding'): void {
    if (was === 'waiting') {
      this.queue.delete(t);
      return;
    }
    this.holders--;
    for (const [next, grant] of this.queue) {
      if (this.holders >= this.max) break;
      this.queue.delete(next);
      this.holders++;
      next.state = 'holding';
      grant();
    }
  }
}

class TicketImpl implements Ticket {
  constructor(
    private readonly limit: ConcurrencyLimit,
    readonly ready: Promise<void>,
    public state: 'waiting' | 'holding' | 'released',
  ) {}

  get released(): boolean {
    return this.state === 'released';
  }

  release(): void {
    const was = this.state;
    if (was === 'released') return;
    this.state = 'released';
    this.limit.leave(this, was);
  }
}
