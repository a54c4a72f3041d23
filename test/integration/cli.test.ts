import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFile, stat, writeFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { MESHCA_BIN, REPO_ROOT, runCli, startServe, tempDir, writeTestConfig } from '../support/cli.js';
import { readRepoFile, section, tables } from '../support/readme.js';
import { checkOwnBundleDoc } from '../support/spiffe-bundle-check.js';
import { apiClients } from '../support/api-client.js';

function splitPem(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
}

/** openssl verify -x509_strict: an independent verifier of the issued chain. */
async function opensslVerify(dir: string, certPem: string, bundlePem: string): Promise<{ ok: boolean; out: string }> {
  const [leaf, ...inter] = splitPem(certPem);
  await writeFile(join(dir, 'leaf.pem'), leaf!);
  await writeFile(join(dir, 'inter.pem'), inter.join(''));
  await writeFile(join(dir, 'roots.pem'), bundlePem);
  const args = ['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', join(dir, 'roots.pem')];
  if (inter.length) args.push('-untrusted', join(dir, 'inter.pem'));
  args.push(join(dir, 'leaf.pem'));
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: r.stdout + r.stderr };
}

test('issue writes a chain, a 0600 key and a bundle that openssl verifies strictly', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    const cfg = await writeTestConfig(t.dir);
    const out = join(t.dir, 'out');
    const r = await runCli(['issue', '--config', cfg, '--spiffe-id', 'spiffe://test.example/ns/default/sa/web', '--dns', 'web.default.svc', '--ttl', '2h', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const certPem = await readFile(join(out, 'cert.pem'), 'utf8');
    const bundlePem = await readFile(join(out, 'bundle.pem'), 'utf8');
    const keyStat = await stat(join(out, 'key.pem'));
    assert.equal(keyStat.mode & 0o777, 0o600);
    assert.match(await readFile(join(out, 'key.pem'), 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    const chain = splitPem(certPem);
    assert.equal(chain.length, 2, 'leaf + meshca signing CA');
    const leaf = new X509Certificate(chain[0]!);
    assert.equal(leaf.subjectAltName, 'URI:spiffe://test.example/ns/default/sa/web, DNS:web.default.svc');
    const life = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
    assert.ok(life >= 7200 && life <= 7200 + 31, `lifetime ${life}s = 2h + backdate`);
    const v = await opensslVerify(t.dir, certPem, bundlePem);
    assert.ok(v.ok, v.out);
    // dataDir is private, key files are 0600
    assert.equal((await stat(join(t.dir, 'data'))).mode & 0o777, 0o700);
    assert.equal((await stat(join(t.dir, 'data', 'internal-root.json'))).mode & 0o777, 0o600);
    assert.equal((await stat(join(t.dir, 'data', 'authority.json'))).mode & 0o777, 0o600);
  } finally {
    await t.cleanup();
  }
});

test('issue warns on stderr when the leaf is shorter than asked for, saying how long it got and when the signing CA expires', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    // A 1m signing CA cannot hold a 10m leaf: meshca cuts the leaf at the CA's notAfter.
    const cfg = await writeTestConfig(t.dir, 'authority: { internal: { signingCaTtl: 1m } }\n');
    const out = join(t.dir, 'out');
    const r = await runCli(['issue', '--config', cfg, '--spiffe-id', 'spiffe://test.example/short', '--ttl', '10m', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const [leaf, ca] = splitPem(await readFile(join(out, 'cert.pem'), 'utf8')).map((p) => new X509Certificate(p));
    assert.equal(Date.parse(leaf!.validTo), Date.parse(ca!.validTo), 'the leaf was cut at the signing CA\'s notAfter');
    const m = /^meshca: warning: the leaf lives (\S+), not the 10m asked for: its signing CA expires at (\S+) \(/m.exec(r.stderr);
    assert.ok(m, r.stderr);
    assert.match(m[1]!, /^\d+s$/, 'under a minute, in seconds');
    assert.equal(Date.parse(m[2]!), Date.parse(ca!.validTo));
    assert.match(r.stderr, /authority\.internal\.signingCaTtl/, 'names the key to change');
    assert.doesNotMatch(r.stdout, /warning/, 'stdout keeps only the result');

    const fits = await runCli(['issue', '--config', cfg, '--spiffe-id', 'spiffe://test.example/short', '--ttl', '10s', '--out', out]);
    assert.equal(fits.code, 0, fits.stderr);
    assert.doesNotMatch(fits.stderr, /warning/, 'a leaf issued in full is not warned about');
  } finally {
    await t.cleanup();
  }
});

test('issue refuses bad input with exit code 2 and a message naming the problem', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    const cfg = await writeTestConfig(t.dir);
    const out = join(t.dir, 'out');
    const wrongTd = await runCli(['issue', '--config', cfg, '--spiffe-id', 'spiffe://other.example/x', '--out', out]);
    assert.equal(wrongTd.code, 2);
    assert.match(wrongTd.stderr, /invalid SPIFFE ID "spiffe:\/\/other.example\/x": trust domain "other.example" is not this CA's trust domain/);
    const badPath = await runCli(['issue', '--config', cfg, '--spiffe-id', 'spiffe://test.example/a//b', '--out', out]);
    assert.match(badPath.stderr, /path segments must not be empty/);
    const tooLong = await runCli(['issue', '--config', cfg, '--spiffe-id', 'spiffe://test.example/a', '--ttl', '48h', '--out', out]);
    assert.equal(tooLong.code, 2);
    assert.match(tooLong.stderr, /requested ttl 48h is longer than workload.maxTtl 24h/);
    const tooShort = await runCli(['issue', '--config', cfg, '--spiffe-id', 'spiffe://test.example/a', '--ttl', '5s', '--out', out]);
    assert.equal(tooShort.code, 2);
    assert.match(tooShort.stderr, /--ttl 5s is shorter than the minimum 10s/);
    const reserved = await runCli(['issue', '--config', cfg, '--spiffe-id', 'spiffe://test.example/meshca', '--out', out]);
    assert.equal(reserved.code, 2);
    assert.match(reserved.stderr, /spiffe:\/\/test.example\/meshca is reserved for meshca itself/);
    const noId = await runCli(['issue', '--config', cfg, '--out', out]);
    assert.equal(noId.code, 2);
    assert.match(noId.stderr, /--spiffe-id is required/);
  } finally {
    await t.cleanup();
  }
});

test('a bad config file gives one line per problem and exit code 2', { timeout: 30_000 }, async () => {
  const t = await tempDir();
  try {
    const path = join(t.dir, 'bad.yaml');
    await writeFile(path, 'trustDomain: UPPER\nworkload:\n  ttl: forever\n  colour: blue\n');
    const r = await runCli(['bundle', '--config', path]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /- trustDomain: invalid trust domain "UPPER"/);
    assert.match(r.stderr, /- workload.ttl: "forever" is not a duration/);
    assert.match(r.stderr, /- workload.colour: unknown key/);
    const viaEnv = await runCli(['bundle'], { env: { MESHCA_CONFIG: path } });
    assert.equal(viaEnv.code, 2);
    const missing = await runCli(['bundle', '--config', join(t.dir, 'nope.yaml')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /nope.yaml: invalid configuration:\n  - cannot read config file: ENOENT/);
  } finally {
    await t.cleanup();
  }
});

test('bundle prints only the bundle, as PEM or SPIFFE JWKS', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    const cfg = await writeTestConfig(t.dir);
    const pem = await runCli(['bundle', '--config', cfg]);
    assert.equal(pem.code, 0, pem.stderr);
    const certs = splitPem(pem.stdout);
    assert.equal(certs.length, 1);
    assert.equal(pem.stdout, certs.join(''));
    const root = new X509Certificate(certs[0]!);
    assert.ok(root.ca);
    const jwks = await runCli(['bundle', '--config', cfg, '--format', 'jwks']);
    const doc = JSON.parse(jwks.stdout) as { keys: { kty: string; use: string; x5c: string[]; kid?: string }[]; spiffe_sequence: number };
    assert.equal(doc.keys.length, 1);
    assert.equal(doc.keys[0]!.use, 'x509-svid');
    assert.equal(doc.keys[0]!.kty, 'EC');
    assert.equal(doc.keys[0]!.kid, undefined);
    assert.ok(Buffer.from(doc.keys[0]!.x5c[0]!, 'base64').equals(root.raw));
    assert.ok(doc.spiffe_sequence >= 1);
    // The exact SPIFFE bundle format, read by an independent checker (members, key parameters, x5c encoding).
    checkOwnBundleDoc(jwks.stdout, { rootsDer: [root.raw], refreshHintSeconds: 300 }, 'meshca bundle --format jwks');
    const bad = await runCli(['bundle', '--config', cfg, '--format', 'xml']);
    assert.equal(bad.code, 2);
  } finally {
    await t.cleanup();
  }
});

test('bundle --format jwks carries the configured server.bundleEndpoint.refreshHint', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    const cfg = join(t.dir, 'meshca.yaml');
    await writeFile(
      cfg,
      `trustDomain: test.example\ndataDir: ${join(t.dir, 'data')}\nserver:\n  bundleEndpoint: { address: "127.0.0.1:0", refreshHint: 90s }\n`,
    );
    const jwks = await runCli(['bundle', '--config', cfg, '--format', 'jwks']);
    assert.equal(jwks.code, 0, jwks.stderr);
    assert.equal((JSON.parse(jwks.stdout) as { spiffe_refresh_hint: number }).spiffe_refresh_hint, 90);
  } finally {
    await t.cleanup();
  }
});

