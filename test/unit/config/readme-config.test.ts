import { describe, it } from 'node:test';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { isMap, isScalar, isSeq, parse as parseYaml, parseDocument, type Node as YamlNode } from 'yaml';
import type { z } from 'zod';
import { configSchema } from '../../../src/config/schema.js';
import { ConfigError, loadConfig, parseConfig, parseConfigText } from '../../../src/config/load.js';
import { parseDurationSeconds } from '../../../src/util/duration.js';
import { codeSpans, fencedBlocks, readRepoFile, section, tables } from '../../support/readme.js';

/**
 * "Keep the README true": the configuration reference in README.md (its YAML blocks) and the configuration tables of
 * providers/<name>/README.md against the zod schema, both ways. Every documented key exists, every key is
 * documented, documented defaults are the schema's, keys without a default say "required", and every limit the
 * schema enforces on a duration or number is written next to the key (`min X`, `max X`, `lo..hi`, `lo < x < hi`)
 * and is the one enforced.
 */

type Kind = 'default' | 'optional' | 'required';
interface SchemaLeaf {
  readonly kind: Kind;
  /** duration, or the zod def type of the unwrapped leaf: number, string, enum, array, record, boolean, ... */
  readonly type: string;
}

type AnySchema = z.core.$ZodType;
function def(s: AnySchema): { type: string; innerType?: AnySchema; in?: AnySchema; shape?: Record<string, AnySchema>; element?: AnySchema } {
  return (s as unknown as { _zod: { def: never } })._zod.def;
}

/** Leaf paths of a schema (arrays of objects as `a[].b`), each with whether it has a default. */
function schemaLeaves(s: AnySchema, path = '', kind: Kind = 'required', out = new Map<string, SchemaLeaf>()): Map<string, SchemaLeaf> {
  let k: Kind | undefined;
  for (;;) {
    const d = def(s);
    if (d.type === 'default' || d.type === 'prefault') k ??= 'default';
    else if (d.type === 'optional') k ??= 'optional';
    else if (d.type !== 'pipe' && d.type !== 'nullable' && d.type !== 'readonly') break;
    s = d.type === 'pipe' ? d.in! : d.innerType!;
  }
  const d = def(s);
  if (d.type === 'object') {
    for (const [key, v] of Object.entries(d.shape!)) schemaLeaves(v, path ? `${path}.${key}` : key, 'required', out);
  } else if (d.type === 'array' && def(unwrapAll(d.element!)).type === 'object') {
    schemaLeaves(d.element!, `${path}[]`, 'required', out);
  } else if (d.type === 'union') {
    // union(string, number).transform(): a duration; union(literal, number): a number with a keyword (workers: auto).
    const options = ((d as { options?: AnySchema[] }).options ?? []).map((o) => def(unwrapAll(o)).type);
    out.set(path, { kind: k ?? kind, type: options.includes('string') ? 'duration' : options.includes('number') ? 'number' : 'union' });
  } else {
    out.set(path, { kind: k ?? kind, type: d.type });
  }
  return out;
}

function unwrapAll(s: AnySchema): AnySchema {
  for (;;) {
    const d = def(s);
    if (d.type === 'pipe') s = d.in!;
    else if (d.innerType && d.type !== 'array') s = d.innerType;
    else return s;
  }
}

interface DocLeaf {
  readonly path: string;
  /** The documented value (YAML), undefined for a key given only as an item shape. */
  readonly value: unknown;
  /** The text documenting the key: its YAML line with comment, or its table row. */
  readonly text: string;
  readonly where: string;
}

