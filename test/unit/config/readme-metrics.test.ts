import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { REPO_ROOT } from '../../support/cli.js';
import { readmeMetrics } from '../../support/readme.js';

/**
 * README "Metrics" against the metrics the code registers (every meshca_* name in src/ and providers/, with its
 * label names), both ways: a metric added, renamed or relabelled without the table fails here. The integration test
 * test/integration/sds-metrics.test.ts checks the "always" rows against a live `meshca serve`.
 */

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
}

interface Registered {
  readonly file: string;
  readonly labels: string[];
}

/** meshca_* metric names in the sources, each with the label names given where it is constructed. */
function registeredMetrics(): Map<string, Registered> {
  const out = new Map<string, Registered>();
  for (const file of [...walk(join(REPO_ROOT, 'src')), ...walk(join(REPO_ROOT, 'providers'))]) {
    const text = readFileSync(file, 'utf8');
    const names = new Set([...text.matchAll(/['"`](meshca_[a-z0-9_]+)['"`]/g)].map((m) => m[1]!));
    for (const name of names) {
      // The construction is the last mention (`registered(r, 'x', () => new Counter({ name: 'x', labelNames: [...] }))`
      // or `counter(r, 'x', 'help', [...labels])`); it ends before the next metric's name.
      const at = Math.max(text.lastIndexOf(`'${name}'`), text.lastIndexOf(`\`${name}\``));
      const rest = text.slice(at + name.length + 2);
      const next = rest.search(/['"`]meshca_/);
      const window = rest.slice(0, Math.min(next < 0 ? rest.length : next, 600));
      const list = /labelNames:\s*\[([^\]]*)\]/.exec(window) ?? /^\s*,\s*'(?:[^'\\]|\\.)*'\s*,\s*\[([^\]]*)\]\s*\)/.exec(window);
      const labels = list ? [...list[1]!.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]!) : [];
      const prev = out.get(name);
      if (prev && prev.labels.join() !== labels.join()) assert.fail(`${name} has labels [${prev.labels}] in ${prev.file} but [${labels}] in ${relative(REPO_ROOT, file)}`);
      out.set(name, { file: relative(REPO_ROOT, file), labels });
    }
  }
  return out;
}

test('README metrics table lists every metric the code registers, with its labels', () => {
  const documented = new Map(readmeMetrics().map((r) => [r.name, r]));
  const registered = registeredMetrics();
  assert.ok(registered.size >= 20, `found only ${[...registered.keys()].join(', ')}`);
  for (const [name, r] of registered) {
    const d = documented.get(name);
    assert.ok(d, `${name} (${r.file}) is not in README "Metrics"`);
    assert.deepEqual([...d.labels].sort(), [...r.labels].sort(), `README labels of ${name} vs ${r.file}`);
  }
  for (const name of documented.keys()) assert.ok(registered.has(name), `README "Metrics" lists ${name}, which no code registers`);
});

test('README metrics table: the "when" column names a config key or "always"', () => {
  for (const r of readmeMetrics()) {
    assert.match(r.when, /^(always|[a-zA-Z]+(\.[a-zA-Z]+)*(: [a-z-]+)?)$/, `${r.name}: when = "${r.when}"`);
  }
});