test('serve with a config problem found only at start-up still exits 2 naming the key (port range, served IDs)', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    const cfg = join(t.dir, 'meshca.yaml');
    await writeFile(
      cfg,
      `trustDomain: test.example\ndataDir: ${join(t.dir, 'data')}\nserver:\n  grpc: { address: "127.0.0.1:0" }\n  http: { address: "127.0.0.1:99999" }\n` +
        `  bundleEndpoint: { address: "127.0.0.1:0", spiffeId: "spiffe://other.example/be" }\n`,
    );
    const r = await runCli(['serve', '--config', cfg], { timeoutMs: 20_000 });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /- server\.http\.address: port must be between 0 and 65535/);
    assert.match(r.stderr, /- server\.bundleEndpoint\.spiffeId: invalid SPIFFE ID "spiffe:\/\/other.example\/be": trust domain "other.example" is not this CA's trust domain/);
  } finally {
    await t.cleanup();
  }
});

/**
 * README "Federation and bundle distribution" separates three cases that "keeps the last good copy" used to blur:
 * a bad static bundleFile at start stops start (static files are not kept in the state store, so there is no earlier
 * copy), a bad update while running keeps the last good copy, and endpoint bundles survive a restart with the
 * endpoint down. The last two are exercised in test/integration/federation.test.ts; the first is here, as a user
 * meets it.
 */
