/**
 * A strict fake Kubernetes API server for tests, spoken to by the real `@kubernetes/client-node`.
 *
 * Modelled (real REST paths, JSON shapes, status codes and message shapes):
 * - core/v1 Secrets and ConfigMaps (namespaced) and Namespaces (cluster-scoped, for listing by label; a namespaced
 *   object does not need its Namespace to exist); coordination.k8s.io/v1 Leases (MicroTime fields must carry exactly
 *   six fractional digits, else 400 BadRequest, as the real server; create-on-PUT allowed like the real strategy);
 *   certificates.k8s.io/v1 CertificateSigningRequests (cluster-scoped, `/approval` and `/status` subresources,
 *   requester identity set by the server, Approved/Denied/Failed rules, certificate immutable, expirationSeconds >= 600,
 *   `approve`/`sign` on `signers` admission); certificates.k8s.io ClusterTrustBundles at v1beta1 and/or v1
 *   (configurable, discovery reflects it; trust-bundle and signer-linked-name validation; `attest` admission;
 *   signerName immutable; updates need a resourceVersion); cert-manager.io/v1 CertificateRequests (custom resource:
 *   list items carry kind, DELETE returns the object, PUT needs a resourceVersion, spec immutable, `/status`,
 *   webhook-style approval permission and condition rules); authentication.k8s.io/v1 TokenReviews.
 * - Verbs get, list (labelSelector; fieldSelector metadata.name/metadata.namespace, spec.signerName for CSRs and
 *   CTBs), watch (`?watch=true`, resourceVersion, synthetic ADDED events for unset/"0", BOOKMARKs when
 *   allowWatchBookmarks=true, ERROR event with a 410 Expired Status for a too-old resourceVersion as the watch cache
 *   sends it (HTTP 200), or, with expiredWatchResponse 'status', an HTTP 410 Gone answer as a watch served from etcd
 *   gets; timeoutSeconds), create, update (409 on stale resourceVersion, no-op updates keep it), JSON
 *   patch and merge patch (strategic merge patch is treated as a merge patch for built-in kinds, 415 for custom
 *   resources; server-side apply answers 415), delete (built-ins answer a Success Status, custom resources the
 *   object; uid/resourceVersion preconditions).
 * - List/watch query parameters checked like ValidateListOptions (resourceVersionMatch rules; sendInitialEvents
 *   refused as with the WatchList feature off), 422 Invalid.
 * - Request bodies decoded against each kind's fields (kube/schema.ts): wrong JSON types refused (400 for built-ins,
 *   422 for custom resources), unknown fields per `fieldValidation` (Strict by default here; Warn on a real server).
 * - Bearer-token authentication (401 otherwise) and a small RBAC table with the real 403 message; superusers.
 * - Discovery documents: /api, /api/v1, /apis, /apis/<group>, /apis/<group>/<version> (404 when not served).
 * - Fault knobs: fail the next N matching requests with a status, added latency, dropping open watches, compacting
 *   history (forces 410 on re-watch), on-demand bookmarks; a request log.
 *
 * Not modelled: namespace lifecycle (deleting a Namespace does not delete its objects), finalizers/ownerReferences/garbage collection,
 * deletecollection, server-side apply, managedFields, protobuf, table output, pagination (limit/continue are
 * ignored: lists are always complete), resourceVersion semantics of lists (always the latest; resourceVersionMatch is
 * validated, then ignored), sendInitialEvents (refused), impersonation, client certificates,
 * RBAC objects as API resources, aggregated discovery, CSR GC and the built-in kubernetes.io signers (requests to
 * them are accepted but nothing signs them), the built-in "CTBs are public" read grant, cert-manager
 * Certificates/Issuers as objects (issuers are configured in the fake controller).
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import http from 'node:http';
import https from 'node:https';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { stringify as yamlStringify } from 'yaml';
import type { Clock } from '../../src/util/clock.js';
import { createCa, createServerCert } from './kube/pki.js';
import { applyJsonPatch, applyMergePatch, PatchError } from './kube/patch.js';
import { forbiddenReason, ruleAllows, type PolicyRule } from './kube/rbac.js';
import { ALL_RESOURCES, type AdmissionContext, type Obj, type ResourceDef, type Subresource, type UserInfo } from './kube/resources.js';
import { parseFieldSelector, parseLabelSelector, SelectorError } from './kube/selectors.js';
import { KubeStatusError, statusErrors, type StatusBody } from './kube/status.js';
import { ObjectStore, type StoredEvent } from './kube/store.js';
import { decodeBody, parseFieldValidation, type FieldValidation } from './kube/schema.js';
import { validateListOptions } from './kube/list-options.js';

export { KubeStatusError } from './kube/status.js';
export type { StatusBody } from './kube/status.js';
export type { PolicyRule } from './kube/rbac.js';
export type { Obj } from './kube/resources.js';
export type { FieldValidation } from './kube/schema.js';

/** An API caller: authenticates with `token` (default `<name>-token`), authorised by `rules` or `superuser`. */
export interface FakeUser {
  token?: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
  rules?: PolicyRule[];
  superuser?: boolean;
}

