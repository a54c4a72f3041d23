/**
 * The resources the fake API server serves, with the real server's validation, strategy (what an update may change,
 * per subresource) and admission rules (CSR approve/sign, ClusterTrustBundle attest, cert-manager approval). Each
 * hook names the field that is wrong in the real server's words so that clients see the same 4xx they would in a
 * cluster. Objects are plain JSON (`Obj`); the store (store.ts) owns metadata, resourceVersion and history.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import { csrRequestedUsages, inspectCaCert, parseAndVerifyCsr, parsePemBlocks } from './pki.js';
import { fieldErr, statusErrors, type StatusCause } from './status.js';
import type { AuthzAttributes } from './rbac.js';

export type Obj = any;

export interface UserInfo {
  username: string;
  uid: string;
  groups: string[];
  extra?: Record<string, string[]>;
}

export interface AdmissionContext {
  user: UserInfo;
  /** RBAC check for the requesting user (superusers always pass). */
  can(a: Omit<AuthzAttributes, 'user'>): boolean;
  now: Date;
}

export type Subresource = '' | 'status' | 'approval';

export interface ResourceDef {
  plural: string;
  kind: string;
  group: string;
  /** Versions this resource can be served at (which are actually served is configurable for CTBs). */
  versions: string[];
  namespaced: boolean;
  /** Custom resource (CRD): list items carry apiVersion/kind, DELETE returns the object, updates need a resourceVersion. */
  custom: boolean;
  subresources: Subresource[];
  allowCreateOnUpdate: boolean;
  allowUnconditionalUpdate: boolean;
  /** Only create is served (TokenReview). */
  createOnly?: boolean;
  shortKind?: string;
  fieldLabels: Record<string, (o: Obj) => string | undefined>;
  validateName(name: string): string | undefined;
  /** Decoding checks that the real server reports as 400 BadRequest ("cannot be handled as a ..."). */
  decode?(o: Obj, version: string): void;
  /** Defaulting and server-set fields on create (e.g. CSR requester identity); runs before validation. */
  prepareCreate?(o: Obj, ctx: AdmissionContext): void;
  /** Copies what an update of `sub` must not change from `old` into `o`. */
  prepareUpdate?(old: Obj, o: Obj, sub: Subresource, ctx: AdmissionContext): void;
  validate?(o: Obj, old: Obj | undefined, sub: Subresource, ctx: AdmissionContext): Promise<StatusCause[]>;
  /** Permission checks beyond RBAC on the verb (admission plugins / webhooks); throws a 403 KubeStatusError. */
  admit?(o: Obj, old: Obj | undefined, sub: Subresource, ctx: AdmissionContext): void;
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function validateDnsSubdomain(name: string): string | undefined {
  if (name.length > 253) return 'must be no more than 253 characters';
  if (!DNS1123_SUBDOMAIN.test(name)) {
    return "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
  }
  return undefined;
}

function validatePathSegmentName(name: string): string | undefined {
  if (name === '.' || name === '..') return `may not be '${name}'`;
  if (name.includes('/') || name.includes('%')) return "may not contain '/' or '%'";
  return undefined;
}

const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;
const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const MAX_CONFIG_BYTES = 1024 * 1024;

/** Decodes a JSON []byte field like Go does; throws a 400 naming the kind on bad base64. */
function decodeBytes(value: unknown, kind: string, version: string, group: string): Buffer {
  const gv = group ? `${group}/${version}` : version;
  if (typeof value !== 'string') {
    throw statusErrors.badRequest(`${kind} in version "${gv}" cannot be handled as a ${kind}: json: cannot unmarshal ${typeof value} into Go value of type []uint8`);
  }
  if (!B64.test(value)) {
    const at = [...value].findIndex((c) => !/[A-Za-z0-9+/=]/.test(c));
    throw statusErrors.badRequest(`${kind} in version "${gv}" cannot be handled as a ${kind}: illegal base64 data at input byte ${at >= 0 ? at : value.length}`);
  }
  return Buffer.from(value, 'base64');
}

function configKeyErrors(field: string, keys: string[]): StatusCause[] {
  return keys
    .filter((k) => !CONFIG_KEY.test(k) || k.length > 253)
    .map((k) =>
      fieldErr.invalid(
        `${field}[${k}]`,
        k,
        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
      ),
    );
}

function immutableDataErrors(o: Obj, old: Obj | undefined, fields: string[]): StatusCause[] {
  if (!old || old.immutable !== true) return [];
  const errs: StatusCause[] = [];
  if (o.immutable !== true) errs.push(fieldErr.forbidden('immutable', 'field is immutable when `immutable` is set'));
  for (const f of fields) {
    if (JSON.stringify(o[f] ?? {}) !== JSON.stringify(old[f] ?? {})) errs.push(fieldErr.forbidden(f, 'field is immutable when `immutable` is set'));
  }
  return errs;
}

const metaNameField = { 'metadata.name': (o: Obj) => o.metadata?.name };
const metaNsFields = { ...metaNameField, 'metadata.namespace': (o: Obj) => o.metadata?.namespace };

// ---------------------------------------------------------------- core/v1 Secret, ConfigMap

export const secrets: ResourceDef = {
  plural: 'secrets',
  kind: 'Secret',
  group: '',
  versions: ['v1'],
  namespaced: true,
  custom: false,
  subresources: [],
  allowCreateOnUpdate: false,
  allowUnconditionalUpdate: true,
  fieldLabels: { ...metaNsFields, type: (o) => o.type },
  validateName: validateDnsSubdomain,
  decode(o, version) {
    for (const v of Object.values(o.data ?? {})) decodeBytes(v, 'Secret', version, '');
    for (const v of Object.values(o.stringData ?? {})) {
      if (typeof v !== 'string') throw statusErrors.badRequest(`Secret in version "${version}" cannot be handled as a Secret: json: cannot unmarshal ${typeof v} into Go struct field Secret.stringData of type string`);
    }
  },
  prepareCreate(o) {
    mergeStringData(o);
    if (!o.type) o.type = 'Opaque';
  },
  prepareUpdate(_old, o) {
    mergeStringData(o);
    if (!o.type) o.type = 'Opaque';
  },
  async validate(o, old) {
    const errs = configKeyErrors('data', Object.keys(o.data ?? {}));
    const size = Object.values(o.data ?? {}).reduce((n: number, v) => n + Buffer.from(v as string, 'base64').length, 0);
    if (size > MAX_CONFIG_BYTES) errs.push(fieldErr.tooLong('data', MAX_CONFIG_BYTES));
    if (old && old.type !== o.type) errs.push(fieldErr.immutable('type', o.type));
    errs.push(...immutableDataErrors(o, old, ['data']));
    return errs;
  },
};

function mergeStringData(o: Obj): void {
  if (o.stringData && typeof o.stringData === 'object') {
    o.data = o.data ?? {};
    for (const [k, v] of Object.entries(o.stringData)) o.data[k] = Buffer.from(v as string, 'utf8').toString('base64');
  }
  delete o.stringData;
}

export const configmaps: ResourceDef = {
  plural: 'configmaps',
  kind: 'ConfigMap',
  group: '',
  versions: ['v1'],
  namespaced: true,
  custom: false,
  subresources: [],
  allowCreateOnUpdate: false,
  allowUnconditionalUpdate: true,
  fieldLabels: metaNsFields,
  validateName: validateDnsSubdomain,
  decode(o, version) {
    for (const [k, v] of Object.entries(o.data ?? {})) {
      if (typeof v !== 'string') throw statusErrors.badRequest(`ConfigMap in version "${version}" cannot be handled as a ConfigMap: json: cannot unmarshal ${typeof v} into Go struct field ConfigMap.data of type string (key ${k})`);
    }
    for (const v of Object.values(o.binaryData ?? {})) decodeBytes(v, 'ConfigMap', version, '');
  },
  async validate(o, old) {
    const errs = [...configKeyErrors('data', Object.keys(o.data ?? {})), ...configKeyErrors('binaryData', Object.keys(o.binaryData ?? {}))];
    for (const k of Object.keys(o.data ?? {})) {
      if (o.binaryData && k in o.binaryData) errs.push(fieldErr.invalid(`data[${k}]`, k, 'duplicate of key present in binaryData'));
    }
    let size = 0;
    for (const v of Object.values(o.data ?? {})) size += Buffer.byteLength(v as string);
    for (const v of Object.values(o.binaryData ?? {})) size += Buffer.from(v as string, 'base64').length;
    if (size > MAX_CONFIG_BYTES) errs.push(fieldErr.tooLong('', MAX_CONFIG_BYTES));
    errs.push(...immutableDataErrors(o, old, ['data', 'binaryData']));
    return errs;
  },
};

// ---------------------------------------------------------------- core/v1 Namespace (cluster-scoped)

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/**
 * Namespaces as objects, for clients that list them (label selection). Namespaced resources do not require their
 * namespace to exist as an object: every namespace is usable.
 */
export const namespaces: ResourceDef = {
  plural: 'namespaces',
  kind: 'Namespace',
  group: '',
  versions: ['v1'],
  namespaced: false,
  custom: false,
  subresources: [],
  allowCreateOnUpdate: false,
  allowUnconditionalUpdate: true,
  fieldLabels: { ...metaNameField, 'status.phase': (o) => o.status?.phase },
  validateName: (name) =>
    name.length > 63 || !DNS1123_LABEL.test(name)
      ? "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
      : undefined,
  prepareCreate(o) {
    o.spec = { finalizers: ['kubernetes'], ...(o.spec ?? {}) };
    // status.phase is the server's; a client may set Terminating only to model a namespace being deleted.
    o.status = { phase: o.status?.phase === 'Terminating' ? 'Terminating' : 'Active' };
  },
  prepareUpdate(old, o) {
    o.status = old.status;
  },
};

// ---------------------------------------------------------------- coordination.k8s.io/v1 Lease

/** metav1.MicroTime's wire format: RFC 3339 with exactly six fractional digits. */
const MICROTIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$/;

function checkMicroTime(value: unknown, version: string): void {
  if (value === null || value === undefined) return;
  const prefix = `Lease in version "${version}" cannot be handled as a Lease: `;
  if (typeof value !== 'string') throw statusErrors.badRequest(`${prefix}json: cannot unmarshal ${typeof value} into Go value of type string`);
  if (MICROTIME.test(value)) return;
  const m = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}/.exec(value);
  const rest = m ? value.slice(m[0].length) : value;
  throw statusErrors.badRequest(`${prefix}parsing time "${value}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "${rest}" as ".000000"`);
}

