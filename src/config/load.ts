import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { configSchema, type Config } from './schema.js';

/** A config that failed validation: one line per problem, each naming the key path. */
export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`${source}: invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
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
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    // Prefer the most specific branch's complaint.
    const inner = issue.errors.flat()[0];
    if (inner) return describe({ ...inner, path: [...issue.path, ...inner.path] } as z.core.$ZodIssue);
  }
  if (issue.code === 'invalid_type' && issue.input === undefined) return [`${formatPath(issue.path)}: is required`];
  return [`${formatPath(issue.path)}: ${issue.message}`];
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
  const r = configSchema.safeParse(raw ?? {});
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
  const value = doc.toJS() as unknown;
  if (value !== null && value !== undefined && (typeof value !== 'object' || Array.isArray(value))) {
    throw new ConfigError(source, ['(top level): must be a mapping of keys']);
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
