import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { configSchema, type Config } from './schema.js';
import { redactCredentials } from '../util/redact.js';

/**
 * A config that failed validation: one line per problem, each naming the key path. Messages that echo a value (an
 * invalid SPIFFE ID, a bad URL) have credential-shaped strings redacted: a token pasted under the wrong key must not
 * reach stderr and the logs that collect it.
 */
export class ConfigError extends Error {
  readonly problems: string[];

  constructor(
    readonly source: string,
    problems: string[],
  ) {
    const clean = problems.map(redactCredentials);
    super(`${source}: invalid configuration:\n${clean.map((p) => `  - ${p}`).join('\n')}`);
    this.problems = clean;
    this.name = 'ConfigError';
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(top level)';
}

function describe(issue: z.core.$ZodIssue): string[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((k) => `${formatPath([...issue.path, k])}: unknown key`);
  }
  // A union the schema gave its own message ("must be a duration such as ...") says it best.
  if (issue.code === 'invalid_union' && !issue.message.startsWith('Invalid input')) return [`${formatPath(issue.path)}: ${issue.message}`];
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    // Prefer the most specific branch's complaint.
    const inner = issue.errors.flat()[0];
    if (inner) return describe({ ...inner, path: [...issue.path, ...inner.path] } as z.core.$ZodIssue);
  }
  if (issue.code === 'invalid_type') {
    if (issue.input === undefined) return [`${formatPath(issue.path)}: is required`];
    return [`${formatPath(issue.path)}: must be ${article(issue.expected)}, not ${typeName(issue.input)}`];
  }
  return [`${formatPath(issue.path)}: ${issue.message}`];
}

function article(expected: string): string {
  const names: Record<string, string> = { object: 'a mapping', array: 'a list', string: 'a string', number: 'a number', boolean: 'true or false', int: 'an integer' };
  return names[expected] ?? expected;
}

/**
 * What a YAML value is, in the words of the error message ("a list", "a string"). Never the value itself: a config
 * file holds secrets (a Vault token under the wrong key, or a token file given as the config), and stderr ends up in
 * logs.
 */
function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (v instanceof Uint8Array) return 'binary data';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return 'a string';
  // .nan and .inf are YAML numbers that zod refuses as "expected number".
  if (typeof v === 'number') return Number.isFinite(v) ? 'a number' : 'a number that is not finite (.nan or .inf)';
  if (typeof v === 'boolean') return 'true or false';
  return typeof v;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}

/** Validates a parsed object (YAML/JSON) into a frozen Config. Throws ConfigError listing every problem. */
export function parseConfig(raw: unknown, source = 'config'): Config {
  // reportInput: lets describe() tell a missing key from one of the wrong type (issue.input is left out otherwise).
  const r = configSchema.safeParse(raw ?? {}, { reportInput: true });
  if (!r.success) throw new ConfigError(source, r.error.issues.flatMap(describe));
  return deepFreeze(r.data);
}

/** Parses YAML text; YAML syntax errors are reported with line numbers. */
export function parseConfigText(text: string, source: string): Config {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => `YAML: ${e.message.split('\n')[0]}`),
    );
  }
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (e) {
    // e.g. an alias whose anchor is not defined before it
    throw new ConfigError(source, [`YAML: ${(e as Error).message.split('\n')[0]}`]);
  }
  if (value !== null && value !== undefined && Object.getPrototypeOf(value) !== Object.prototype) {
    throw new ConfigError(source, [`(top level): must be a mapping of keys, not ${typeName(value)}`]);
  }
  return parseConfig(value, source);
}

/**
 * Loads the config: `--config FILE`, else $MESHCA_CONFIG, else the embedded defaults (no file needed).
 */
export function loadConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env): { config: Config; source: string } {
  const path = file ?? (env.MESHCA_CONFIG || undefined);
  if (!path) return { config: parseConfig({}, 'defaults'), source: 'defaults' };
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(path, [`cannot read config file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`]);
  }
  return { config: parseConfigText(text, path), source: path };
}
