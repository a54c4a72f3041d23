/**
 * The fields each served kind has, with their JSON types, so the fake decodes request bodies the way the API server
 * does:
 * - a value of the wrong JSON type is refused: built-in kinds with 400 BadRequest and Go's unmarshal message
 *   (`json: cannot unmarshal string into Go struct field CertificateSigningRequestSpec.spec.expirationSeconds of
 *   type int32`), custom resources (cert-manager) with 422 Invalid from the OpenAPI schema
 *   (`spec.isCA: Invalid value: "string": spec.isCA in body must be of type boolean: "string"`);
 * - an unknown field is handled per `fieldValidation` (query parameter, else the fake's default): Strict refuses it
 *   with 400 BadRequest `strict decoding error: unknown field "spec.foo"`; Warn drops it and answers with a
 *   `Warning: 299 - "unknown field \"spec.foo\""` header; Ignore drops it silently. A real API server (1.27+) uses
 *   Warn when the request says nothing; the fake defaults to Strict so that a misspelt field in meshca's requests
 *   (which a cluster would silently drop) fails the tests.
 * Times (metav1.Time, CRD date-time) must be RFC 3339. JSON null is accepted anywhere, as Go's decoder does.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import { fieldErr, statusErrors, type StatusCause } from './status.js';

export type FieldValidation = 'Strict' | 'Warn' | 'Ignore';

type Scalar = 'string' | 'int32' | 'int64' | 'bool' | 'bytes' | 'time' | 'any';
/** A field type: a scalar, an object with known fields, a list, or a map with string keys. */
export type FieldType = Scalar | ObjType | { list: FieldType } | { map: FieldType };
export interface ObjType {
  /** Go struct name used in decode errors, e.g. CertificateSigningRequestSpec. */
  go: string;
  fields: Record<string, FieldType>;
}

const obj = (go: string, fields: Record<string, FieldType>): ObjType => ({ go, fields });
const strings = { list: 'string' } as const;
const stringMap = { map: 'string' } as const;

export const objectMeta = obj('ObjectMeta', {
  name: 'string',
  generateName: 'string',
  namespace: 'string',
  selfLink: 'string',
  uid: 'string',
  resourceVersion: 'string',
  generation: 'int64',
  creationTimestamp: 'time',
  deletionTimestamp: 'time',
  deletionGracePeriodSeconds: 'int64',
  labels: stringMap,
  annotations: stringMap,
  ownerReferences: {
    list: obj('OwnerReference', { apiVersion: 'string', kind: 'string', name: 'string', uid: 'string', controller: 'bool', blockOwnerDeletion: 'bool' }),
  },
  finalizers: strings,
  managedFields: { list: 'any' },
});

/** Top level of every kind: apiVersion, kind, metadata plus `rest`. */
function kind(go: string, rest: Record<string, FieldType>): ObjType {
  return obj(go, { apiVersion: 'string', kind: 'string', metadata: objectMeta, ...rest });
}

const userExtra = { map: strings } as const;

const csrCondition = obj('CertificateSigningRequestCondition', {
  type: 'string',
  status: 'string',
  reason: 'string',
  message: 'string',
  lastUpdateTime: 'time',
  lastTransitionTime: 'time',
});

const crCondition = obj('CertificateRequestCondition', {
  type: 'string',
  status: 'string',
  reason: 'string',
  message: 'string',
  lastTransitionTime: 'time',
  observedGeneration: 'int64',
});