test('a malformed or unreadable static federation bundleFile stops `meshca serve` at start with exit 1 naming the file, even after a good copy was served, as README says', { timeout: 90_000 }, async () => {
  const fed = section(readRepoFile('README.md'), 'Federation and bundle distribution').replace(/\s+/g, ' ');
  assert.match(fed, /at start, an unreadable or malformed static `bundleFile`[^.]*stops start[^.]*exits with code 1/);
  assert.match(fed, /while running, a bad update[^.]*the last good copy stays in use/);
  assert.match(fed, /endpoint's bundle[^.]*restart while that endpoint is down still trusts/);
  assert.doesNotMatch(fed, /keeps the last good copy across failures and restarts/, 'a static file has no copy that survives a restart');

  const t = await tempDir();
  try {
    const peer = join(t.dir, 'peer');
    await mkdir(peer);
    await writeFile(join(peer, 'meshca.yaml'), `trustDomain: partner.example\ndataDir: ${join(peer, 'data')}\nsigning: { workers: 0 }\n`);
    const peerBundle = await runCli(['bundle', '--config', join(peer, 'meshca.yaml')]);
    assert.equal(peerBundle.code, 0, peerBundle.stderr);
    const file = join(t.dir, 'partner.pem');
    await writeFile(file, peerBundle.stdout);
    const cfg = await writeTestConfig(t.dir, `federation:\n  trustDomains:\n    - trustDomain: partner.example\n      bundleFile: ${file}\n`);

    const s = await startServe(cfg);
    try {
      const metrics = await (await fetch(`http://127.0.0.1:${s.httpPort}/metrics`)).text();
      assert.match(metrics, /^meshca_federation_bundle_sequence\{trust_domain="partner.example"\} [1-9]/m, 'the good file is in use');
      assert.equal((await s.stop('SIGTERM')).code, 0, s.logs());
    } finally {
      await s.stop('SIGKILL');
    }

    await writeFile(file, '{"keys": 1}');
    const malformed = await runCli(['serve', '--config', cfg], { timeoutMs: 20_000 });
    assert.equal(malformed.code, 1, malformed.stderr);
    assert.match(malformed.stderr, new RegExp(`bundleFile ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} of partner\\.example: .*"keys" must be an array`));

    await rm(file);
    const missing = await runCli(['serve', '--config', cfg], { timeoutMs: 20_000 });
    assert.equal(missing.code, 1, missing.stderr);
    assert.match(missing.stderr, /bundleFile of partner\.example: cannot read /);
  } finally {
    await t.cleanup();
  }
});

test('inspect describes a chain and flags what breaks the SVID rules', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    const cfg = await writeTestConfig(t.dir);
    const out = join(t.dir, 'out');
    assert.equal((await runCli(['issue', '--config', cfg, '--spiffe-id', 'spiffe://test.example/svc', '--out', out])).code, 0);
    const r = await runCli(['inspect', join(out, 'cert.pem')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /spiffe:\/\/test\.example\/svc/);
    assert.match(r.stdout, /expires in/);
    // A CA certificate presented as a leaf breaks the SVID rules: inspect says so.
    const bundle = await runCli(['inspect', join(out, 'bundle.pem')]);
    assert.match(bundle.stdout, /CA/);
    const missing = await runCli(['inspect', join(t.dir, 'missing.pem')]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /cannot read/);
    const notPem = join(t.dir, 'not-a-cert.pem');
    await writeFile(notPem, 'hello\n');
    const garbage = await runCli(['inspect', notPem]);
    assert.equal(garbage.code, 2);
    assert.match(garbage.stderr, /inspect: .*not-a-cert\.pem: no CERTIFICATE blocks found/);
  } finally {
    await t.cleanup();
  }
});

