import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { parseConfigText } from '../../../src/config/load.js';
import { REPO_ROOT } from '../../support/cli.js';

/**
 * Every meshca configuration shipped in examples/ must pass meshca's own strict config validation: standalone
 * files named meshca*.yaml, and `meshca.yaml` entries embedded in Kubernetes ConfigMaps.
 */
function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const examples = join(REPO_ROOT, 'examples');
const configs: { where: string; text: string }[] = [];
for (const file of walk(examples).filter((f) => /\.ya?ml$/.test(f))) {
  const rel = relative(REPO_ROOT, file);
  const name = file.split('/').pop()!;
  const text = readFileSync(file, 'utf8');
  if (/^meshca.*\.ya?ml$/.test(name)) configs.push({ where: rel, text });
  for (const doc of parseAllDocuments(text)) {
    const o = doc.toJS() as { kind?: string; data?: Record<string, string> } | null;
    if (o?.kind === 'ConfigMap' && typeof o.data?.['meshca.yaml'] === 'string') configs.push({ where: `${rel} (ConfigMap meshca.yaml)`, text: o.data['meshca.yaml'] });
  }
}

test('the examples contain meshca configurations to check', () => {
  assert.ok(configs.length >= 5, `found ${configs.map((c) => c.where).join(', ')}`);
});

for (const c of configs) {
  test(`example config is valid: ${c.where}`, () => {
    assert.doesNotThrow(() => parseConfigText(c.text, c.where));
  });
}
