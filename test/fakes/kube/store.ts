/**
 * The fake API server's storage: objects keyed by resource/namespace/name, one global resourceVersion counter
 * (like etcd's revision, sent as a decimal string), a bounded event history for watches with a resourceVersion,
 * and the create/update/delete flow of the generic registry (name generation, preconditions, strategy hooks,
 * validation, admission, no-op updates that keep the resourceVersion). Mutations are serialised so that
 * read-check-write is atomic even though validation is asynchronous (CSR signature checks).
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import { randomUUID, randomInt } from 'node:crypto';
import type { AdmissionContext, Obj, ResourceDef, Subresource } from './resources.js';
import { fieldErr, statusErrors, type StatusCause } from './status.js';
import { matchFields, matchLabels, type FieldRequirement, type LabelRequirement } from './selectors.js';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoredEvent {
  type: EventType;
  rv: number;
  plural: string;
  object: Obj;
  /** The object before a MODIFIED event, to turn selector transitions into ADDED/DELETED like the watch cache. */
  previous?: Obj;
}

export interface Filter {
  namespace?: string;
  labels?: LabelRequirement[];
  fields?: FieldRequirement[];
}

const GENERATE_CHARS = 'bcdfghjklmnpqrstvwxz2456789';

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v));
}

function timestamp(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** apimachinery's IsQualifiedName: an optional DNS-1123 subdomain prefix (at most 253) and "/", then a name part (at most 63). */
function qualifiedNameProblem(k: string): string | undefined {
  const parts = k.split('/');
  if (parts.length > 2) return "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/'";
  const name = parts[parts.length - 1]!;
  if (parts.length === 2) {
    const prefix = parts[0]!;
    if (prefix.length === 0) return 'prefix part must be non-empty';
    if (prefix.length > 253) return 'prefix part must be no more than 253 characters';
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(prefix)) return "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
  }
  if (name.length === 0) return 'name part must be non-empty';
  if (name.length > 63) return 'name part must be no more than 63 characters';
  if (!/^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(name)) return "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
  return undefined;
}

