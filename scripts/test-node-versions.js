#!/usr/bin/env node
// Runs the compiled test suite under other Node.js majors (default: 22 and 24), next to the one that built it.
// Usage: npm run test:node-versions -- [22 24] [--filter <substring>...]
//
// Node binaries come from the npm registry (the node-<platform>-<arch> packages that the `node` package installs),
// so this works wherever `npm install` works. They are unpacked once into .cache/node/<version>/ (git-ignored).
// Each run uses the same dist/ that `npm test` builds; the tests spawn process.execPath, so the CLI and servers
// they start run on that version too.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const filterAt = args.indexOf('--filter');
const filters = filterAt >= 0 ? args.splice(filterAt).slice(1) : [];
const majors = args.length > 0 ? args : ['22', '24'];
for (const m of majors) {
  if (!/^\d+$/.test(m)) {
    console.error(`test-node-versions: "${m}" is not a Node.js major version (expected e.g. 22 or 24)`);
    process.exit(2);
  }
}

const platform = process.platform === 'win32' ? 'win' : process.platform;
const pkg = `node-${platform}-${process.arch}`;
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

/** The newest published version of `pkg` in major `m`, unpacked; returns the path of its node binary. */
function nodeBinary(m) {
  const versions = JSON.parse(execFileSync(npm, ['view', `${pkg}@${m}`, 'version', '--json'], { encoding: 'utf8' }));
  const version = Array.isArray(versions) ? versions[versions.length - 1] : versions;
  if (!version) throw new Error(`no ${pkg} release for Node.js ${m} on the npm registry`);
  const dir = join(root, '.cache', 'node', version);
  const bin = join(dir, 'bin', process.platform === 'win32' ? 'node.exe' : 'node');
  if (!existsSync(bin)) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    console.error(`test-node-versions: fetching ${pkg}@${version} from the npm registry`);
    execFileSync(npm, ['pack', `${pkg}@${version}`, '--silent', '--pack-destination', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
    const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    if (!tgz) throw new Error(`npm pack ${pkg}@${version} produced no tarball`);
    execFileSync('tar', ['xzf', join(dir, tgz), '-C', dir, '--strip-components=1']);
    rmSync(join(dir, tgz));
  }
  return bin;
}

if (!existsSync(join(root, 'dist', 'test'))) {
  console.error('test-node-versions: dist/test is missing; run `npm test` or `npm run build` first');
  process.exit(2);
}
const results = [];
for (const m of majors) {
  const bin = nodeBinary(m);
  const version = execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim();
  console.error(`test-node-versions: running the tests on ${version}`);
  const env = { ...process.env, PATH: `${join(bin, '..')}${process.platform === 'win32' ? ';' : ':'}${process.env.PATH ?? ''}` };
  const r = spawnSync(bin, [join(root, 'scripts', 'run-tests.js'), ...filters], { stdio: 'inherit', env });
  results.push({ version, ok: r.status === 0 });
}
for (const r of results) console.error(`test-node-versions: ${r.version}: ${r.ok ? 'pass' : 'FAIL'}`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