/** Normalises a valid MicroTime to UTC with six digits, as the server re-serialises it. */
function normaliseMicroTime(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const frac = /\.(\d{6})/.exec(value)![1]!;
  const d = new Date(value);
  return `${d.toISOString().slice(0, 19)}.${frac}Z`;
}

export const leases: ResourceDef = {
  plural: 'leases',
  kind: 'Lease',
  group: 'coordination.k8s.io',
  versions: ['v1'],
  namespaced: true,
  custom: false,
  subresources: [],
  allowCreateOnUpdate: true,
  allowUnconditionalUpdate: true,
  fieldLabels: metaNsFields,
  validateName: validateDnsSubdomain,
  decode(o, version) {
    const spec = o.spec ?? {};
    checkMicroTime(spec.acquireTime, `coordination.k8s.io/${version}`);
    checkMicroTime(spec.renewTime, `coordination.k8s.io/${version}`);
    for (const f of ['acquireTime', 'renewTime']) if (typeof spec[f] === 'string') spec[f] = normaliseMicroTime(spec[f]);
  },
  async validate(o) {
    const errs: StatusCause[] = [];
    const spec = o.spec ?? {};
    if (spec.leaseDurationSeconds !== undefined && spec.leaseDurationSeconds !== null) {
      if (!Number.isInteger(spec.leaseDurationSeconds) || spec.leaseDurationSeconds <= 0) {
        errs.push(fieldErr.invalid('spec.leaseDurationSeconds', spec.leaseDurationSeconds, 'must be greater than 0'));
      }
    }
    if (spec.leaseTransitions !== undefined && spec.leaseTransitions !== null && (!Number.isInteger(spec.leaseTransitions) || spec.leaseTransitions < 0)) {
      errs.push(fieldErr.invalid('spec.leaseTransitions', spec.leaseTransitions, 'must be greater than or equal to 0'));
    }
    if (spec.holderIdentity !== undefined && spec.holderIdentity !== null && typeof spec.holderIdentity !== 'string') {
      errs.push(fieldErr.invalid('spec.holderIdentity', spec.holderIdentity, 'must be a string'));
    }
    return errs;
  },
};