export const SCHEMAS: Record<string, ObjType> = {
  secrets: kind('Secret', { data: { map: 'bytes' }, stringData: stringMap, type: 'string', immutable: 'bool' }),
  configmaps: kind('ConfigMap', { data: stringMap, binaryData: { map: 'bytes' }, immutable: 'bool' }),
  namespaces: kind('Namespace', {
    spec: obj('NamespaceSpec', { finalizers: strings }),
    status: obj('NamespaceStatus', {
      phase: 'string',
      conditions: { list: obj('NamespaceCondition', { type: 'string', status: 'string', reason: 'string', message: 'string', lastTransitionTime: 'time' }) },
    }),
  }),
  leases: kind('Lease', {
    spec: obj('LeaseSpec', {
      holderIdentity: 'string',
      leaseDurationSeconds: 'int32',
      acquireTime: 'time',
      renewTime: 'time',
      leaseTransitions: 'int32',
      strategy: 'string',
      preferredHolder: 'string',
    }),
  }),
  certificatesigningrequests: kind('CertificateSigningRequest', {
    spec: obj('CertificateSigningRequestSpec', {
      request: 'bytes',
      signerName: 'string',
      expirationSeconds: 'int32',
      usages: strings,
      username: 'string',
      uid: 'string',
      groups: strings,
      extra: userExtra,
    }),
    status: obj('CertificateSigningRequestStatus', { conditions: { list: csrCondition }, certificate: 'bytes' }),
  }),
  clustertrustbundles: kind('ClusterTrustBundle', {
    spec: obj('ClusterTrustBundleSpec', { signerName: 'string', trustBundle: 'string' }),
  }),
  certificaterequests: kind('CertificateRequest', {
    spec: obj('CertificateRequestSpec', {
      request: 'bytes',
      issuerRef: obj('IssuerReference', { name: 'string', kind: 'string', group: 'string' }),
      duration: 'string',
      isCA: 'bool',
      usages: strings,
      username: 'string',
      uid: 'string',
      groups: strings,
      extra: userExtra,
    }),
    status: obj('CertificateRequestStatus', { conditions: { list: crCondition }, certificate: 'bytes', ca: 'bytes', failureTime: 'time' }),
  }),
  tokenreviews: kind('TokenReview', {
    spec: obj('TokenReviewSpec', { token: 'string', audiences: strings }),
    status: obj('TokenReviewStatus', {
      authenticated: 'bool',
      user: obj('UserInfo', { username: 'string', uid: 'string', groups: strings, extra: userExtra }),
      audiences: strings,
      error: 'string',
    }),
  }),
};

const GO_TYPE: Record<Scalar, string> = { string: 'string', int32: 'int32', int64: 'int64', bool: 'bool', bytes: '[]uint8', time: 'string', any: 'interface {}' };
const OPENAPI_TYPE: Record<Scalar, string> = { string: 'string', int32: 'integer', int64: 'integer', bool: 'boolean', bytes: 'string', time: 'string', any: 'object' };

function jsonKind(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return 'number';
  return typeof v;
}

function scalarOk(t: Scalar, v: unknown): boolean {
  switch (t) {
    case 'string':
    case 'bytes':
    case 'time':
      return typeof v === 'string';
    case 'int32':
      return typeof v === 'number' && Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31;
    case 'int64':
      return typeof v === 'number' && Number.isInteger(v);
    case 'bool':
      return typeof v === 'boolean';
    case 'any':
      return true;
  }
}

/** metav1.Time / CRD `format: date-time`: RFC 3339, fractional seconds allowed. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

interface TypeError {
  path: string;
  /** Set for a string that is not a valid time (the type was right). */
  badTime?: boolean;
  goStruct: string;
  want: string;
  openapi: string;
  got: unknown;
}

/**
 * Walks `value` against `t`: collects unknown fields (dotted paths) and removes them when `prune`, and returns the
 * first type mismatch, if any.
 */
function walk(t: FieldType, value: any, path: string, goStruct: string, unknown: string[], prune: boolean): TypeError | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof t === 'string') {
    if (!scalarOk(t, value)) return { path, goStruct, want: GO_TYPE[t], openapi: OPENAPI_TYPE[t], got: value };
    if (t === 'time' && !RFC3339.test(value)) return { path, goStruct, want: 'Time', openapi: 'date-time', got: value, badTime: true };
    return undefined;
  }
  if ('list' in t) {
    if (!Array.isArray(value)) return { path, goStruct, want: `[]${goName(t.list)}`, openapi: 'array', got: value };
    for (let i = 0; i < value.length; i++) {
      const e = walk(t.list, value[i], `${path}[${i}]`, goStruct, unknown, prune);
      if (e) return e;
    }
    return undefined;
  }
  if ('map' in t) {
    if (typeof value !== 'object' || Array.isArray(value)) return { path, goStruct, want: `map[string]${goName(t.map)}`, openapi: 'object', got: value };
    for (const [k, v] of Object.entries(value)) {
      const e = walk(t.map, v, `${path}[${k}]`, goStruct, unknown, prune);
      if (e) return e;
    }
    return undefined;
  }
  if (typeof value !== 'object' || Array.isArray(value)) return { path, goStruct, want: t.go, openapi: 'object', got: value };
  for (const k of Object.keys(value)) {
    const ft = t.fields[k];
    const p = path ? `${path}.${k}` : k;
    if (!ft) {
      unknown.push(p);
      if (prune) delete value[k];
      continue;
    }
    const e = walk(ft, value[k], p, t.go, unknown, prune);
    if (e) return e;
  }
  return undefined;
}