/** Runs `meshca ARGS` with its stdout piped to a reader that closes at once (`meshca ... | true`). */
function runWithClosedStdout(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MESHCA_BIN, ...args], { cwd: REPO_ROOT, env: { ...process.env, MESHCA_CONFIG: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stderr });
    });
  });
}

test('a reader that closes stdout early (meshca ... | true) ends the command quietly, without an EPIPE stack', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    const cfg = await writeTestConfig(t.dir);
    for (const args of [['--help'], ['bundle', '--config', cfg, '--format', 'jwks'], ['bundle', '--config', cfg], ['version']]) {
      const r = await runWithClosedStdout(args);
      assert.equal(r.stderr, '', `meshca ${args.join(' ')}: nothing on stderr`);
      assert.equal(r.code, 0, `meshca ${args.join(' ')}: exit code`);
    }
    // The state lock was released as usual: the next command does not wait for it.
    const next = await runCli(['bundle', '--config', cfg], { timeoutMs: 5_000 });
    assert.equal(next.code, 0, next.stderr);
  } finally {
    await t.cleanup();
  }
});

test('serve becomes ready, keeps its root across restart and kill -9, and drains on SIGTERM', { timeout: 120_000 }, async () => {
  const t = await tempDir();
  try {
    const cfg = await writeTestConfig(t.dir);
    const s1 = await startServe(cfg);
    const health = await fetch(`http://127.0.0.1:${s1.httpPort}/healthz`);
    assert.equal(health.status, 200);
    const ready = await fetch(`http://127.0.0.1:${s1.httpPort}/readyz`);
    assert.equal(ready.status, 200);
    const metrics = await (await fetch(`http://127.0.0.1:${s1.httpPort}/metrics`)).text();
    assert.match(metrics, /meshca_trust_bundle_sequence/);
    const root1 = (await runCli(['bundle', '--config', cfg])).stdout;
    // issue works while serve runs and chains to the same bundle
    const out = join(t.dir, 'out');
    const issued = await runCli(['issue', '--config', cfg, '--spiffe-id', 'spiffe://test.example/while-serving', '--out', out]);
    assert.equal(issued.code, 0, issued.stderr);
    assert.equal(await readFile(join(out, 'bundle.pem'), 'utf8'), root1);
    const graceful = await s1.stop('SIGTERM');
    assert.equal(graceful.code, 0, s1.logs());
    assert.ok(graceful.ms < 20_000);

    const s2 = await startServe(cfg);
    assert.equal((await runCli(['bundle', '--config', cfg])).stdout, root1, 'restart keeps the root');
    const killed = await s2.stop('SIGKILL');
    assert.equal(killed.signal, 'SIGKILL');
    // A lock left behind by a killed process must not block the next start.
    await mkdir(join(t.dir, 'data', 'lock'), { recursive: true });
    await writeFile(join(t.dir, 'data', 'lock', 'owner'), `999999@${(await import('node:os')).hostname()}`);
    const s3 = await startServe(cfg);
    assert.equal((await runCli(['bundle', '--config', cfg])).stdout, root1, 'kill -9 keeps the root');
    await s3.stop();
  } finally {
    await t.cleanup();
  }
});

