import { Worker } from 'node:worker_threads';
import { ownedCopy } from '../util/buffers.js';
import { CaError, failedPrecondition, type ErrorCode } from '../util/errors.js';
import { LeafSigner, type LeafWithKey, type NewKeyLeafFields } from './leaf-signer.js';
import { rememberSpki, spkiDerOf } from './keys.js';
import { parseCsr, type ParsedCsr } from './csr.js';
import { noteIssuedBy } from './provenance.js';
import { checkSvidProfile } from './validate.js';
import type { JobMsg, WorkerBatchReply, WorkerRequest } from './signer-protocol.js';
import type { LeafTemplate, SigningCa } from './types.js';

const BATCH_MAX = 32;
/** Inline work is budgeted per window of this many milliseconds (see takeInline). */
const INLINE_WINDOW_MS = 10;

interface Pending {
  resolve: (v: { certDer: Buffer; privateKeyPkcs8Pem?: string; csr?: ParsedCsr }) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
  /** Jobs queued in this turn of the event loop, sent as one message (a microtask later). */
  queue: JobMsg[];
}

/**
 * Spreads leaf signing over worker threads (`workers` of them; 0 signs inline on the calling thread). Requests
 * go to the worker with the fewest in flight, except that while every worker is idle up to `inlineShare` of the
 * calling thread's time is spent signing inline instead (takeInline; `inlineShare: 0` turns that off). setCa() swaps
 * the signing CA everywhere; a request already queued in a worker is signed with whichever CA that worker holds
 * when it runs it (callers re-check the result against the CA they expect). A worker that dies fails its in-flight requests with INTERNAL and is replaced.
 *
 * Idle workers do not keep the process alive. close() terminates them and fails anything still in flight with
 * UNAVAILABLE. The CA key is sent to workers as PKCS#8 DER (zeroed after import) and never logged.
 */
export class LeafSignerPool {
  readonly workers: number;
  /**
   * Set when the pool was given a trust domain: every leaf it returns has already passed checkSvidProfile against
   * the signing CA, on the thread that signed it (so the check scales with the workers too).
   */
  readonly checksProfile: boolean;
  private readonly trustDomain: string | undefined;
  private readonly slots: Slot[] = [];
  private inline: LeafSigner | undefined;
  private gen = 0;
  private readonly caByGen = new Map<number, Buffer>();
  private lastCaMessage: Omit<Extract<WorkerRequest, { type: 'ca' }>, 'keyPkcs8Der'> | undefined;
  private caKey: SigningCa['key'] | undefined;
  private caCertDer: Buffer | undefined;
  private nextId = 1;
  private closed = false;
  /** Inline signing allowed per INLINE_WINDOW_MS window, in milliseconds. */
  private readonly inlineBudgetMs: number;
  private windowStart = -Infinity;
  private windowBusyMs = 0;
  private readonly counts = { inline: 0, dispatched: 0 };

  /**
   * `inlineShare` (default 0.25, with workers): the largest share of the calling thread's time spent signing inline
   * rather than paying for a hop to a worker (0 = always use the workers).
   */
  constructor(opts: { workers: number; trustDomain?: string; inlineShare?: number }) {
    if (!Number.isInteger(opts.workers) || opts.workers < 0) throw new CaError('INVALID_ARGUMENT', `signer workers must be a non-negative integer, got ${opts.workers}`);
    this.workers = opts.workers;
    const share = opts.inlineShare ?? 0.25;
    if (!(share >= 0 && share <= 1)) throw new CaError('INVALID_ARGUMENT', `inlineShare must be between 0 and 1, got ${share}`);
    this.inlineBudgetMs = share * INLINE_WINDOW_MS;
    this.trustDomain = opts.trustDomain;
    this.checksProfile = opts.trustDomain !== undefined;
    for (let i = 0; i < opts.workers; i++) this.slots.push(this.spawn());
  }

  /** Makes `ca` the signing CA. Throws FAILED_PRECONDITION if its key does not match its certificate. */
  setCa(ca: SigningCa): void {
    if (this.closed) throw new CaError('UNAVAILABLE', 'leaf signer pool is closed');
    this.inline = new LeafSigner(ca); // proves key/cert match before any worker sees it
    this.gen++;
    this.caByGen.set(this.gen, ca.certDer);
    for (const g of this.caByGen.keys()) if (g < this.gen - 8) this.caByGen.delete(g);
    this.caKey = ca.key;
    this.lastCaMessage = {
      type: 'ca',
      gen: this.gen,
      certDer: new Uint8Array(ca.certDer),
      notBefore: ca.notBefore.getTime(),
      notAfter: ca.notAfter.getTime(),
      ...(this.trustDomain !== undefined ? { trustDomain: this.trustDomain } : {}),
    };
    this.caCertDer = ca.certDer;
    for (const s of this.slots) this.sendCa(s.worker);
  }