/** An entry of the TokenReview table. */
export interface FakeToken {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
  /** Audiences the token was issued for; default: the API server's own audience. */
  audiences?: string[];
  /** After this instant the token is rejected as expired (compared with the fake's clock). */
  expiresAt?: Date;
}

export interface FakeKubeOptions {
  /** Serve HTTPS with a generated CA (kubeConfig() then carries caData). Default false (plain HTTP). */
  https?: boolean;
  /** Callers of the API, by username. A superuser `admin` (token `admin-token`) always exists unless overridden. */
  users?: Record<string, FakeUser>;
  /** TokenReview table, by token. */
  tokens?: Record<string, FakeToken>;
  /** ClusterTrustBundle versions served. Default ['v1beta1']. */
  clusterTrustBundleVersions?: Array<'v1beta1' | 'v1'>;
  /** API server audience (TokenReview default). Default `https://kubernetes.default.svc.cluster.local`. */
  apiAudience?: string;
  /** Number of events kept for watches from an old resourceVersion. Default 1000. */
  historyLimit?: number;
  /** Period of automatic BOOKMARK events on watches that allow them. Default 60000 ms. */
  bookmarkIntervalMs?: number;
  /** Watches without timeoutSeconds end after this long. Default 1800 s. */
  defaultWatchTimeoutSeconds?: number;
  /** Time source for creationTimestamp, condition times and token expiry. Default system time. */
  clock?: Pick<Clock, 'now'>;
  /**
   * How a watch from a too-old resourceVersion is refused: 'event' (HTTP 200, then an ERROR event with a 410 Expired
   * Status, as the watch cache does) or 'status' (an HTTP 410 Gone response with the Status as body, as a watch served
   * from etcd or an older API server answers). Default 'event'. Can be changed with setExpiredWatchResponse().
   */
  expiredWatchResponse?: 'event' | 'status';
  /**
   * How unknown fields in a request body are handled when the request has no `fieldValidation` parameter: Strict
   * (400 BadRequest), Warn (dropped, `Warning` header) or Ignore (dropped). A real API server defaults to Warn; the
   * fake defaults to Strict so that a field meshca misspells (which a cluster would silently drop) fails the tests.
   * Wrong JSON types are refused in every mode. See kube/schema.ts.
   */
  fieldValidation?: FieldValidation;
}

export interface RequestLogEntry {
  time: Date;
  method: string;
  /** Decoded path without query. */
  path: string;
  query: Record<string, string>;
  user?: string;
  verb?: string;
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  contentType?: string;
  /** The request body as parsed JSON (create, update, patch, delete options), before any pruning. */
  body?: unknown;
  /** Warning headers sent with the answer (unknown fields dropped in Warn mode). */
  warnings?: string[];
  status: number;
}

export interface FailRule {
  /** HTTP status to answer. */
  code: number;
  reason?: string;
  message?: string;
  /** Only requests for which this returns true are failed (and counted). Default: every request. */
  match?: (req: { method: string; path: string; verb?: string; resource?: string; watch: boolean }) => boolean;
}

export interface WatchHandle {
  stop(): void;
}

export interface InMemoryOptions {
  namespace?: string;
  /** Username to act as (RBAC and admission apply); default `system:admin` (superuser). */
  as?: string;
  /** API version for the returned apiVersion field (ClusterTrustBundles); default the newest served. */
  version?: string;
}

/** Direct, in-process access with the same validation, admission and events as HTTP (used by the fake controllers). */
export interface FakeKubeApi {
  get(plural: string, name: string, o?: InMemoryOptions): Promise<Obj>;
  list(plural: string, o?: InMemoryOptions & { labelSelector?: string; fieldSelector?: string }): Promise<Obj>;
  create(plural: string, obj: Obj, o?: InMemoryOptions): Promise<Obj>;
  /** PUT of the object or of a subresource ('status' | 'approval'). */
  update(plural: string, obj: Obj, o?: InMemoryOptions & { subresource?: 'status' | 'approval' }): Promise<Obj>;
  delete(plural: string, name: string, o?: InMemoryOptions & { preconditions?: { uid?: string; resourceVersion?: string } }): Promise<Obj>;
  /** Calls `cb` with every event for `plural` from now on (no initial events). */
  watch(plural: string, cb: (type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: Obj) => void, o?: InMemoryOptions): WatchHandle;
}