function goName(t: FieldType): string {
  if (typeof t === 'string') return GO_TYPE[t];
  if ('list' in t) return `[]${goName(t.list)}`;
  if ('map' in t) return `map[string]${goName(t.map)}`;
  return t.go;
}

export interface DecodeTarget {
  plural: string;
  kind: string;
  group: string;
  /** Custom resource: type errors are 422 Invalid from the OpenAPI schema instead of 400 from Go's decoder. */
  custom: boolean;
}

/**
 * Checks `body` against the schema of `def` (in place: unknown fields are dropped unless Strict refuses them).
 * Returns the warnings to send (Warn mode). Throws the KubeStatusError the real server answers.
 */
export function decodeBody(def: DecodeTarget, body: any, version: string, mode: FieldValidation): string[] {
  const schema = SCHEMAS[def.plural];
  if (!schema || body === null || typeof body !== 'object' || Array.isArray(body)) return [];
  const gv = def.group ? `${def.group}/${version}` : version;
  const prefix = `${def.kind} in version "${gv}" cannot be handled as a ${def.kind}: `;
  const unknown: string[] = [];
  const err = walk(schema, body, '', schema.go, unknown, mode !== 'Strict');
  if (err?.badTime) {
    const v = String(err.got);
    if (def.custom) throw statusErrors.invalid(def.kind, def.group, String(body.metadata?.name ?? ''), [fieldErr.invalid(err.path, v, `${err.path} in body must be of type date-time: ${JSON.stringify(v)}`)]);
    throw statusErrors.badRequest(`${prefix}parsing time ${JSON.stringify(v)} as "2006-01-02T15:04:05Z07:00": cannot parse ${JSON.stringify(v)} as "2006"`);
  }
  if (err) {
    if (def.custom) {
      const shown = typeof err.got === 'string' ? JSON.stringify(err.got) : JSON.stringify(err.got);
      const cause: StatusCause = fieldErr.invalid(err.path, jsonKind(err.got) === 'number' ? err.got : jsonKind(err.got), `${err.path} in body must be of type ${err.openapi}: ${shown}`);
      throw statusErrors.invalid(def.kind, def.group, String(body.metadata?.name ?? ''), [cause]);
    }
    const got = jsonKind(err.got) === 'number' ? `number ${String(err.got)}` : jsonKind(err.got) === 'array' ? 'array' : jsonKind(err.got) === 'object' ? 'object' : jsonKind(err.got);
    throw statusErrors.badRequest(`${prefix}json: cannot unmarshal ${got} into Go struct field ${err.goStruct}.${err.path} of type ${err.want}`);
  }
  if (unknown.length === 0 || mode === 'Ignore') return [];
  if (mode === 'Strict') {
    const list = unknown.map((u) => `unknown field ${JSON.stringify(u)}`).join(', ');
    throw statusErrors.badRequest(`${prefix}strict decoding error: ${list}`);
  }
  return unknown.map((u) => `unknown field ${JSON.stringify(u)}`);
}

/** The fieldValidation query parameter; a value other than Strict, Warn or Ignore is a 400 as on a real server. */
export function parseFieldValidation(q: string | null, fallback: FieldValidation): FieldValidation {
  if (q === null || q === '') return fallback;
  if (q === 'Strict' || q === 'Warn' || q === 'Ignore') return q;
  throw statusErrors.badRequest(`fieldValidation must be one of "Ignore", "Warn", or "Strict", got ${JSON.stringify(q)}`);
}
