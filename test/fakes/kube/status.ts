/**
 * metav1.Status errors with the real API server's reasons, codes and message shapes. Every rejection by the fake
 * is a KubeStatusError; the HTTP layer writes `.status` as the response body with `.status.code` as the HTTP code.
 */
export interface StatusCause {
  reason: string;
  message: string;
  field: string;
}

export interface StatusBody {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: string;
  details?: { name?: string; group?: string; kind?: string; uid?: string; causes?: StatusCause[]; retryAfterSeconds?: number };
  code: number;
}

export class KubeStatusError extends Error {
  constructor(readonly status: StatusBody) {
    super(status.message);
    this.name = 'KubeStatusError';
  }
  get code(): number {
    return this.status.code;
  }
  get reason(): string {
    return this.status.reason;
  }
}

/** Group-qualified resource as Kubernetes prints it: `secrets`, `leases.coordination.k8s.io`. */
export function qualified(resource: string, group: string): string {
  return group === '' ? resource : `${resource}.${group}`;
}

function make(code: number, reason: string, message: string, details?: StatusBody['details']): KubeStatusError {
  const body: StatusBody = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
  if (details) body.details = details;
  return new KubeStatusError(body);
}

export const statusErrors = {
  notFound: (resource: string, group: string, name: string) =>
    make(404, 'NotFound', `${qualified(resource, group)} "${name}" not found`, { name, group: group || undefined, kind: resource }),
  alreadyExists: (resource: string, group: string, name: string) =>
    make(409, 'AlreadyExists', `${qualified(resource, group)} "${name}" already exists`, { name, group: group || undefined, kind: resource }),
  conflict: (resource: string, group: string, name: string, why = 'the object has been modified; please apply your changes to the latest version and try again') =>
    make(409, 'Conflict', `Operation cannot be fulfilled on ${qualified(resource, group)} "${name}": ${why}`, { name, group: group || undefined, kind: resource }),
  invalid: (kind: string, group: string, name: string, causes: StatusCause[]) => {
    const texts = causes.map((c) => (c.field ? `${c.field}: ${c.message}` : c.message));
    const joined = texts.length === 1 ? texts[0] : `[${texts.join(', ')}]`;
    return make(422, 'Invalid', `${kind}${group ? `.${group}` : ''} "${name}" is invalid: ${joined}`, { name, group: group || undefined, kind, causes });
  },
  forbidden: (resource: string, group: string, name: string, why: string) =>
    make(403, 'Forbidden', `${qualified(resource, group)}${name ? ` "${name}"` : ''} is forbidden: ${why}`, { name: name || undefined, group: group || undefined, kind: resource }),
  badRequest: (message: string) => make(400, 'BadRequest', message),
  unauthorized: () => make(401, 'Unauthorized', 'Unauthorized'),
  methodNotAllowed: (message: string) => make(405, 'MethodNotAllowed', message),
  unsupportedMediaType: (message: string) => make(415, 'UnsupportedMediaType', message),
  unprocessable: (message: string) => make(422, 'Invalid', message),
  gone: (message: string) => make(410, 'Expired', message),
  internal: (message: string) => make(500, 'InternalError', `Internal error occurred: ${message}`),
  generic: (code: number, reason: string, message: string) => make(code, reason, message),
};

/** A field error in the real server's words, e.g. `Invalid value: 599: may not specify ...`. */
export const fieldErr = {
  required: (field: string, detail = ''): StatusCause => ({ reason: 'FieldValueRequired', field, message: `Required value${detail ? `: ${detail}` : ''}` }),
  invalid: (field: string, value: unknown, detail: string): StatusCause => ({
    reason: 'FieldValueInvalid',
    field,
    message: `Invalid value: ${typeof value === 'string' ? JSON.stringify(value) : String(value)}: ${detail}`,
  }),
  forbidden: (field: string, detail: string): StatusCause => ({ reason: 'FieldValueForbidden', field, message: `Forbidden: ${detail}` }),
  duplicate: (field: string, value: unknown): StatusCause => ({ reason: 'FieldValueDuplicate', field, message: `Duplicate value: ${JSON.stringify(value)}` }),
  notSupported: (field: string, value: unknown, supported: string[]): StatusCause => ({
    reason: 'FieldValueNotSupported',
    field,
    message: `Unsupported value: ${JSON.stringify(value)}: supported values: ${supported.map((s) => JSON.stringify(s)).join(', ')}`,
  }),
  tooLong: (field: string, max: number): StatusCause => ({ reason: 'FieldValueTooLong', field, message: `Too long: must have at most ${max} bytes` }),
  immutable: (field: string, value: unknown): StatusCause => ({
    reason: 'FieldValueInvalid',
    field,
    message: `Invalid value: ${typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value)}: field is immutable`,
  }),
};