export interface FakeKube {
  /** `http(s)://127.0.0.1:<port>` */
  readonly url: string;
  /** PEM of the CA that signed the HTTPS serving certificate (https mode only). */
  readonly caPem: string | undefined;
  readonly api: FakeKubeApi;
  /** Requests served so far (newest last). */
  readonly requests: RequestLogEntry[];
  /** A KubeConfig (loadFromOptions) for `user` (default `admin`) with its bearer token. */
  kubeConfig(user?: string): KubeConfig;
  /** Kubeconfig file text for `user` (default `admin`). */
  kubeconfigYaml(user?: string): string;
  addUser(name: string, user: FakeUser): void;
  addToken(token: string, info: FakeToken): void;
  setClusterTrustBundleVersions(versions: Array<'v1beta1' | 'v1'>): void;
  /** Fails the next `count` requests matching `rule.match`. */
  failNext(count: number, rule: FailRule): void;
  /** Adds latency before every response (0 to turn off). */
  setLatency(ms: number): void;
  /** Ends every open watch stream: cleanly (end) or abruptly (socket destroyed). Returns how many were open. */
  dropWatches(mode?: 'end' | 'destroy'): number;
  /** Sends a BOOKMARK now on every open watch that allows bookmarks. */
  sendBookmarks(): void;
  /** Forgets event history: re-watching from any earlier resourceVersion then gets 410 Expired. */
  compactHistory(): void;
  /** See FakeKubeOptions.expiredWatchResponse. */
  setExpiredWatchResponse(mode: 'event' | 'status'): void;
  /** Number of open watch streams. */
  openWatches(): number;
  /** Current global resourceVersion. */
  resourceVersion(): string;
  close(): Promise<void>;
}

const SYSTEM_ADMIN = 'system:admin';

interface ParsedPath {
  def: ResourceDef;
  group: string;
  version: string;
  namespace?: string;
  name?: string;
  sub: Subresource;
}

interface ActiveWatch {
  res: http.ServerResponse;
  allowBookmarks: boolean;
  def: ResourceDef;
  version: string;
  stop(mode: 'end' | 'destroy'): void;
}

function gvOf(def: ResourceDef, version: string): string {
  return def.group ? `${def.group}/${version}` : version;
}

function present(def: ResourceDef, o: Obj, version: string): Obj {
  return { apiVersion: gvOf(def, version), kind: def.kind, ...o };
}