export class ObjectStore {
  private rv = 0;
  private readonly objects = new Map<string, Obj>();
  private history: StoredEvent[] = [];
  /** Events with rv <= floorRv are gone; a watch from an older resourceVersion gets 410 Expired. */
  private floorRv = 0;
  private readonly subscribers = new Set<(ev: StoredEvent) => void>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly historyLimit: number,
    private readonly now: () => Date,
  ) {}

  currentRv(): number {
    return this.rv;
  }

  /** Drops all history so any resourceVersion older than now gets 410 Expired (fault knob). */
  compact(): void {
    this.history = [];
    this.floorRv = this.rv;
  }

  private key(def: ResourceDef, ns: string | undefined, name: string): string {
    return `${def.plural}/${def.namespaced ? ns : ''}/${name}`;
  }

  /** Runs mutations one at a time. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  subscribe(fn: (ev: StoredEvent) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  private emit(ev: StoredEvent): void {
    this.history.push(ev);
    while (this.history.length > this.historyLimit) this.floorRv = this.history.shift()!.rv;
    for (const s of [...this.subscribers]) s(ev);
  }

  matches(def: ResourceDef, o: Obj, f: Filter): boolean {
    if (def.namespaced && f.namespace && o.metadata?.namespace !== f.namespace) return false;
    if (f.labels && !matchLabels(f.labels, o.metadata?.labels)) return false;
    if (f.fields && !matchFields(f.fields, (field) => def.fieldLabels[field]?.(o))) return false;
    return true;
  }

  get(def: ResourceDef, ns: string | undefined, name: string): Obj {
    const o = this.objects.get(this.key(def, ns, name));
    if (!o) throw statusErrors.notFound(def.plural, def.group, name);
    return clone(o);
  }

  tryGet(def: ResourceDef, ns: string | undefined, name: string): Obj | undefined {
    const o = this.objects.get(this.key(def, ns, name));
    return o ? clone(o) : undefined;
  }

  list(def: ResourceDef, f: Filter): { items: Obj[]; resourceVersion: string } {
    const items = [...this.objects.entries()]
      .filter(([k]) => k.startsWith(`${def.plural}/`))
      .map(([, o]) => o)
      .filter((o) => this.matches(def, o, f))
      .sort((a, b) => `${a.metadata.namespace ?? ''}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace ?? ''}/${b.metadata.name}`))
      .map(clone);
    return { items, resourceVersion: String(this.rv) };
  }

  /** Events for `def` after `rv`, or 'expired' when history no longer reaches back that far. */
  eventsSince(def: ResourceDef, rv: number): StoredEvent[] | 'expired' {
    if (rv < this.floorRv) return 'expired';
    return this.history.filter((e) => e.rv > rv && e.plural === def.plural);
  }

  private invalid(def: ResourceDef, name: string, causes: StatusCause[]): never {
    throw statusErrors.invalid(def.kind, def.group, name, causes);
  }

  private validateMeta(def: ResourceDef, o: Obj): StatusCause[] {
    const errs: StatusCause[] = [];
    const name = o.metadata.name as string;
    const bad = def.validateName(name);
    if (bad) errs.push(fieldErr.invalid('metadata.name', name, bad));
    for (const [k, v] of Object.entries(o.metadata.labels ?? {})) {
      const bad = qualifiedNameProblem(k);
      if (bad) errs.push(fieldErr.invalid('metadata.labels', k, bad));
      if (typeof v !== 'string' || v.length > 63 || !/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(v)) {
        errs.push(fieldErr.invalid('metadata.labels', v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
      }
    }
    let annotationBytes = 0;
    for (const [k, v] of Object.entries(o.metadata.annotations ?? {})) {
      // ValidateAnnotations: "The rule is QualifiedName except that case doesn't matter".
      const bad = qualifiedNameProblem(k.toLowerCase());
      if (bad) errs.push(fieldErr.invalid('metadata.annotations', k, bad));
      if (typeof v !== 'string') errs.push(fieldErr.invalid(`metadata.annotations[${k}]`, v, 'must be a string'));
      else annotationBytes += k.length + v.length;
    }
    if (annotationBytes > 256 * 1024) errs.push(fieldErr.invalid('metadata.annotations', '', 'may not be more than 262144 bytes'));
    return errs;
  }

  private checkBody(def: ResourceDef, o: Obj, version: string): void {
    if (o === null || typeof o !== 'object' || Array.isArray(o)) throw statusErrors.badRequest(`the body of the request was not a JSON object`);
    const gv = def.group ? `${def.group}/${version}` : version;
    if (o.kind !== undefined && o.kind !== def.kind) throw statusErrors.badRequest(`${o.kind} in version "${gv}" cannot be handled as a ${def.kind}: no kind "${o.kind}" is registered for version "${gv}"`);
    if (o.apiVersion !== undefined && o.apiVersion !== gv && !def.versions.some((v) => o.apiVersion === (def.group ? `${def.group}/${v}` : v))) {
      throw statusErrors.badRequest(`the API version in the data (${o.apiVersion}) does not match the expected API version (${gv})`);
    }
    o.metadata = o.metadata ?? {};
    if (typeof o.metadata !== 'object') throw statusErrors.badRequest(`${def.kind} in version "${gv}" cannot be handled as a ${def.kind}: metadata must be an object`);
  }

  create(def: ResourceDef, ns: string | undefined, body: Obj, ctx: AdmissionContext, version: string): Promise<Obj> {
    return this.serial(async () => {
      const o = clone(body);
      this.checkBody(def, o, version);
      const m = o.metadata;
      if (def.namespaced) {
        if (m.namespace && m.namespace !== ns) throw statusErrors.badRequest('the namespace of the provided object does not match the namespace sent on the request');
        m.namespace = ns;
      } else delete m.namespace;
      if (!m.name && m.generateName) {
        let suffix = '';
        for (let i = 0; i < 5; i++) suffix += GENERATE_CHARS[randomInt(GENERATE_CHARS.length)];
        m.name = `${m.generateName}${suffix}`;
      }
      if (!m.name) this.invalid(def, '', [fieldErr.required('metadata.name', 'name or generateName is required')]);
      if (m.resourceVersion) throw statusErrors.internal('resourceVersion should not be set on objects to be created');
      def.decode?.(o, version);
      def.prepareCreate?.(o, ctx);
      const errs = [...this.validateMeta(def, o), ...((await def.validate?.(o, undefined, '', ctx)) ?? [])];
      if (errs.length > 0) this.invalid(def, m.name, errs);
      def.admit?.(o, undefined, '', ctx);
      const key = this.key(def, ns, m.name);
      if (this.objects.has(key)) throw statusErrors.alreadyExists(def.plural, def.group, m.name);
      delete m.selfLink;
      m.uid = randomUUID();
      m.creationTimestamp = timestamp(this.now());
      if (def.custom) m.generation = 1;
      m.resourceVersion = String(++this.rv);
      delete o.apiVersion;
      delete o.kind;
      this.objects.set(key, o);
      this.emit({ type: 'ADDED', rv: this.rv, plural: def.plural, object: clone(o) });
      return clone(o);
    });
  }

  /** PUT semantics. Returns the stored object and whether it was created (201) rather than updated (200). */
  update(
    def: ResourceDef,
    ns: string | undefined,
    name: string,
    body: Obj,
    sub: Subresource,
    ctx: AdmissionContext,
    version: string,
  ): Promise<{ object: Obj; created: boolean }> {
    return this.serial(async () => {
      const o = clone(body);
      this.checkBody(def, o, version);
      if (o.metadata.name && o.metadata.name !== name) throw statusErrors.badRequest(`the name of the object (${o.metadata.name}) does not match the name on the URL (${name})`);
      if (def.namespaced && o.metadata.namespace && o.metadata.namespace !== ns) {
        throw statusErrors.badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      const key = this.key(def, ns, name);
      const old = this.objects.get(key);
      if (!old) {
        if (!def.allowCreateOnUpdate || sub !== '') throw statusErrors.notFound(def.plural, def.group, name);
        if (o.metadata.resourceVersion) throw statusErrors.notFound(def.plural, def.group, name);
        o.metadata.name = name;
        return { object: await this.createUnlocked(def, ns, o, ctx, version), created: true };
      }
      const rv = o.metadata.resourceVersion;
      if (rv) {
        if (rv !== old.metadata.resourceVersion) throw statusErrors.conflict(def.plural, def.group, name);
      } else if (!def.allowUnconditionalUpdate) {
        this.invalid(def, name, [{ reason: 'FieldValueInvalid', field: 'metadata.resourceVersion', message: 'Invalid value: 0x0: must be specified for an update' }]);
      }
      if (o.metadata.uid && o.metadata.uid !== old.metadata.uid) {
        this.invalid(def, name, [fieldErr.immutable('metadata.uid', o.metadata.uid)]);
      }
      def.decode?.(o, version);
      o.metadata.name = name;
      if (def.namespaced) o.metadata.namespace = ns;
      else delete o.metadata.namespace;
      o.metadata.uid = old.metadata.uid;
      o.metadata.creationTimestamp = old.metadata.creationTimestamp;
      o.metadata.resourceVersion = old.metadata.resourceVersion;
      if (old.metadata.generation !== undefined) o.metadata.generation = old.metadata.generation;
      delete o.metadata.generateName;
      if (old.metadata.generateName) o.metadata.generateName = old.metadata.generateName;
      delete o.apiVersion;
      delete o.kind;
      def.prepareUpdate?.(clone(old), o, sub, ctx);
      const errs = [...this.validateMeta(def, o), ...((await def.validate?.(o, clone(old), sub, ctx)) ?? [])];
      if (errs.length > 0) this.invalid(def, name, errs);
      def.admit?.(o, clone(old), sub, ctx);
      if (JSON.stringify(o) === JSON.stringify(old)) return { object: clone(old), created: false };
      if (def.custom && JSON.stringify(o.spec) !== JSON.stringify(old.spec)) o.metadata.generation = (old.metadata.generation ?? 0) + 1;
      o.metadata.resourceVersion = String(++this.rv);
      this.objects.set(key, o);
      this.emit({ type: 'MODIFIED', rv: this.rv, plural: def.plural, object: clone(o), previous: clone(old) });
      return { object: clone(o), created: false };
    });
  }

  /** Create without taking the lock (used by create-on-update, which already holds it). */
  private async createUnlocked(def: ResourceDef, ns: string | undefined, o: Obj, ctx: AdmissionContext, version: string): Promise<Obj> {
    const m = o.metadata;
    if (def.namespaced) m.namespace = ns;
    def.decode?.(o, version);
    def.prepareCreate?.(o, ctx);
    const errs = [...this.validateMeta(def, o), ...((await def.validate?.(o, undefined, '', ctx)) ?? [])];
    if (errs.length > 0) this.invalid(def, m.name, errs);
    def.admit?.(o, undefined, '', ctx);
    m.uid = randomUUID();
    m.creationTimestamp = timestamp(this.now());
    m.resourceVersion = String(++this.rv);
    delete o.apiVersion;
    delete o.kind;
    this.objects.set(this.key(def, ns, m.name), o);
    this.emit({ type: 'ADDED', rv: this.rv, plural: def.plural, object: clone(o) });
    return clone(o);
  }

  delete(def: ResourceDef, ns: string | undefined, name: string, pre: { uid?: string; resourceVersion?: string } | undefined): Promise<Obj> {
    return this.serial(async () => {
      const key = this.key(def, ns, name);
      const old = this.objects.get(key);
      if (!old) throw statusErrors.notFound(def.plural, def.group, name);
      if (pre?.uid && pre.uid !== old.metadata.uid) {
        throw statusErrors.conflict(def.plural, def.group, name, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`);
      }
      if (pre?.resourceVersion && pre.resourceVersion !== old.metadata.resourceVersion) {
        throw statusErrors.conflict(def.plural, def.group, name, `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${old.metadata.resourceVersion}`);
      }
      this.objects.delete(key);
      const gone = clone(old);
      gone.metadata.resourceVersion = String(++this.rv);
      this.emit({ type: 'DELETED', rv: this.rv, plural: def.plural, object: clone(gone) });
      return gone;
    });
  }
}
