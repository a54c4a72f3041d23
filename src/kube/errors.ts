import { CaError, type ErrorCode } from '../util/errors.js';

/**
 * What an API server failure means, from any of the shapes @kubernetes/client-node 1.x produces: ApiException
 * (`.code` = HTTP status, `.body` = the Status JSON as a string), a Watch error (`.statusCode`, no body), a
 * Status object delivered as a watch ERROR event, or a transport error (no status at all).
 */
export interface KubeErrorInfo {
  /** HTTP status; undefined for transport errors (connection refused, reset, TLS, DNS). */
  readonly code: number | undefined;
  /** Status.reason, e.g. NotFound, AlreadyExists, Conflict, Forbidden, Invalid, Expired. */
  readonly reason: string | undefined;
  /** Status.message, or the transport error's message. */
  readonly message: string;
}

export function kubeErrorInfo(e: unknown): KubeErrorInfo {
  if (e && typeof e === 'object') {
    const o = e as Record<string, unknown>;
    if (o.kind === 'Status' || (typeof o.code === 'number' && typeof o.status === 'string' && 'reason' in o)) {
      return { code: o.code as number, reason: o.reason as string | undefined, message: String(o.message ?? '') };
    }
    const code = typeof o.code === 'number' ? o.code : typeof o.statusCode === 'number' ? o.statusCode : undefined;
    if (code !== undefined) {
      const body = parseBody(o.body);
      const reason = typeof body?.reason === 'string' ? body.reason : undefined;
      const message = typeof body?.message === 'string' ? body.message : e instanceof Error && !e.message.startsWith('HTTP-Code:') ? e.message : `HTTP ${code}`;
      return { code, reason, message };
    }
  }
  return { code: undefined, reason: undefined, message: e instanceof Error ? transportMessage(e) : String(e) };
}

function parseBody(body: unknown): Record<string, unknown> | undefined {
  if (typeof body === 'string') {
    try {
      const v = JSON.parse(body) as unknown;
      return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  }
  return body && typeof body === 'object' ? (body as Record<string, unknown>) : undefined;
}

function transportMessage(e: Error): string {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message;
}

export const isNotFound = (e: unknown): boolean => kubeErrorInfo(e).code === 404;
export const isConflict = (e: unknown): boolean => kubeErrorInfo(e).code === 409;
export const isAlreadyExists = (e: unknown): boolean => {
  const i = kubeErrorInfo(e);
  return i.code === 409 && i.reason === 'AlreadyExists';
};
export const isForbidden = (e: unknown): boolean => kubeErrorInfo(e).code === 403;
export const isGone = (e: unknown): boolean => kubeErrorInfo(e).code === 410;

/** True when retrying later may help: transport errors, 429, 5xx, and 409 Conflict (a lost update race). */
export function isRetryableKubeError(e: unknown): boolean {
  const { code } = kubeErrorInfo(e);
  return code === undefined || code === 429 || code >= 500 || code === 409 || code === 410;
}

/**
 * Turns an API failure into a CaError whose message starts with `component` and says what we were doing:
 * "cert-manager: create CertificateRequest in namespace meshca: forbidden: User ... cannot create ...".
 * 403 names the missing permission (PERMISSION_DENIED, not retried); transport errors, 429 and 5xx are UNAVAILABLE
 * and retryable; other 4xx are FAILED_PRECONDITION (a configuration problem that retrying will not fix).
 */
export function kubeCaError(component: string, action: string, e: unknown): CaError {
  if (e instanceof CaError) return e;
  const info = kubeErrorInfo(e);
  const what = `${component}: ${action}`;
  if (info.code === undefined) return new CaError('UNAVAILABLE', `${what}: API server unreachable: ${info.message}`, { retryable: true, cause: e });
  let code: ErrorCode;
  let retryable: boolean;
  if (info.code === 403) {
    code = 'PERMISSION_DENIED';
    retryable = false;
  } else if (info.code === 401) {
    code = 'UNAUTHENTICATED';
    retryable = false;
  } else if (info.code === 404) {
    code = 'NOT_FOUND';
    retryable = false;
  } else if (info.code === 429 || info.code >= 500 || info.code === 409) {
    code = 'UNAVAILABLE';
    retryable = true;
  } else {
    code = 'FAILED_PRECONDITION';
    retryable = false;
  }
  const hint = info.code === 403 ? ' (grant it in the RBAC of meshca\'s service account; see the provider README)' : '';
  return new CaError(code, `${what}: ${info.code}${info.reason ? ` ${info.reason}` : ''}: ${info.message}${hint}`, { retryable, cause: e });
}