  /** Signs a leaf for `t.publicKey`. */
  sign(t: LeafTemplate): Promise<Buffer> {
    try {
      const signer = this.ready();
      if (this.takeInline()) return Promise.resolve(this.timed(() => this.checked(signer.sign(t))));
      const spki = spkiDerOf(t.publicKey);
      return this.dispatch({ type: 'sign', ...this.fieldsMsg(t), spkiDer: new Uint8Array(spki) }).then((r) => r.certDer);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Generates a key of `t.keyType` (in the worker) and signs a leaf for it. */
  signWithNewKey(t: NewKeyLeafFields): Promise<LeafWithKey> {
    let signer: LeafSigner;
    try {
      signer = this.ready();
      // RSA key generation takes 50-500 ms: never on the calling thread while workers exist.
      if (this.takeInline(this.workers > 0 && t.keyType.startsWith('rsa'))) {
        return Promise.resolve(
          this.timed(() => {
            const r = signer.signWithNewKey(t);
            this.checked(r.certDer);
            return r;
          }),
        );
      }
    } catch (e) {
      return Promise.reject(e);
    }
    return this.dispatch({ type: 'signNew', ...this.fieldsMsg(t), keyType: t.keyType }).then((r) => ({
      certDer: r.certDer,
      privateKeyPkcs8Pem: r.privateKeyPkcs8Pem!,
    }));
  }

  /**
   * parseCsr (csr.ts) on a worker: the CSR signature check and key import (~140 µs on P-256) leave the calling
   * thread, so CSR issuance scales with cores. Same result and errors as parseCsr; inline under the same rule as
   * signing (takeInline).
   */
  parseCsr(input: string | Buffer): Promise<ParsedCsr> {
    if (this.closed) return Promise.reject(new CaError('UNAVAILABLE', 'leaf signer pool is closed'));
    if (this.takeInline()) {
      try {
        return Promise.resolve(this.timed(() => parseCsr(input)));
      } catch (e) {
        return Promise.reject(e);
      }
    }
    const csr = typeof input === 'string' ? input : new Uint8Array(input);
    return this.dispatch({ type: 'parseCsr', id: this.nextId++, csr }).then((r) => r.csr!);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const slots = this.slots.splice(0);
    for (const s of slots) this.failAll(s, new CaError('UNAVAILABLE', 'leaf signer pool closed'));
    await Promise.all(slots.map((s) => s.worker.terminate()));
    this.inline = undefined;
    this.caKey = undefined;
  }

  /** How many jobs ran on the calling thread and how many went to workers (tests, benchmarks). */
  jobCounts(): { readonly inline: number; readonly dispatched: number } {
    return { ...this.counts };
  }

  /**
   * Whether the next job runs on the calling thread: always with no workers; otherwise only while every worker is
   * idle and inline work in the current INLINE_WINDOW_MS window stays under the budget. A lone request (a proxy
   * connecting, a renewal) costs ~60 us here, where a hop to a worker measured 0.1-0.4 ms of CPU (structured clone,
   * waking a thread on another vCPU) plus a wake-up delay. A burst (re-issue of every leaf) spends the budget in a
   * few milliseconds and then keeps the workers busy, which keeps it off this thread (signing here while the workers
   * run measured ~20% less throughput on two cores: three threads then share two cores).
   */
  private takeInline(mustDispatch = false): boolean {
    if (mustDispatch) {
      this.counts.dispatched++;
      return false;
    }
    if (this.workers > 0) {
      const now = performance.now();
      if (now - this.windowStart >= INLINE_WINDOW_MS) {
        this.windowStart = now;
        this.windowBusyMs = 0;
      }
      let workersBusy = false;
      for (const slot of this.slots) if (slot.pending.size > 0) workersBusy = true;
      if (workersBusy || this.windowBusyMs >= this.inlineBudgetMs) {
        this.counts.dispatched++;
        return false;
      }
    }
    this.counts.inline++;
    return true;
  }

  /** Runs an inline job and charges its time to the window's budget. */
  private timed<T>(fn: () => T): T {
    const t0 = performance.now();
    try {
      return fn();
    } finally {
      this.windowBusyMs += performance.now() - t0;
    }
  }

  /** Inline path: the same profile check the workers run before replying. */
  private checked(certDer: Buffer): Buffer {
    if (this.trustDomain !== undefined) checkSvidProfile(certDer, { trustDomain: this.trustDomain, issuerCertDer: this.caCertDer! });
    return certDer;
  }

  private ready(): LeafSigner {
    if (this.closed) throw new CaError('UNAVAILABLE', 'leaf signer pool is closed');
    if (!this.inline) throw failedPrecondition('no signing CA is loaded yet');
    return this.inline;
  }

  private fieldsMsg(t: { spiffeId: string; dnsNames: readonly string[]; ipAddresses?: readonly string[]; notBefore: Date; notAfter: Date }) {
    return {
      id: this.nextId++,
      spiffeId: t.spiffeId,
      dnsNames: [...t.dnsNames],
      ipAddresses: [...(t.ipAddresses ?? [])],
      notBefore: t.notBefore.getTime(),
      notAfter: t.notAfter.getTime(),
    };
  }

  private dispatch(msg: JobMsg): Promise<{ certDer: Buffer; privateKeyPkcs8Pem?: string; csr?: ParsedCsr }> {
    let best = this.slots[0]!;
    for (const s of this.slots) if (s.pending.size < best.pending.size) best = s;
    return new Promise((resolve, reject) => {
      if (best.pending.size === 0) best.worker.ref();
      best.pending.set(msg.id, { resolve, reject });
      best.queue.push(msg);
      if (best.queue.length === 1) queueMicrotask(() => this.flush(best));
    });
  }

  private flush(slot: Slot): void {
    const jobs = slot.queue.splice(0);
    if (jobs.length === 0 || !this.slots.includes(slot)) return;
    // Chunks keep the worker busy while this thread handles the previous chunk's replies.
    for (let i = 0; i < jobs.length; i += BATCH_MAX) {
      const chunk = jobs.slice(i, i + BATCH_MAX);
      slot.worker.postMessage(chunk.length === 1 ? chunk[0] : ({ type: 'batch', jobs: chunk } satisfies WorkerRequest));
    }
  }

  private sendCa(w: Worker): void {
    if (!this.lastCaMessage || !this.caKey) return;
    const exported = this.caKey.export({ type: 'pkcs8', format: 'der' });
    const key = new Uint8Array(exported);
    exported.fill(0);
    const msg: WorkerRequest = { ...this.lastCaMessage, keyPkcs8Der: key };
    w.postMessage(msg, [key.buffer]);
  }

  private spawn(): Slot {
    const worker = new Worker(new URL('./signer-worker.js', import.meta.url));
    worker.unref();
    const slot: Slot = { worker, pending: new Map(), queue: [] };
    worker.on('message', (b: WorkerBatchReply) => this.settleBatch(slot, b));
    const onDeath = (why: string): void => {
      const i = this.slots.indexOf(slot);
      if (i < 0) return; // closing, or already replaced
      this.failAll(slot, new CaError('INTERNAL', `signing worker ${why}`));
      const next = this.spawn();
      this.slots[i] = next;
      this.sendCa(next.worker);
    };
    worker.on('error', (e) => onDeath(`failed: ${e.message}`));
    worker.on('exit', (code) => onDeath(`exited with code ${code}`));
    return slot;
  }

  private settleBatch(slot: Slot, b: WorkerBatchReply): void {
    const ca = this.caByGen.get(b.gen);
    const certs = Buffer.from(b.certs.buffer, b.certs.byteOffset, b.certs.byteLength);
    let start = 0;
    for (let i = 0; i < b.ids.length; i++) {
      const end = b.ends[i]!;
      const p = slot.pending.get(b.ids[i]!);
      const derView = certs.subarray(start, end);
      start = end;
      if (!p) continue;
      slot.pending.delete(b.ids[i]!);
      const error = b.errors[i];
      const csr = b.csrs[i];
      if (error) {
        p.reject(new CaError(error[0] as ErrorCode, error[1]));
      } else if (csr) {
        const parsed: ParsedCsr = { ...csr, der: Buffer.from(csr.der.buffer, csr.der.byteOffset, csr.der.byteLength), spkiDer: Buffer.from(csr.spkiDer.buffer, csr.spkiDer.byteOffset, csr.spkiDer.byteLength) };
        rememberSpki(parsed.publicKey, parsed.spkiDer);
        p.resolve({ certDer: Buffer.alloc(0), csr: parsed });
      } else {
        // A copy per certificate: a view would keep the whole batch's buffer alive as long as any one leaf lives.
        const der = ownedCopy(derView);
        if (ca) noteIssuedBy(der, ca);
        const key = b.keys[i];
        p.resolve(key != null ? { certDer: der, privateKeyPkcs8Pem: key } : { certDer: der });
      }
    }
    if (slot.pending.size === 0) slot.worker.unref();
  }

  private failAll(slot: Slot, err: CaError): void {
    for (const p of slot.pending.values()) p.reject(err);
    slot.pending.clear();
    slot.queue.length = 0;
    slot.worker.unref();
  }
}
