/**
 * One error type for the whole CA core. Servers map `code` to a gRPC or HTTP status in exactly one place
 * (src/servers/status.ts); `message` is safe to show to a caller; `detail` is for logs only and never leaves the
 * process. Backend errors are prefixed with the backend's name ("vault: ...").
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT' // the caller sent something malformed: bad SPIFFE ID, bad CSR, bad TTL
  | 'UNAUTHENTICATED' // we do not know who is calling
  | 'PERMISSION_DENIED' // we know who is calling and they may not have this
  | 'NOT_FOUND'
  | 'FAILED_PRECONDITION' // CA state is missing, corrupt or not ready
  | 'UNAVAILABLE' // a backend is down; retry later
  | 'RESOURCE_EXHAUSTED'
  | 'UNIMPLEMENTED'
  | 'INTERNAL';

export class CaError extends Error {
  readonly code: ErrorCode;
  /** True when the same request may succeed later (backend outage, 5xx, rate limit). */
  readonly retryable: boolean;
  /** Log-only context; never sent to a caller. */
  readonly detail: string | undefined;

  constructor(code: ErrorCode, message: string, opts: { retryable?: boolean; detail?: string; cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'CaError';
    this.code = code;
    this.retryable = opts.retryable ?? code === 'UNAVAILABLE';
    this.detail = opts.detail;
  }
}

export const invalidArgument = (msg: string, detail?: string): CaError =>
  new CaError('INVALID_ARGUMENT', msg, detail !== undefined ? { detail } : {});
export const permissionDenied = (msg: string): CaError => new CaError('PERMISSION_DENIED', msg);
export const unauthenticated = (msg: string): CaError => new CaError('UNAUTHENTICATED', msg);
export const failedPrecondition = (msg: string, cause?: unknown): CaError =>
  new CaError('FAILED_PRECONDITION', msg, cause !== undefined ? { cause } : {});
export const unavailable = (msg: string, cause?: unknown): CaError =>
  new CaError('UNAVAILABLE', msg, { retryable: true, ...(cause !== undefined ? { cause } : {}) });

export function isCaError(e: unknown): e is CaError {
  return e instanceof CaError;
}

/** Message of any thrown value, for logs. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