// ---------------------------------------------------------------- certificates.k8s.io/v1 CertificateSigningRequest

export const KEY_USAGES = [
  'signing', 'digital signature', 'content commitment', 'key encipherment', 'key agreement', 'data encipherment',
  'cert sign', 'crl sign', 'encipher only', 'decipher only', 'any', 'server auth', 'client auth', 'code signing',
  'email protection', 's/mime', 'ipsec end system', 'ipsec tunnel', 'ipsec user', 'timestamping', 'ocsp signing',
  'microsoft sgc', 'netscape sgc',
];

const SIGNER_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)\/([-a-zA-Z0-9_.~]+(\/[-a-zA-Z0-9_.~]+)*)$/;

export function validateSignerName(field: string, name: unknown): StatusCause[] {
  if (typeof name !== 'string' || name === '') return [fieldErr.required(field)];
  const m = SIGNER_NAME.exec(name);
  if (!m || !m[1]!.includes('.')) {
    return [fieldErr.invalid(field, name, "must be a fully qualified domain and path of the form 'example.com/signer-name'")];
  }
  if (name.length > 571) return [fieldErr.tooLong(field, 571)];
  return [];
}

/** `approve`/`sign`/`attest` on `signers`: resourceName is the signer name or `<domain>/*`. */
export function signerPermitted(ctx: AdmissionContext, verb: string, signerName: string, group = 'certificates.k8s.io'): boolean {
  const domain = signerName.split('/')[0]!;
  return (
    ctx.can({ verb, group, resource: 'signers', name: signerName }) ||
    ctx.can({ verb, group, resource: 'signers', name: `${domain}/*` })
  );
}

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastUpdateTime?: string;
  lastTransitionTime?: string;
}