export async function startFakeKubeApiServer(opts: FakeKubeOptions = {}): Promise<FakeKube> {
  const now = (): Date => (opts.clock ? opts.clock.now() : new Date());
  const apiAudience = opts.apiAudience ?? 'https://kubernetes.default.svc.cluster.local';
  const users = new Map<string, FakeUser>();
  users.set('admin', { superuser: true, token: 'admin-token' });
  users.set(SYSTEM_ADMIN, { superuser: true, token: `${randomUUID()}-system-admin` });
  for (const [n, u] of Object.entries(opts.users ?? {})) users.set(n, u);
  const tokens = new Map<string, FakeToken>(Object.entries(opts.tokens ?? {}));
  let ctbVersions: string[] = [...(opts.clusterTrustBundleVersions ?? ['v1beta1'])];
  const store = new ObjectStore(opts.historyLimit ?? 1000, now);
  const requests: RequestLogEntry[] = [];
  const failRules: Array<{ left: number; rule: FailRule }> = [];
  let latencyMs = 0;
  let expiredWatchResponse: 'event' | 'status' = opts.expiredWatchResponse ?? 'event';
  const watches = new Set<ActiveWatch>();
  const sockets = new Set<Socket>();
  const byPlural = new Map(ALL_RESOURCES.map((d) => [d.plural, d]));

  const servedVersions = (def: ResourceDef): string[] => (def.plural === 'clustertrustbundles' ? ctbVersions : def.versions);
  const userToken = (name: string, u: FakeUser): string => u.token ?? `${name}-token`;

  function userInfo(name: string): UserInfo {
    const u = users.get(name);
    return { username: name, uid: u?.uid ?? `uid-${name}`, groups: u?.groups ?? ['system:authenticated'], ...(u?.extra ? { extra: u.extra } : {}) };
  }

  function can(name: string, a: { verb: string; group: string; resource: string; name?: string; namespace?: string }): boolean {
    const u = users.get(name);
    if (!u) return false;
    if (u.superuser) return true;
    return (u.rules ?? []).some((r) => ruleAllows(r, { user: name, ...a }));
  }

  function admissionCtx(name: string): AdmissionContext {
    return { user: userInfo(name), can: (a) => can(name, a), now: now() };
  }

  function authorize(user: string, verb: string, def: ResourceDef, sub: Subresource, namespace: string | undefined, name: string | undefined): void {
    const resource = sub ? `${def.plural}/${sub}` : def.plural;
    const a = { verb, group: def.group, resource, name, namespace: def.namespaced ? namespace : undefined };
    if (!can(user, a)) throw statusErrors.forbidden(def.plural, def.group, name ?? '', forbiddenReason({ user, ...a }));
  }

  function resolve(plural: string): ResourceDef {
    const def = byPlural.get(plural);
    if (!def) throw new Error(`fake kube-apiserver: unknown resource ${plural}`);
    return def;
  }

  function defaultVersion(def: ResourceDef): string {
    const v = servedVersions(def);
    return v.includes('v1') ? 'v1' : v[v.length - 1]!;
  }

  // ------------------------------------------------------------------ verbs shared by HTTP and the in-memory API

  async function doGet(def: ResourceDef, ns: string | undefined, name: string, user: string, version: string): Promise<Obj> {
    authorize(user, 'get', def, '', ns, name);
    return present(def, store.get(def, ns, name), version);
  }

  function listFilter(def: ResourceDef, ns: string | undefined, labelSelector?: string, fieldSelector?: string) {
    try {
      return { namespace: ns, labels: parseLabelSelector(labelSelector), fields: parseFieldSelector(fieldSelector, Object.keys(def.fieldLabels)) };
    } catch (e) {
      if (e instanceof SelectorError) throw statusErrors.badRequest(e.message);
      throw e;
    }
  }

  /**
   * The name a list or watch is authorised for: like the real request-info parser, a field selector requiring
   * `metadata.name=<n>` (or `==`) makes the request one for <n>, so RBAC resourceNames can allow it.
   */
  function selectorName(fieldSelector: string | null | undefined): string | undefined {
    for (const part of (fieldSelector ?? '').split(',')) {
      const m = /^\s*metadata\.name\s*(==|=)\s*(.*?)\s*$/.exec(part);
      if (m) return m[2];
    }
    return undefined;
  }

  async function doList(def: ResourceDef, ns: string | undefined, user: string, version: string, labelSelector?: string, fieldSelector?: string): Promise<Obj> {
    authorize(user, 'list', def, '', ns, selectorName(fieldSelector));
    const { items, resourceVersion } = store.list(def, listFilter(def, ns, labelSelector, fieldSelector));
    return {
      kind: `${def.kind}List`,
      apiVersion: gvOf(def, version),
      metadata: { resourceVersion },
      items: def.custom ? items.map((o) => present(def, o, version)) : items,
    };
  }

  async function doCreate(def: ResourceDef, ns: string | undefined, body: Obj, user: string, version: string, fv: FieldValidation = 'Strict', warnings: string[] = []): Promise<Obj> {
    authorize(user, 'create', def, '', ns, undefined);
    warnings.push(...decodeBody(def, body, version, fv));
    if (def.plural === 'tokenreviews') return tokenReview(body);
    // NamespaceLifecycle admission: nothing new in a namespace being deleted (namespaces without an object are open).
    if (def.namespaced && ns && byPlural.get('namespaces') && store.tryGet(byPlural.get('namespaces')!, undefined, ns)?.status?.phase === 'Terminating') {
      throw statusErrors.forbidden(def.plural, def.group, String(body?.metadata?.name ?? ''), `unable to create new content in namespace ${ns} because it is being terminated`);
    }
    return present(def, await store.create(def, ns, body, admissionCtx(user), version), version);
  }

  async function doUpdate(def: ResourceDef, ns: string | undefined, name: string, body: Obj, sub: Subresource, user: string, version: string, fv: FieldValidation = 'Strict', warnings: string[] = []) {
    authorize(user, 'update', def, sub, ns, name);
    warnings.push(...decodeBody(def, body, version, fv));
    if (def.allowCreateOnUpdate && sub === '' && !store.tryGet(def, ns, name)) authorize(user, 'create', def, '', ns, name);
    const r = await store.update(def, ns, name, body, sub, admissionCtx(user), version);
    return { object: present(def, r.object, version), created: r.created };
  }

  async function doDelete(def: ResourceDef, ns: string | undefined, name: string, pre: { uid?: string; resourceVersion?: string } | undefined, user: string, version: string): Promise<Obj> {
    authorize(user, 'delete', def, '', ns, name);
    const gone = await store.delete(def, ns, name, pre);
    if (def.custom) return present(def, gone, version);
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Success',
      details: { name, ...(def.group ? { group: def.group } : {}), kind: def.plural, uid: gone.metadata.uid },
    };
  }

  function tokenReview(body: Obj): Obj {
    if (!body || typeof body !== 'object' || !body.spec || typeof body.spec.token !== 'string' || body.spec.token === '') {
      throw statusErrors.invalid('TokenReview', 'authentication.k8s.io', '', [{ reason: 'FieldValueRequired', field: 'spec.token', message: 'Required value' }]);
    }
    const requested: string[] = Array.isArray(body.spec.audiences) && body.spec.audiences.length > 0 ? body.spec.audiences : [apiAudience];
    const out: Obj = {
      kind: 'TokenReview',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { creationTimestamp: null },
      spec: body.spec,
      status: { user: {} },
    };
    let info = tokens.get(body.spec.token);
    if (!info) {
      const u = [...users.entries()].find(([n, x]) => userToken(n, x) === body.spec.token);
      if (u) info = { username: u[0], uid: userInfo(u[0]).uid, groups: userInfo(u[0]).groups };
    }
    if (!info) {
      out.status = { user: {}, error: '[invalid bearer token, token lookup failed]' };
      return out;
    }
    if (info.expiresAt && info.expiresAt.getTime() <= now().getTime()) {
      out.status = { user: {}, error: '[invalid bearer token, service account token has expired]' };
      return out;
    }
    const tokenAud = info.audiences ?? [apiAudience];
    const both = requested.filter((a) => tokenAud.includes(a));
    if (both.length === 0) {
      out.status = {
        user: {},
        error: `[invalid bearer token, token audiences ${JSON.stringify(tokenAud)} is invalid for the target audiences ${JSON.stringify(requested)}]`,
      };
      return out;
    }
    const user: Obj = { username: info.username, groups: info.groups ?? ['system:authenticated'] };
    if (info.uid) user.uid = info.uid;
    if (info.extra) user.extra = info.extra;
    out.status = { authenticated: true, user, audiences: both };
    return out;
  }

  // ------------------------------------------------------------------ in-memory API

  const api: FakeKubeApi = {
    get: (plural, name, o = {}) => {
      const def = resolve(plural);
      return doGet(def, o.namespace, name, o.as ?? SYSTEM_ADMIN, o.version ?? defaultVersion(def));
    },
    list: (plural, o = {}) => {
      const def = resolve(plural);
      return doList(def, o.namespace, o.as ?? SYSTEM_ADMIN, o.version ?? defaultVersion(def), o.labelSelector, o.fieldSelector);
    },
    create: (plural, obj, o = {}) => {
      const def = resolve(plural);
      return doCreate(def, o.namespace ?? obj?.metadata?.namespace, obj, o.as ?? SYSTEM_ADMIN, o.version ?? defaultVersion(def));
    },
    update: async (plural, obj, o = {}) => {
      const def = resolve(plural);
      const r = await doUpdate(def, o.namespace ?? obj?.metadata?.namespace, String(obj?.metadata?.name ?? ''), obj, o.subresource ?? '', o.as ?? SYSTEM_ADMIN, o.version ?? defaultVersion(def));
      return r.object;
    },
    delete: (plural, name, o = {}) => {
      const def = resolve(plural);
      return doDelete(def, o.namespace, name, o.preconditions, o.as ?? SYSTEM_ADMIN, o.version ?? defaultVersion(def));
    },
    watch: (plural, cb, o = {}) => {
      const def = resolve(plural);
      authorize(o.as ?? SYSTEM_ADMIN, 'watch', def, '', o.namespace, undefined);
      const version = o.version ?? defaultVersion(def);
      const unsub = store.subscribe((ev) => {
        if (ev.plural !== def.plural) return;
        if (o.namespace && ev.object.metadata?.namespace !== o.namespace) return;
        // Deliver after the mutation's caller has its answer, as a real watch would.
        queueMicrotask(() => cb(ev.type, present(def, JSON.parse(JSON.stringify(ev.object)), version)));
      });
      return { stop: unsub };
    },
  };

  // ------------------------------------------------------------------ HTTP

  function parsePath(segments: string[]): ParsedPath | undefined {
    let group = '';
    let version: string;
    let rest: string[];
    if (segments[0] === 'api' && segments.length >= 3) {
      version = segments[1]!;
      rest = segments.slice(2);
    } else if (segments[0] === 'apis' && segments.length >= 4) {
      group = segments[1]!;
      version = segments[2]!;
      rest = segments.slice(3);
    } else return undefined;
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const def = byPlural.get(rest[0]!);
    if (!def || def.group !== group || !servedVersions(def).includes(version)) return undefined;
    if (def.namespaced !== (namespace !== undefined) && !(def.namespaced && namespace === undefined && rest.length === 1)) return undefined;
    if (rest.length > 3) return undefined;
    const sub = (rest[2] ?? '') as Subresource;
    if (sub && !def.subresources.includes(sub)) return undefined;
    return { def, group, version, namespace, name: rest[1], sub };
  }

  function discovery(segments: string[]): Obj | undefined {
    const groups = new Map<string, Set<string>>();
    for (const d of ALL_RESOURCES) {
      for (const v of servedVersions(d)) {
        if (!groups.has(d.group)) groups.set(d.group, new Set());
        groups.get(d.group)!.add(v);
      }
    }
    const resourcesFor = (group: string, version: string): Obj[] =>
      ALL_RESOURCES.filter((d) => d.group === group && servedVersions(d).includes(version)).flatMap((d) => [
        {
          name: d.plural,
          singularName: d.kind.toLowerCase(),
          namespaced: d.namespaced,
          kind: d.kind,
          verbs: d.createOnly ? ['create'] : ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
        },
        ...d.subresources.map((s) => ({ name: `${d.plural}/${s}`, singularName: '', namespaced: d.namespaced, kind: d.kind, verbs: ['get', 'patch', 'update'] })),
      ]);
    const preferred = (g: string): string => (groups.get(g)!.has('v1') ? 'v1' : [...groups.get(g)!][0]!);
    const groupDoc = (g: string): Obj => ({
      name: g,
      versions: [...groups.get(g)!].map((v) => ({ groupVersion: `${g}/${v}`, version: v })),
      preferredVersion: { groupVersion: `${g}/${preferred(g)}`, version: preferred(g) },
    });
    const p = segments.join('/');
    if (p === 'api') return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }] };
    if (p === 'api/v1') return { kind: 'APIResourceList', groupVersion: 'v1', resources: resourcesFor('', 'v1') };
    if (p === 'apis') return { kind: 'APIGroupList', apiVersion: 'v1', groups: [...groups.keys()].filter((g) => g !== '').map(groupDoc) };
    if (segments[0] === 'apis' && segments.length === 2 && groups.has(segments[1]!) && segments[1] !== '') {
      return { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(segments[1]!) };
    }
    if (segments[0] === 'apis' && segments.length === 3 && groups.get(segments[1]!)?.has(segments[2]!)) {
      return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: `${segments[1]}/${segments[2]}`, resources: resourcesFor(segments[1]!, segments[2]!) };
    }
    if (p === 'version') return { major: '1', minor: ctbVersions.includes('v1') ? '37' : '33', gitVersion: ctbVersions.includes('v1') ? 'v1.37.0-fake' : 'v1.33.0-fake', platform: 'linux/amd64' };
    return undefined;
  }

  function authenticate(req: http.IncomingMessage): string {
    const h = req.headers.authorization ?? '';
    const m = /^Bearer (.+)$/.exec(h);
    if (!m) throw statusErrors.unauthorized();
    for (const [n, u] of users) if (userToken(n, u) === m[1]) return n;
    throw statusErrors.unauthorized();
  }

  function readBody(req: http.IncomingMessage): Promise<string> {
    return new Promise((resolveBody, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolveBody(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });
  }

  function parseJson(text: string, def: ResourceDef, version: string): Obj {
    try {
      return JSON.parse(text);
    } catch (e) {
      throw statusErrors.badRequest(`${def.kind} in version "${gvOf(def, version)}" cannot be handled as a ${def.kind}: ${(e as Error).message}`);
    }
  }

  function send(res: http.ServerResponse, code: number, body: Obj, warnings: string[] = []): void {
    const text = JSON.stringify(body);
    const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'audit-id': randomUUID() };
    if (warnings.length > 0) headers.warning = warnings.map((w) => `299 - ${JSON.stringify(w)}`).join(", ");
    res.writeHead(code, headers);
    res.end(text);
  }

  function startWatch(req: http.IncomingMessage, res: http.ServerResponse, p: ParsedPath, q: URLSearchParams, user: string): void {
    const def = p.def;
    authorize(user, 'watch', def, '', p.namespace, p.name ?? selectorName(q.get('fieldSelector')));
    let filter = listFilter(def, p.namespace, q.get('labelSelector') ?? undefined, q.get('fieldSelector') ?? undefined);
    if (p.name) filter = { ...filter, fields: [...(filter.fields ?? []), { field: 'metadata.name', op: 'eq', value: p.name }] };
    const rvParam = q.get('resourceVersion');
    if (rvParam !== null && rvParam !== '' && !/^\d+$/.test(rvParam)) {
      throw statusErrors.badRequest(`invalid resource version: strconv.ParseUint: parsing ${JSON.stringify(rvParam)}: invalid syntax`);
    }
    const allowBookmarks = q.get('allowWatchBookmarks') === 'true';
    const fromRv = rvParam === null || rvParam === '' || rvParam === '0' ? undefined : Number(rvParam);
    const history = fromRv === undefined ? undefined : store.eventsSince(def, fromRv);
    const tooOld = `too old resource version: ${rvParam} (${store.currentRv()})`;
    if (history === 'expired' && expiredWatchResponse === 'status') throw statusErrors.gone(tooOld);
    const timeoutS = q.get('timeoutSeconds') !== null ? Number(q.get('timeoutSeconds')) : opts.defaultWatchTimeoutSeconds ?? 1800;
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'cache-control': 'no-cache, private' });
    res.flushHeaders();
    const write = (type: string, object: Obj): void => {
      if (!res.writableEnded) res.write(`${JSON.stringify({ type, object })}\n`);
    };
    const emit = (ev: StoredEvent): void => {
      const now1 = store.matches(def, ev.object, filter);
      const before = ev.previous ? store.matches(def, ev.previous, filter) : false;
      let type: string = ev.type;
      if (ev.type === 'MODIFIED') {
        if (now1 && !before) type = 'ADDED';
        else if (!now1 && before) type = 'DELETED';
        else if (!now1 && !before) return;
      } else if (!now1) return;
      write(type, present(def, ev.object, p.version));
    };
    let unsub: () => void = () => undefined;
    let bookmarkTimer: NodeJS.Timeout | undefined;
    let timeoutTimer: NodeJS.Timeout | undefined;
    const w: ActiveWatch = {
      res,
      allowBookmarks,
      def,
      version: p.version,
      stop(mode) {
        cleanup();
        if (mode === 'destroy') res.socket?.destroy();
        else res.end();
      },
    };
    const cleanup = (): void => {
      unsub();
      if (bookmarkTimer) clearInterval(bookmarkTimer);
      if (timeoutTimer) clearTimeout(timeoutTimer);
      watches.delete(w);
    };
    if (history === undefined) {
      for (const o of store.list(def, filter).items) write('ADDED', present(def, o, p.version));
    } else {
      if (history === 'expired') {
        write('ERROR', {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: tooOld,
          reason: 'Expired',
          code: 410,
        } satisfies StatusBody);
        res.end();
        return;
      }
      for (const ev of history) emit(ev);
    }
    unsub = store.subscribe((ev) => {
      if (ev.plural === def.plural) emit(ev);
    });
    watches.add(w);
    if (allowBookmarks) bookmarkTimer = setInterval(() => bookmark(w), opts.bookmarkIntervalMs ?? 60000);
    timeoutTimer = setTimeout(() => w.stop('end'), Math.max(0, timeoutS) * 1000);
    req.on('close', cleanup);
    res.on('close', cleanup);
  }

  function bookmark(w: ActiveWatch): void {
    if (!w.allowBookmarks || w.res.writableEnded) return;
    const object = { kind: w.def.kind, apiVersion: gvOf(w.def, w.version), metadata: { resourceVersion: String(store.currentRv()) } };
    w.res.write(`${JSON.stringify({ type: 'BOOKMARK', object })}\n`);
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const segments = url.pathname.split('/').filter((s) => s !== '').map((s) => decodeURIComponent(s));
    const query = Object.fromEntries(url.searchParams.entries());
    const method = req.method ?? 'GET';
    const entry: RequestLogEntry = { time: now(), method, path: `/${segments.join('/')}`, query, status: 0, contentType: req.headers['content-type'] };
    requests.push(entry);
    const warnings: string[] = [];
    const reply = (code: number, body: Obj): void => {
      entry.status = code;
      if (warnings.length > 0) entry.warnings = [...warnings];
      send(res, code, body, code < 400 ? warnings : []);
    };
    try {
      if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
      const user = authenticate(req);
      entry.user = user;
      const p = parsePath(segments);
      const isWatch = method === 'GET' && (url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1');
      if (p) {
        entry.resource = p.def.plural;
        entry.subresource = p.sub || undefined;
        entry.namespace = p.namespace;
        entry.name = p.name;
      }
      const verb = !p
        ? method.toLowerCase()
        : method === 'GET'
          ? isWatch
            ? 'watch'
            : p.name
              ? 'get'
              : 'list'
          : ({ POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' } as Record<string, string>)[method] ?? method.toLowerCase();
      entry.verb = verb;
      const fail = failRules.find((f) => f.left > 0 && (!f.rule.match || f.rule.match({ method, path: entry.path, verb, resource: p?.def.plural, watch: isWatch })));
      if (fail) {
        fail.left--;
        const reason = fail.rule.reason ?? (fail.rule.code >= 500 ? 'InternalError' : 'BadRequest');
        throw statusErrors.generic(fail.rule.code, reason, fail.rule.message ?? `injected failure (${fail.rule.code})`);
      }
      if (!p) {
        const doc = method === 'GET' ? discovery(segments) : undefined;
        if (doc) return reply(200, doc);
        return reply(404, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'the server could not find the requested resource', reason: 'NotFound', details: {}, code: 404 });
      }
      const { def, namespace: ns, name, sub, version } = p;
      if (def.createOnly && method !== 'POST') throw statusErrors.methodNotAllowed(`the server does not allow this method on the requested resource`);
      if (method === 'GET') {
        if (isWatch) {
          validateListOptions(url.searchParams, true);
          entry.status = 200;
          return startWatch(req, res, p, url.searchParams, user);
        }
        if (name) {
          if (sub) authorize(user, 'get', def, sub, ns, name);
          return reply(200, sub ? present(def, store.get(def, ns, name), version) : await doGet(def, ns, name, user, version));
        }
        validateListOptions(url.searchParams, false);
        return reply(200, await doList(def, ns, user, version, url.searchParams.get('labelSelector') ?? undefined, url.searchParams.get('fieldSelector') ?? undefined));
      }
      const text = await readBody(req);
      if (text.trim()) {
        try {
          entry.body = JSON.parse(text);
        } catch {
          entry.body = text;
        }
      }
      const ctype = String(req.headers['content-type'] ?? '').split(';')[0]!.trim();
      const fv = parseFieldValidation(url.searchParams.get('fieldValidation'), opts.fieldValidation ?? 'Strict');
      if (method === 'POST') {
        if (name) throw statusErrors.methodNotAllowed('the server does not allow this method on the requested resource');
        if (ctype !== 'application/json') throw statusErrors.unsupportedMediaType(`the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf`);
        const out = await doCreate(def, ns, parseJson(text, def, version), user, version, fv, warnings);
        return reply(201, out);
      }
      if (!name) throw statusErrors.methodNotAllowed('the server does not allow this method on the requested resource');
      if (method === 'PUT') {
        if (ctype !== 'application/json') throw statusErrors.unsupportedMediaType(`the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf`);
        const r = await doUpdate(def, ns, name, parseJson(text, def, version), sub, user, version, fv, warnings);
        return reply(r.created ? 201 : 200, r.object);
      }
      if (method === 'PATCH') {
        const accepted = def.custom ? ['application/json-patch+json', 'application/merge-patch+json'] : ['application/json-patch+json', 'application/merge-patch+json', 'application/strategic-merge-patch+json'];
        if (!accepted.includes(ctype)) {
          throw statusErrors.unsupportedMediaType(`the body of the request was in an unknown format - accepted media types include: ${[...accepted, 'application/apply-patch+yaml'].join(', ')}`);
        }
        authorize(user, 'patch', def, sub, ns, name);
        const patch = parseJson(text, def, version);
        const current = present(def, store.get(def, ns, name), version);
        let patched: Obj;
        try {
          patched = ctype === 'application/json-patch+json' ? applyJsonPatch(current, patch) : applyMergePatch(current, patch);
        } catch (e) {
          if (e instanceof PatchError) throw statusErrors.unprocessable(e.message);
          throw e;
        }
        warnings.push(...decodeBody(def, patched, version, fv));
        // A patch without a resourceVersion is applied to the current object unconditionally.
        if (!patched.metadata) patched.metadata = {};
        if (!patched.metadata.resourceVersion) patched.metadata.resourceVersion = current.metadata.resourceVersion;
        const r = await store.update(def, ns, name, patched, sub, admissionCtx(user), version);
        return reply(200, present(def, r.object, version));
      }
      if (method === 'DELETE') {
        if (sub) throw statusErrors.methodNotAllowed('the server does not allow this method on the requested resource');
        const opts2 = text.trim() ? parseJson(text, def, version) : {};
        return reply(200, await doDelete(def, ns, name, opts2?.preconditions, user, version));
      }
      throw statusErrors.methodNotAllowed('the server does not allow this method on the requested resource');
    } catch (e) {
      if (e instanceof KubeStatusError) return reply(e.status.code, e.status);
      const err = statusErrors.internal((e as Error).message);
      return reply(500, err.status);
    }
  }

  const listener = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    void handle(req, res);
  };
  let server: http.Server | https.Server;
  let caPem: string | undefined;
  if (opts.https) {
    const nb = new Date(Date.now() - 60_000);
    const na = new Date(Date.now() + 24 * 3600_000);
    const ca = await createCa({ commonName: 'fake-kube-apiserver-ca', notBefore: nb, notAfter: na });
    const leaf = await createServerCert(ca, nb, na);
    caPem = ca.certPem;
    server = https.createServer({ cert: leaf.certPem, key: leaf.keyPem }, listener);
  } else {
    server = http.createServer(listener);
  }
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  const url = `${opts.https ? 'https' : 'http'}://127.0.0.1:${port}`;

  function clusterFor(): Obj {
    return opts.https
      ? { name: 'fake', server: url, caData: Buffer.from(caPem!).toString('base64'), skipTLSVerify: false }
      : { name: 'fake', server: url, skipTLSVerify: true };
  }
  function tokenOf(user: string): string {
    const u = users.get(user);
    if (!u) throw new Error(`fake kube-apiserver: unknown user ${user}`);
    return userToken(user, u);
  }

  const fake: FakeKube = {
    url,
    caPem,
    api,
    requests,
    kubeConfig(user = 'admin') {
      const kc = new KubeConfig();
      kc.loadFromOptions({
        clusters: [clusterFor()],
        users: [{ name: user, token: tokenOf(user) }],
        contexts: [{ name: 'fake', cluster: 'fake', user }],
        currentContext: 'fake',
      });
      return kc;
    },
    kubeconfigYaml(user = 'admin') {
      const c = clusterFor();
      const cluster: Obj = { server: url };
      if (c.caData) cluster['certificate-authority-data'] = c.caData;
      else cluster['insecure-skip-tls-verify'] = true;
      return yamlStringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'fake', cluster }],
        users: [{ name: user, user: { token: tokenOf(user) } }],
        contexts: [{ name: 'fake', context: { cluster: 'fake', user } }],
        'current-context': 'fake',
      });
    },
    addUser(name, user) {
      users.set(name, user);
    },
    addToken(token, info) {
      tokens.set(token, info);
    },
    setClusterTrustBundleVersions(versions) {
      ctbVersions = [...versions];
    },
    failNext(count, rule) {
      failRules.push({ left: count, rule });
    },
    setLatency(ms) {
      latencyMs = ms;
    },
    dropWatches(mode = 'end') {
      const n = watches.size;
      for (const w of [...watches]) w.stop(mode);
      return n;
    },
    sendBookmarks() {
      for (const w of watches) bookmark(w);
    },
    compactHistory() {
      store.compact();
    },
    setExpiredWatchResponse(mode) {
      expiredWatchResponse = mode;
    },
    openWatches: () => watches.size,
    resourceVersion: () => String(store.currentRv()),
    async close() {
      for (const w of [...watches]) w.stop('end');
      await new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sockets) s.destroy();
      });
    },
  };
  return fake;
}