test('serve warns at start when workload.ttl is longer than 1/6 of the signing CA lifetime, naming both keys and the shortest leaf', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    const short = await writeTestConfig(t.dir, 'workload: { ttl: 1h }\nauthority: { internal: { signingCaTtl: 2h } }\n');
    const s = await startServe(short);
    await s.stop();
    const warn = s
      .logs()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: number; msg: string; shortestLeaf?: string })
      .find((j) => j.level === 40 && /workload\.ttl/.test(j.msg));
    assert.ok(warn, s.logs());
    assert.match(warn.msg, /workload\.ttl 1h .*authority\.internal\.signingCaTtl 2h/);
    assert.match(warn.msg, /as short as 20m/);
    assert.equal(warn.shortestLeaf, '20m');

    const t2 = await tempDir();
    try {
      const s2 = await startServe(await writeTestConfig(t2.dir));
      await s2.stop();
      assert.doesNotMatch(s2.logs(), /signingCaTtl/, 'the defaults (1h of 48h) are covered: no warning');
    } finally {
      await t2.cleanup();
    }
  } finally {
    await t.cleanup();
  }
});

test('serve creates the missing directories of bundle.files paths, and a parent that is a file is an error naming the key', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    const path = join(t.dir, 'out', 'ssl', 'bundle.pem');
    const s = await startServe(await writeTestConfig(t.dir, `bundle:\n  files: [{ path: "${path}" }]\n`));
    await s.stop();
    assert.equal(await readFile(path, 'utf8'), (await runCli(['bundle', '--config', join(t.dir, 'meshca.yaml')])).stdout);

    await writeFile(join(t.dir, 'a-file'), 'x');
    const bad = await runCli(['serve', '--config', await writeTestConfig(t.dir, `bundle:\n  files: [{ path: "${join(t.dir, 'a-file', 'bundle.pem')}" }]\n`)], { timeoutMs: 20_000 });
    assert.equal(bad.code, 2, 'a path that cannot be written is bad configuration');
    assert.match(bad.stderr, /^meshca: bundle\.files\[0\]\.path: cannot write /m);
  } finally {
    await t.cleanup();
  }
});