function conds(o: Obj): Condition[] {
  return Array.isArray(o?.status?.conditions) ? o.status.conditions : [];
}

export function hasCondition(o: Obj, type: string, status = 'True'): boolean {
  return conds(o).some((c) => c.type === type && c.status === status);
}

/** CSR condition rules shared by /status and /approval (certificates validation.go). */
function validateCsrConditions(o: Obj, old: Obj | undefined): StatusCause[] {
  const errs: StatusCause[] = [];
  const seen = new Set<string>();
  conds(o).forEach((c, i) => {
    const f = `status.conditions[${i}]`;
    if (!c.type) errs.push(fieldErr.required(`${f}.type`));
    if (['Approved', 'Denied', 'Failed'].includes(c.type)) {
      if (c.status !== 'True') errs.push(fieldErr.notSupported(`${f}.status`, c.status, ['True']));
      if (seen.has(c.type)) errs.push(fieldErr.duplicate(`${f}.type`, c.type));
    } else if (!['True', 'False', 'Unknown'].includes(c.status)) {
      errs.push(fieldErr.notSupported(`${f}.status`, c.status, ['False', 'True', 'Unknown']));
    }
    seen.add(c.type);
  });
  if (seen.has('Approved') && seen.has('Denied')) {
    const i = conds(o).findIndex((c) => c.type === 'Denied');
    errs.push(fieldErr.invalid(`status.conditions[${i}].type`, 'Denied', 'Approved and Denied conditions are mutually exclusive'));
  }
  if (old) {
    for (const t of ['Approved', 'Denied', 'Failed']) {
      if (hasCondition(old, t) && !hasCondition(o, t)) errs.push(fieldErr.forbidden('status.conditions', `updates may not remove a condition of type "${t}"`));
    }
  }
  return errs;
}

/** Fills condition timestamps; `withUpdateTime` for CSR conditions (cert-manager's have lastTransitionTime only). */
function stampConditions(o: Obj, old: Obj | undefined, now: Date, withUpdateTime = true): void {
  const ts = now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  for (const c of conds(o)) {
    const prev = conds(old).find((p) => p.type === c.type);
    if (withUpdateTime && !c.lastUpdateTime) c.lastUpdateTime = ts;
    if (!c.lastTransitionTime) c.lastTransitionTime = prev && prev.status === c.status && prev.lastTransitionTime ? prev.lastTransitionTime : ts;
  }
}

function keepConditions(o: Obj, old: Obj, types: string[]): void {
  const kept = conds(o).filter((c) => !types.includes(c.type));
  const fromOld = conds(old).filter((c) => types.includes(c.type));
  o.status = o.status ?? {};
  o.status.conditions = [...kept, ...fromOld];
  if (o.status.conditions.length === 0) delete o.status.conditions;
}