/** Leaves of a documented YAML block; commented-out `# key: value` lines count as documented keys. */
function yamlLeaves(block: string, where: string, schemaLeafPaths: ReadonlySet<string>): DocLeaf[] {
  const src = block.replace(/^(\s*)# ([A-Za-z][A-Za-z0-9]*:)/gm, '$1$2');
  const doc = parseDocument(src);
  assert.equal(doc.errors.length, 0, `${where}: ${doc.errors.map((e) => e.message).join('; ')}`);
  const lineAt = (offset: number): string => {
    const start = src.lastIndexOf('\n', offset - 1) + 1;
    const end = src.indexOf('\n', offset);
    return src.slice(start, end < 0 ? undefined : end);
  };
  const out: DocLeaf[] = [];
  const visit = (node: YamlNode | null, path: string, text: string): void => {
    // A map under a schema leaf is that leaf's value (labels, namespaceSelector).
    if (isMap(node) && node.items.length > 0 && !schemaLeafPaths.has(path)) {
      for (const pair of node.items) {
        const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
        const line = lineAt((pair.key as YamlNode).range![0]);
        visit(pair.value as YamlNode | null, path ? `${path}.${key}` : key, line);
      }
      return;
    }
    if (isSeq(node) && node.items.length > 0 && isMap(node.items[0])) {
      for (const item of node.items) visit(item as YamlNode, `${path}[]`, text);
      return;
    }
    out.push({ path, value: node ? (node as { toJSON(): unknown }).toJSON() : null, text, where });
    // `files: []   # [{path: ..., format: ...}]`: the comment gives the item shape.
    const shape = /#\s*(\[\{[^\]]*\}\])/.exec(text);
    if (isSeq(node) && node.items.length === 0 && shape) {
      for (const k of Object.keys((parseYaml(shape[1]!) as Record<string, unknown>[])[0]!)) out.push({ path: `${path}[].${k}`, value: undefined, text, where });
    }
  };
  visit(doc.contents as YamlNode, '', '');
  return out;
}

function problems(raw: unknown): string[] {
  try {
    parseConfig(raw);
    return [];
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
}

function clone<T>(o: T): T {
  return JSON.parse(JSON.stringify(o)) as T;
}

/** Sets `path` (`a.b`, `a[].b` = first item) in a config object, creating objects on the way. */
function setPath(o: Record<string, unknown>, path: string, value: unknown): Record<string, unknown> {
  const out = clone(o);
  let cur: Record<string, unknown> = out;
  const parts = path.replace(/\[\]/g, '.0').split('.');
  parts.forEach((p, i) => {
    if (i === parts.length - 1) cur[p] = value;
    else cur = (cur[p] ??= /^\d+$/.test(parts[i + 1]!) ? [{}] : {}) as Record<string, unknown>;
  });
  return out;
}

function getPath(o: unknown, path: string): unknown {
  return path
    .replace(/\[\]/g, '.0')
    .split('.')
    .reduce<unknown>((c, p) => (c as Record<string, unknown> | undefined)?.[p], o);
}

function sameValue(documented: unknown, actual: unknown): boolean {
  if (typeof actual === 'number' && typeof documented === 'string') return parseDurationSeconds(documented) === actual;
  return JSON.stringify(documented) === JSON.stringify(actual);
}

const LIMIT = /min|max|too small|too big/i;

/** Problems about `path` itself being out of range (not cross-field rules such as "longer than workload.maxTtl"). */
function rangeProblems(base: Record<string, unknown>, path: string, value: unknown): string[] {
  const at = path.replace(/\[\]/g, '[0]') + ': ';
  return problems(setPath(base, path, value)).filter((p) => p.startsWith(at) && LIMIT.test(p) && !/ than [a-z]+\.[a-zA-Z]/.test(p.slice(at.length)));
}

function num(v: string, duration: boolean): number {
  return duration ? parseDurationSeconds(v) : Number(v);
}

/**
 * Checks the documented limits of one duration/number leaf against the schema: extreme values the schema refuses
 * must be documented, and documented bounds must be exactly the enforced ones.
 */
function checkLimits(base: Record<string, unknown>, leaf: DocLeaf, type: string): void {
  const duration = type === 'duration';
  const rejects = (v: number) => rangeProblems(base, leaf.path, duration ? `${v}s` : v).length > 0;
  const text = leaf.text;
  const range = /\((-?[\d.]+[a-z]*)\.\.([\d.]+[a-z]*)[);]/.exec(text);
  const exclusive = /\((-?[\d.]+) < \w+ < ([\d.]+)\)/.exec(text);
  const min = range?.[1] ?? /\bmin (\d[\d.]*[a-z]*)/.exec(text)?.[1];
  const max = range?.[2] ?? /\bmax (\d[\d.]*[a-z]*)/.exec(text)?.[1];
  const step = duration ? 1 : Number.isInteger(num(min ?? max ?? '1', duration)) && type === 'number' && !exclusive ? 1 : 0.001;
  if (exclusive) {
    const [lo, hi] = [Number(exclusive[1]), Number(exclusive[2])];
    assert.ok(rejects(lo) && rejects(hi) && !rejects(lo + 0.01) && !rejects(hi - 0.01), `${leaf.where}: ${leaf.path}: documented ${exclusive[0]} is not what the schema enforces`);
    return;
  }
  if (min !== undefined) {
    const m = num(min, duration);
    assert.ok(!rejects(m), `${leaf.where}: ${leaf.path}: documented minimum ${min} is refused`);
    assert.ok(rejects(m - step), `${leaf.where}: ${leaf.path}: documented minimum ${min}, but less is accepted`);
  } else {
    assert.ok(!rejects(duration ? 0 : -1), `${leaf.where}: ${leaf.path}: the schema has a minimum the docs do not give ("${text.trim()}")`);
  }
  if (max !== undefined) {
    const m = num(max, duration);
    assert.ok(!rejects(m), `${leaf.where}: ${leaf.path}: documented maximum ${max} is refused`);
    assert.ok(rejects(m + step), `${leaf.where}: ${leaf.path}: documented maximum ${max}, but more is accepted`);
  } else {
    assert.ok(!rejects(1e9), `${leaf.where}: ${leaf.path}: the schema has a maximum the docs do not give ("${text.trim()}")`);
  }
}

/**
 * The documented keys of one config section against its schema leaves. `base` is a valid config that the checks
 * modify one key at a time; `setByBase` are the keys base had to set (their documented values are examples).
 */
function checkSection(opts: {
  docs: DocLeaf[];
  leaves: Map<string, SchemaLeaf>;
  base: Record<string, unknown>;
  setByBase: string[];
  /** Schema paths documented elsewhere (provider sections of the main README). */
  elsewhere?: (path: string) => boolean;
  /** Whether a key without a default must say "required" in its text, or a table "Required" column. */
  required: (leaf: DocLeaf) => boolean;
}): void {
  const { docs, leaves, base } = opts;
  const defaults = parseConfig(base);
  const documented = new Set(docs.map((d) => d.path));
  for (const d of docs) {
    const leaf = leaves.get(d.path);
    const isSection = [...leaves.keys()].some((p) => p.startsWith(`${d.path}.`) || p.startsWith(`${d.path}[].`));
    assert.ok(leaf || isSection, `${d.where}: documents ${d.path}, which the schema does not have`);
    if (!leaf) continue;
    if (leaf.kind === 'required') {
      assert.ok(docs.some((o) => o.path === d.path && opts.required(o)), `${d.where}: ${d.path} has no default; the docs must say it is required ("${d.text.trim()}")`);
    }
    if (leaf.kind === 'default' && d.value !== undefined && !d.path.includes('[]') && !opts.setByBase.includes(d.path)) {
      const actual = getPath(defaults, d.path);
      assert.ok(sameValue(d.value, actual), `${d.where}: ${d.path} is documented as ${JSON.stringify(d.value)}, the default is ${JSON.stringify(actual)}`);
    }
    if (leaf.type === 'duration' || leaf.type === 'number') checkLimits(base, d, leaf.type);
  }
  for (const path of leaves.keys()) {
    if (opts.elsewhere?.(path)) continue;
    assert.ok(documented.has(path), `${path} is in the schema but not documented`);
  }
}

const README = readRepoFile('README.md');
const TOP = new Set(Object.keys(def(configSchema).shape!));

describe('README.md configuration reference', () => {
  const blocks = fencedBlocks(README, 'yaml').filter((b) => {
    const o = parseYaml(b.replace(/^(\s*)# ([A-Za-z][A-Za-z0-9]*:)/gm, '$1$2')) as Record<string, unknown> | null;
    return o && typeof o === 'object' && Object.keys(o).every((k) => TOP.has(k));
  });
  const leaves = schemaLeaves(configSchema);
  const docs = blocks.flatMap((b, i) => yamlLeaves(b, `README.md yaml block ${i + 1}`, new Set(leaves.keys())));
  const PROVIDER = /^authority\.(vault|certManager|clusterTrustBundle)\./;

  it('ok/finds the configuration blocks', () => {
    assert.ok(blocks.length >= 4, `${blocks.length} config blocks`);
    assert.ok(docs.some((d) => d.path === 'trustDomain'));
  });

  it('ok/every configuration block is a valid config as written', () => {
    for (const [i, b] of blocks.entries()) assert.doesNotThrow(() => parseConfigText(b, `README.md yaml block ${i + 1}`));
  });

  it('ok/the reference block, loaded verbatim as a config file, gives exactly the defaults', () => {
    // What a new user does: copy the block into meshca.yaml. Optional sections and per-backend blocks are commented
    // out (their keys stay readable), so what is left is the embedded defaults, no more and no less.
    const reference = fencedBlocks(section(README, 'Configuration reference'), 'yaml')[0]!;
    assert.equal(reference, blocks[0], 'the first configuration block is the reference');
    const dir = mkdtempSync(join(tmpdir(), 'meshca-readme-'));
    try {
      const file = join(dir, 'meshca.yaml');
      writeFileSync(file, reference);
      const loaded = loadConfig(file, {}).config;
      assert.deepEqual(loaded, parseConfig({}));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ok/every documented key exists, every schema key is documented, defaults and limits match', () => {
    const base = {
      server: { bundleEndpoint: {} },
      state: { kubernetes: { secret: { namespace: 'meshca' } } },
      bundlePublishers: { kubernetes: { clusterTrustBundle: { signerName: 'example.com/meshca' }, configMaps: { namespaces: ['default'] } } },
      authorization: { controllers: [{ id: 'spiffe://cluster.local/c', allow: ['spiffe://cluster.local/*'] }] },
    };
    checkSection({
      docs,
      leaves,
      base,
      setByBase: ['state.kubernetes.secret.namespace', 'bundlePublishers.kubernetes.clusterTrustBundle.signerName', 'bundlePublishers.kubernetes.configMaps.namespaces', 'authorization.controllers'],
      elsewhere: (p) => PROVIDER.test(p),
      required: (d) => /\brequired\b/.test(d.text),
    });
  });
});

const PROVIDERS = [
  { readme: 'providers/internal/README.md', section: 'internal', type: 'internal', minimal: {}, setByBase: [] as string[] },
  {
    readme: 'providers/vault/README.md',
    section: 'vault',
    type: 'vault',
    minimal: { address: 'https://vault.example:8200', auth: { token: 't' } },
    setByBase: ['address', 'auth.token'],
  },
  {
    readme: 'providers/cert-manager/README.md',
    section: 'certManager',
    type: 'cert-manager',
    minimal: { namespace: 'meshca', issuerRef: { name: 'meshca-ca' } },
    setByBase: ['namespace', 'issuerRef.name'],
  },
  {
    readme: 'providers/cluster-trust-bundle/README.md',
    section: 'clusterTrustBundle',
    type: 'cluster-trust-bundle',
    minimal: { signerName: 'example.com/meshca' },
    setByBase: ['signerName'],
  },
];

for (const p of PROVIDERS) {
  describe(`${p.readme} configuration table`, () => {
    const prefix = `authority.${p.section}`;
    const table = tables(section(readRepoFile(p.readme), 'Configuration')).find((t) => /^key$/i.test(t.header[0]!));
    it('ok/has a Key | Type | Required | Default | Meaning table', () => {
      assert.ok(table, 'no configuration table');
      assert.deepEqual(table.header.map((h) => h.toLowerCase()), ['key', 'type', 'required', 'default', 'meaning']);
    });
    if (!table) return;
    const docs: DocLeaf[] = table.rows.flatMap((row) => {
      const spans = codeSpans(row[3]!);
      const literal = spans.length === 1 && row[3] === `\`${spans[0]}\`` ? (parseYaml(spans[0]!) as unknown) : undefined;
      return codeSpans(row[0]!).map((k) => ({ path: `${prefix}.${k}`, value: literal ?? undefined, text: `${row[2]} | ${row[4]}`, where: p.readme }));
    });
    it('ok/keys, required, defaults and limits match the schema', () => {
      const all = schemaLeaves(configSchema);
      const leaves = new Map([...all].filter(([k]) => k.startsWith(`${prefix}.`)));
      const required = new Set(table.rows.filter((r) => r[2]!.toLowerCase() === 'yes').flatMap((r) => codeSpans(r[0]!).map((k) => `${prefix}.${k}`)));
      for (const [path, leaf] of leaves) {
        if (leaf.kind !== 'required') assert.ok(!required.has(path), `${p.readme}: ${path} is documented as required but has a default`);
      }
      checkSection({
        docs,
        leaves,
        base: { authority: { type: p.type, [p.section]: p.minimal } },
        setByBase: p.setByBase.map((k) => `${prefix}.${k}`),
        required: (d) => required.has(d.path),
      });
    });
  });
}