test('corrupt or partial CA state is a clear error, never a silent new root', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    const cfg = await writeTestConfig(t.dir);
    assert.equal((await runCli(['bundle', '--config', cfg])).code, 0);
    const authority = join(t.dir, 'data', 'authority.json');
    const good = await readFile(authority, 'utf8');
    await writeFile(authority, good.slice(0, good.length / 2));
    const r = await runCli(['bundle', '--config', cfg]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /authority\.json is corrupt or unreadable/);
    assert.match(r.stderr, /refusing to start rather than create a new root/);
    await writeFile(authority, good);
    await writeFile(join(t.dir, 'data', 'internal-root.json'), '{"format":"meshca.internal-root/v1","roots":[]}');
    const r2 = await runCli(['bundle', '--config', cfg]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /internal-root\.json is corrupt/);
    const { rm } = await import('node:fs/promises');
    await rm(join(t.dir, 'data', 'internal-root.json'));
    const r3 = await runCli(['bundle', '--config', cfg]);
    assert.equal(r3.code, 1);
    assert.match(r3.stderr, /partial/);
  } finally {
    await t.cleanup();
  }
});

/** `meshca <command>` and its `--flags`, from a README Commands cell or a --help usage entry. */
function commandsOf(text: string, split: RegExp): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const chunk of text.split(split)) {
    const m = /^meshca ([a-z]+)\b/.exec(chunk.trim());
    if (!m) continue;
    const flags = out.get(m[1]!) ?? new Set<string>();
    for (const f of chunk.matchAll(/--[a-z][a-z-]*/g)) flags.add(f[0]);
    out.set(m[1]!, flags);
  }
  return out;
}