export const certificatesigningrequests: ResourceDef = {
  plural: 'certificatesigningrequests',
  kind: 'CertificateSigningRequest',
  group: 'certificates.k8s.io',
  versions: ['v1'],
  namespaced: false,
  custom: false,
  subresources: ['status', 'approval'],
  allowCreateOnUpdate: false,
  allowUnconditionalUpdate: true,
  fieldLabels: { ...metaNameField, 'spec.signerName': (o) => o.spec?.signerName },
  validateName: validatePathSegmentName,
  decode(o, version) {
    if (o.spec?.request !== undefined) decodeBytes(o.spec.request, 'CertificateSigningRequest', version, 'certificates.k8s.io');
    if (o.status?.certificate !== undefined && o.status.certificate !== null) decodeBytes(o.status.certificate, 'CertificateSigningRequest', version, 'certificates.k8s.io');
  },
  prepareCreate(o, ctx) {
    o.spec = o.spec ?? {};
    // The apiserver overwrites the requester identity; a client cannot claim someone else's.
    o.spec.username = ctx.user.username;
    o.spec.uid = ctx.user.uid;
    o.spec.groups = ctx.user.groups;
    if (ctx.user.extra) o.spec.extra = ctx.user.extra;
    else delete o.spec.extra;
    o.status = {};
  },
  prepareUpdate(old, o, sub, ctx) {
    o.spec = old.spec;
    if (sub === '') {
      o.status = old.status;
    } else if (sub === 'status') {
      keepConditions(o, old, ['Approved', 'Denied']);
    } else if (sub === 'approval') {
      o.status = { ...(o.status ?? {}) };
      if (old.status?.certificate) o.status.certificate = old.status.certificate;
      else delete o.status.certificate;
      keepConditions(o, old, ['Failed']);
    }
    if (sub !== '') stampConditions(o, old, ctx.now);
  },
  async validate(o, old, sub) {
    const errs: StatusCause[] = [];
    const spec = o.spec ?? {};
    if (!old) {
      if (!spec.request) errs.push(fieldErr.required('spec.request'));
      else {
        try {
          await parseAndVerifyCsr(Buffer.from(spec.request, 'base64').toString('utf8'));
        } catch (e) {
          errs.push(fieldErr.invalid('spec.request', '<request data>', (e as Error).message));
        }
      }
      errs.push(...validateSignerName('spec.signerName', spec.signerName));
      if (spec.signerName === 'kubernetes.io/legacy-unknown') {
        errs.push(fieldErr.invalid('spec.signerName', spec.signerName, 'the legacy signerName is not allowed via this API version'));
      }
      if (!Array.isArray(spec.usages) || spec.usages.length === 0) errs.push(fieldErr.required('spec.usages'));
      else {
        const seen = new Set<string>();
        spec.usages.forEach((u: unknown, i: number) => {
          if (typeof u !== 'string' || !KEY_USAGES.includes(u)) errs.push(fieldErr.notSupported(`spec.usages[${i}]`, u, KEY_USAGES));
          else if (seen.has(u)) errs.push(fieldErr.duplicate(`spec.usages[${i}]`, u));
          seen.add(u as string);
        });
      }
      if (spec.expirationSeconds !== undefined && spec.expirationSeconds !== null) {
        if (!Number.isInteger(spec.expirationSeconds) || spec.expirationSeconds < 600) {
          errs.push(fieldErr.invalid('spec.expirationSeconds', spec.expirationSeconds, 'may not specify a duration less than 600 seconds (10 minutes)'));
        }
      }
      return errs;
    }
    if (sub === '') return errs;
    errs.push(...validateCsrConditions(o, old));
    const cert = o.status?.certificate;
    if (cert) {
      const pem = Buffer.from(cert, 'base64').toString('utf8');
      const blocks = parsePemBlocks(pem);
      if (blocks.length === 0 || blocks.some((b) => b.type !== 'CERTIFICATE')) {
        errs.push(fieldErr.invalid('status.certificate', '<certificate data>', 'must contain at least one CERTIFICATE PEM block and only CERTIFICATE PEM blocks'));
      } else if (blocks.some((b) => !inspectCaCert(b.der).parsed)) {
        errs.push(fieldErr.invalid('status.certificate', '<certificate data>', 'x509: malformed certificate'));
      }
      if (!hasCondition(o, 'Approved')) errs.push(fieldErr.invalid('status.certificate', '<certificate data>', 'certificate may only be set if the request is approved'));
      if (hasCondition(o, 'Failed')) errs.push(fieldErr.invalid('status.certificate', '<certificate data>', 'certificate may not be set on a failed request'));
    }
    if (old.status?.certificate && cert !== old.status.certificate) {
      errs.push(fieldErr.forbidden('status.certificate', 'updates may not modify existing certificate content'));
    }
    return errs;
  },
  admit(o, old, sub, ctx) {
    if (!old) return;
    const signer = String(old.spec?.signerName ?? '');
    const name = String(o.metadata?.name ?? '');
    if (sub === 'approval') {
      const added = ['Approved', 'Denied'].some((t) => hasCondition(o, t) && !hasCondition(old, t));
      if (added && !signerPermitted(ctx, 'approve', signer)) {
        throw statusErrors.forbidden('certificatesigningrequests', 'certificates.k8s.io', name, `user not permitted to approve requests with signerName "${signer}"`);
      }
    }
    if (sub === 'status') {
      if ((o.status?.certificate ?? '') !== (old.status?.certificate ?? '') && !signerPermitted(ctx, 'sign', signer)) {
        throw statusErrors.forbidden('certificatesigningrequests', 'certificates.k8s.io', name, `user not permitted to sign requests with signerName "${signer}"`);
      }
    }
  },
};

// ---------------------------------------------------------------- certificates.k8s.io ClusterTrustBundle

export function ctbNamePrefix(signerName: string): string {
  return `${signerName.replace(/\//g, ':')}:`;
}

export const clustertrustbundles: ResourceDef = {
  plural: 'clustertrustbundles',
  kind: 'ClusterTrustBundle',
  group: 'certificates.k8s.io',
  versions: ['v1beta1', 'v1'],
  namespaced: false,
  custom: false,
  subresources: [],
  allowCreateOnUpdate: false,
  allowUnconditionalUpdate: false,
  fieldLabels: { ...metaNameField, 'spec.signerName': (o) => o.spec?.signerName ?? '' },
  // Name rules depend on spec.signerName and are checked in validate().
  validateName: () => undefined,
  async validate(o, old) {
    const errs: StatusCause[] = [];
    const name = String(o.metadata?.name ?? '');
    const spec = o.spec ?? {};
    const signer = spec.signerName;
    if (signer) {
      errs.push(...validateSignerName('spec.signerName', signer));
      const prefix = ctbNamePrefix(String(signer));
      if (!name.startsWith(prefix)) {
        errs.push(fieldErr.invalid('metadata.name', name, `ClusterTrustBundle for signerName ${signer} must be named with prefix ${prefix}`));
      } else {
        const suffix = name.slice(prefix.length);
        const bad = suffix === '' || suffix.includes(':') ? 'must not contain ":" and must not be empty' : validateDnsSubdomain(suffix);
        if (bad) errs.push(fieldErr.invalid('metadata.name', name, `ClusterTrustBundle name suffix ${JSON.stringify(suffix)} ${bad}`));
      }
    } else {
      if (name.includes(':')) errs.push(fieldErr.invalid('metadata.name', name, 'ClusterTrustBundle without signer name must not have ":" in its name'));
      else {
        const bad = validateDnsSubdomain(name);
        if (bad) errs.push(fieldErr.invalid('metadata.name', name, bad));
      }
    }
    if (old && (old.spec?.signerName ?? '') !== (signer ?? '')) errs.push(fieldErr.immutable('spec.signerName', signer ?? ''));
    errs.push(...validateTrustBundle(spec.trustBundle));
    return errs;
  },
  admit(o, old, _sub, ctx) {
    const signer = o.spec?.signerName;
    if (!signer) return;
    if (old && JSON.stringify(old.spec) === JSON.stringify(o.spec)) return;
    if (!signerPermitted(ctx, 'attest', String(signer))) {
      throw statusErrors.forbidden('clustertrustbundles', 'certificates.k8s.io', String(o.metadata?.name ?? ''), `user not permitted to attest for signerName "${signer}"`);
    }
  },
};

const MAX_TRUST_BUNDLE = 1024 * 1024;

export function validateTrustBundle(bundle: unknown): StatusCause[] {
  const field = 'spec.trustBundle';
  if (typeof bundle !== 'string' || bundle === '') return [fieldErr.required(field)];
  if (bundle.length > MAX_TRUST_BUNDLE) return [fieldErr.tooLong(field, MAX_TRUST_BUNDLE)];
  const errs: StatusCause[] = [];
  const blocks = parsePemBlocks(bundle);
  const seen = new Map<string, number[]>();
  blocks.forEach((b, i) => {
    if (b.type !== 'CERTIFICATE') {
      errs.push(fieldErr.invalid(field, '<value omitted>', `entry ${i} has bad block type: ${b.type}`));
      return;
    }
    if (b.hasHeaders) errs.push(fieldErr.invalid(field, '<value omitted>', `entry ${i} has PEM block headers`));
    const info = inspectCaCert(b.der);
    if (!info.parsed) errs.push(fieldErr.invalid(field, '<value omitted>', `entry ${i} does not parse as X.509`));
    else if (!info.basicConstraintsValid) errs.push(fieldErr.invalid(field, '<value omitted>', `entry ${i} has invalid basic constraints`));
    else if (!info.isCA) errs.push(fieldErr.invalid(field, '<value omitted>', `entry ${i} does not have the CA bit set`));
    const k = b.der.toString('hex');
    seen.set(k, [...(seen.get(k) ?? []), i]);
  });
  if (blocks.length === 0) errs.push(fieldErr.invalid(field, '<value omitted>', 'at least one trust anchor must be provided'));
  for (const idx of seen.values()) {
    if (idx.length > 1) errs.push(fieldErr.invalid(field, '<value omitted>', `duplicate trust anchor (indices [${idx.join(' ')}])`));
  }
  return errs;
}