test('README Commands table and `meshca --help` list the same commands and flags, and every flag is accepted', { timeout: 60_000 }, async () => {
  const table = tables(section(readRepoFile('README.md'), 'Commands'))[0];
  assert.ok(table, 'README has a Commands table');
  const documented = commandsOf(table.rows.map((r) => r[0]!.replace(/`/g, '')).join('\n'), /\n/);
  const help = await runCli(['--help']);
  assert.equal(help.code, 0);
  // Usage entries start with "  meshca <cmd>"; continuation lines belong to the entry above.
  const usage = commandsOf(help.stdout.slice(help.stdout.indexOf('Usage:')).split('\n\n')[0]!, /\n(?=  meshca )/);
  assert.deepEqual([...documented.keys()].sort(), [...usage.keys()].sort(), 'commands: README vs --help');
  for (const [cmd, flags] of usage) {
    assert.deepEqual([...documented.get(cmd)!].sort(), [...flags].sort(), `flags of ${cmd}: README vs --help`);
    for (const flag of flags) {
      // Flags are parsed strictly before --help is honoured: an unknown flag exits 2.
      const withValue = await runCli([cmd, `${flag}=x`, '--help']);
      const bare = withValue.code === 0 ? withValue : await runCli([cmd, flag, '--help']);
      assert.equal(bare.code, 0, `meshca ${cmd} ${flag}: ${bare.stderr}`);
    }
  }
  const version = await runCli(['version']);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^meshca \d+\.\d+\.\d+\n$/);
});

test('every command\'s --help (and -h) prints the usage, and does nothing else', { timeout: 60_000 }, async () => {
  const help = await runCli(['--help']);
  assert.match(help.stdout, /^meshca — .*\n\nUsage:\n/);
  const commands = [...commandsOf(help.stdout.slice(help.stdout.indexOf('Usage:')).split('\n\n')[0]!, /\n(?=  meshca )/).keys()];
  assert.ok(commands.includes('version') && commands.includes('serve'), commands.join(', '));
  for (const cmd of commands) {
    for (const flag of ['--help', '-h']) {
      const r = await runCli([cmd, flag]);
      assert.equal(r.code, 0, `meshca ${cmd} ${flag}: ${r.stderr}`);
      assert.equal(r.stdout, help.stdout, `meshca ${cmd} ${flag} prints the usage`);
      assert.equal(r.stderr, '', `meshca ${cmd} ${flag}`);
    }
  }
  const stray = await runCli(['version', '--bogus']);
  assert.equal(stray.code, 2, 'version takes no flags but --help');
});

test('on SIGTERM, open SDS and WatchBundle streams end with UNAVAILABLE (not a dropped connection), /readyz says 503, and serve exits well before the drain timeout', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  const { bootstrapSdsClient } = await import('../support/cli.js');
  try {
    const cfg = await writeTestConfig(t.dir);
    const s = await startServe(cfg);
    const client = await bootstrapSdsClient(cfg, join(t.dir, 'boot'), s.grpcPort!, 'spiffe://test.example/ns/default/sa/web', { id: 'web-1', cluster: 'web' });
    try {
      const sotw = client.streamSecrets();
      sotw.request(['default']);
      sotw.ack(await sotw.next(10_000));
      const delta = client.deltaSecrets();
      delta.send({ resource_names_subscribe: ['ROOTCA'] });
      await delta.next(10_000);
      const boot = join(t.dir, 'boot');
      const api = apiClients(s.grpcPort!, {
        rootsPem: await readFile(join(boot, 'bundle.pem'), 'utf8'),
        certPem: await readFile(join(boot, 'cert.pem'), 'utf8'),
        keyPem: await readFile(join(boot, 'key.pem'), 'utf8'),
      });
      const watch = api.bundle.WatchBundle({});
      const watchEnded = new Promise<{ code: number; details: string }>((resolve) => watch.on('status', resolve));
      watch.on('error', () => undefined);
      const first = await Promise.race([new Promise((resolve) => watch.once('data', () => resolve('data'))), watchEnded]);
      assert.equal(first, 'data', `WatchBundle sends the bundle first: ${JSON.stringify(first)}`);
      const stopped = s.stop('SIGTERM');
      const [a, b, w] = await Promise.all([sotw.status(10_000), delta.status(10_000), watchEnded]);
      api.close();
      assert.equal(w.code, 14, `WatchBundle: UNAVAILABLE, got ${w.code} ${w.details}`);
      assert.match(w.details, /meshca is shutting down; reconnect/);
      // Draining: /readyz no longer says ready (503 while ops HTTP is still up, then the port closes).
      // (A connection accepted just as ops HTTP closes may never be answered: bound the wait; a ref'd timer keeps
      // the test's event loop alive meanwhile.)
      const keepAlive = setTimeout(() => undefined, 3000);
      const ready = await fetch(`http://127.0.0.1:${s.httpPort}/readyz`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status, () => 'closed');
      clearTimeout(keepAlive);
      assert.notEqual(ready, 200);
      for (const st of [a, b]) {
        assert.equal(st.code, 14, `UNAVAILABLE, got ${st.code} ${st.details}`);
        assert.match(st.details, /meshca is shutting down; reconnect/);
      }
      const exit = await stopped;
      assert.equal(exit.code, 0, s.logs());
      assert.ok(exit.ms < 4000, `exited in ${exit.ms} ms: no wait for streams that were already ended`);
    } finally {
      client.client.close();
    }
  } finally {
    await t.cleanup();
  }
});