// ---------------------------------------------------------------- cert-manager.io/v1 CertificateRequest (CRD + webhook)

const GO_DURATION = /^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$/;

/** Parses a Go duration string ("1h0m0s") into seconds; undefined when malformed. */
export function parseGoDuration(s: string): number | undefined {
  if (!GO_DURATION.test(s)) return undefined;
  const mult: Record<string, number> = { ns: 1e-9, us: 1e-6, µs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };
  let total = 0;
  for (const m of s.matchAll(/([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)/g)) total += Number(m[1]) * mult[m[2]!]!;
  return total;
}

export const CERT_MANAGER_USAGES = [
  'signing', 'digital signature', 'content commitment', 'key encipherment', 'key agreement', 'data encipherment',
  'cert sign', 'crl sign', 'encipher only', 'decipher only', 'any', 'server auth', 'client auth', 'code signing',
  'email protection', 's/mime', 'ipsec end system', 'ipsec tunnel', 'ipsec user', 'timestamping', 'ocsp signing',
  'microsoft sgc', 'netscape sgc',
];

function issuerSignerName(o: Obj): string {
  const ref = o.spec?.issuerRef ?? {};
  const kind = ref.kind || 'Issuer';
  const group = ref.group || 'cert-manager.io';
  const plural = `${kind.toLowerCase()}s`;
  // Cluster-scoped issuer kinds carry "Cluster" in their name (ClusterIssuer, AWSPCAClusterIssuer, ...); the others
  // (Issuer, AWSPCAIssuer, ...) are namespaced and their signer name includes the namespace.
  return kind.includes('Cluster') ? `${plural}.${group}/${ref.name}` : `${plural}.${group}/${o.metadata?.namespace}.${ref.name}`;
}

export const certificaterequests: ResourceDef = {
  plural: 'certificaterequests',
  kind: 'CertificateRequest',
  group: 'cert-manager.io',
  versions: ['v1'],
  namespaced: true,
  custom: true,
  subresources: ['status'],
  allowCreateOnUpdate: false,
  allowUnconditionalUpdate: false,
  fieldLabels: metaNsFields,
  validateName: validateDnsSubdomain,
  prepareCreate(o, ctx) {
    o.spec = o.spec ?? {};
    // cert-manager's mutating webhook records who asked; clients cannot set these.
    o.spec.username = ctx.user.username;
    o.spec.uid = ctx.user.uid;
    o.spec.groups = ctx.user.groups;
    if (ctx.user.extra) o.spec.extra = ctx.user.extra;
    delete o.status;
  },
  prepareUpdate(old, o, sub, ctx) {
    if (sub === '') o.status = old.status;
    else {
      o.spec = old.spec;
      o.metadata = { ...o.metadata, labels: old.metadata.labels, annotations: old.metadata.annotations };
      stampConditions(o, old, ctx.now, false);
    }
  },
  async validate(o, old, sub) {
    const errs: StatusCause[] = [];
    const spec = o.spec ?? {};
    if (!old) {
      if (typeof spec.request !== 'string' || spec.request === '') errs.push(fieldErr.required('spec.request', 'must be specified'));
      else if (!B64.test(spec.request)) errs.push(fieldErr.invalid('spec.request', spec.request.slice(0, 16), 'spec.request in body must be of type byte'));
      else {
        try {
          const csr = await parseAndVerifyCsr(Buffer.from(spec.request, 'base64').toString('utf8'));
          const want = csrRequestedUsages(csr);
          if (want.isCA !== undefined && spec.isCA !== undefined && want.isCA !== Boolean(spec.isCA)) {
            errs.push(fieldErr.invalid('spec.request', '<csr>', `encoded CSR error: the isCA field does not match the CSR (spec.isCA=${Boolean(spec.isCA)}, CSR isCA=${want.isCA})`));
          }
          // backends.md §2.1: the CSR's KU/EKU must match spec.usages. cert-manager's webhook compares them when both
          // are set ("csr key usages do not match specified usages, these should match if both are set").
          const asked = Array.isArray(spec.usages) ? [...new Set(spec.usages.map(String))].sort() : [];
          const inCsr = [...new Set(want.usages ?? [])].sort();
          if (asked.length > 0 && inCsr.length > 0 && asked.join(',') !== inCsr.join(',')) {
            errs.push(fieldErr.invalid('spec.request', '<csr>', `csr key usages do not match specified usages, these should match if both are set: [${inCsr.join(' ')}] != [${asked.join(' ')}]`));
          }
        } catch (e) {
          errs.push(fieldErr.invalid('spec.request', '<csr>', `failed to decode csr: ${(e as Error).message}`));
        }
      }
      if (!spec.issuerRef || typeof spec.issuerRef.name !== 'string' || spec.issuerRef.name === '') errs.push(fieldErr.required('spec.issuerRef.name', 'must be specified'));
      if (spec.duration !== undefined && (typeof spec.duration !== 'string' || parseGoDuration(spec.duration) === undefined)) {
        errs.push(fieldErr.invalid('spec.duration', spec.duration, 'must be a valid duration such as "1h0m0s"'));
      }
      (Array.isArray(spec.usages) ? spec.usages : []).forEach((u: unknown, i: number) => {
        if (typeof u !== 'string' || !CERT_MANAGER_USAGES.includes(u)) errs.push(fieldErr.notSupported(`spec.usages[${i}]`, u, CERT_MANAGER_USAGES));
      });
      if (spec.usages !== undefined && !Array.isArray(spec.usages)) errs.push(fieldErr.invalid('spec.usages', spec.usages, 'must be an array'));
      return errs;
    }
    if (sub === '' && JSON.stringify(old.spec) !== JSON.stringify(spec)) errs.push(fieldErr.forbidden('spec', 'field is immutable'));
    const seen = new Set<string>();
    conds(o).forEach((c, i) => {
      if (!c.type) errs.push(fieldErr.required(`status.conditions[${i}].type`));
      if (!['True', 'False', 'Unknown'].includes(c.status)) errs.push(fieldErr.notSupported(`status.conditions[${i}].status`, c.status, ['True', 'False', 'Unknown']));
      if ((c.type === 'Approved' || c.type === 'Denied') && c.status !== 'True') {
        errs.push(fieldErr.invalid(`status.conditions[${i}]`, c.status, `"${c.type}" condition may only be set to True`));
      }
      if (seen.has(c.type)) errs.push(fieldErr.duplicate(`status.conditions[${i}].type`, c.type));
      seen.add(c.type);
    });
    if (seen.has('Approved') && seen.has('Denied')) errs.push(fieldErr.forbidden('status.conditions', 'both "Approved" and "Denied" conditions cannot be set'));
    for (const t of ['Approved', 'Denied']) {
      if (hasCondition(old, t) && !hasCondition(o, t)) errs.push(fieldErr.forbidden('status.conditions', `"${t}" condition may not be removed once set`));
    }
    if (o.status?.certificate !== undefined && !B64.test(String(o.status.certificate))) errs.push(fieldErr.invalid('status.certificate', '<data>', 'status.certificate in body must be of type byte'));
    if (o.status?.ca !== undefined && !B64.test(String(o.status.ca))) errs.push(fieldErr.invalid('status.ca', '<data>', 'status.ca in body must be of type byte'));
    return errs;
  },
  admit(o, old, sub, ctx) {
    if (!old || sub !== 'status') return;
    const added = ['Approved', 'Denied'].some((t) => hasCondition(o, t) && !hasCondition(old, t));
    if (!added) return;
    const signer = issuerSignerName(o);
    const [plural] = signer.split('/');
    if (!ctx.can({ verb: 'approve', group: 'cert-manager.io', resource: 'signers', name: signer }) && !ctx.can({ verb: 'approve', group: 'cert-manager.io', resource: 'signers', name: `${plural}/*` })) {
      throw statusErrors.forbidden(
        'certificaterequests',
        'cert-manager.io',
        String(o.metadata?.name ?? ''),
        `admission webhook "webhook.cert-manager.io" denied the request: status.conditions: Forbidden: user "${ctx.user.username}" does not have permissions to set approved/denied conditions for issuer ${JSON.stringify(o.spec?.issuerRef ?? {})}`,
      );
    }
  },
};

// ---------------------------------------------------------------- authentication.k8s.io/v1 TokenReview (create only)

export const tokenreviews: ResourceDef = {
  plural: 'tokenreviews',
  kind: 'TokenReview',
  group: 'authentication.k8s.io',
  versions: ['v1'],
  namespaced: false,
  custom: false,
  subresources: [],
  allowCreateOnUpdate: false,
  allowUnconditionalUpdate: false,
  createOnly: true,
  fieldLabels: {},
  validateName: () => undefined,
};

export const ALL_RESOURCES: ResourceDef[] = [secrets, configmaps, namespaces, leases, certificatesigningrequests, clustertrustbundles, certificaterequests, tokenreviews];
