import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { parseConfigText } from '../../../src/config/load.js';
import { signingCaLifetime } from '../../../providers/index.js';
import { formatDuration } from '../../../src/util/duration.js';
import { parseCsr } from '../../../src/x509/csr.js';
import { checkCsr } from '../../../src/servers/controller/csr-checks.js';
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

  // An example must not trip meshca_signing_ca_cannot_cover_ttl: the active signing CA has between 1/6 and 2/3 of
  // its life left, so workload.ttl is always issued in full only when it is at most signingCaTtl/6. Leaf mode
  // (no signing CA of meshca's own) has no such bound.
  test(`example config's workload.ttl fits in 1/6 of its signing CA's lifetime: ${c.where}`, () => {
    const cfg = parseConfigText(c.text, c.where);
    const ca = signingCaLifetime(cfg.authority);
    if (!ca.held) return;
    const covered = ca.seconds / 6;
    assert.ok(
      cfg.workload.ttl <= covered,
      `${c.where}: workload.ttl ${formatDuration(cfg.workload.ttl)} is longer than ${ca.key} ${formatDuration(ca.seconds)} / 6 = ${formatDuration(covered)}`,
    );
  });
}

/**
 * The steps of examples/<name>/README.md as a user runs them: every file a command names exists (relative to the
 * example's directory or the repository root, where the README says to run it), and the pieces agree with each
 * other (ports, names, trust domain).
 */
const readmes = walk(examples).filter((f) => f.endsWith('README.md'));

for (const readme of readmes) {
  test(`files named by the commands in ${relative(REPO_ROOT, readme)} exist`, () => {
    const text = readFileSync(readme, 'utf8');
    const code = [...text.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!).join('\n') + '\n' + [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]!).join('\n');
    const named = [...code.matchAll(/(?:--config|-c|-f)\s+([^\s`]+\.(?:ya?ml|json|hcl|env|sh))/g)].map((m) => m[1]!);
    for (const f of named) {
      assert.ok(existsSync(join(dirname(readme), f)) || existsSync(join(REPO_ROOT, f)), `${relative(REPO_ROOT, readme)} names ${f}, which does not exist`);
    }
  });
}

test('examples/envoy: meshca.yaml serves what envoy.yaml connects to, and leaves the workload\'s port free', () => {
  const cfg = parseConfigText(readFileSync(join(examples, 'envoy', 'meshca.yaml'), 'utf8'), 'examples/envoy/meshca.yaml');
  const envoy = readFileSync(join(examples, 'envoy', 'envoy.yaml'), 'utf8');
  const ports = (cluster: string) => {
    const c = (parse(envoy) as { static_resources: { clusters: { name: string; load_assignment: unknown }[] } }).static_resources.clusters.find((x) => x.name === cluster);
    return [...JSON.stringify(c?.load_assignment).matchAll(/"port_value":(\d+)/g)].map((m) => Number(m[1]));
  };
  const port = (a: string) => Number(a.slice(a.lastIndexOf(':') + 1));
  assert.deepEqual(ports('meshca_sds'), [port(cfg.server.grpc.address)], 'cluster meshca_sds points at server.grpc.address');
  assert.ok(!ports('local_app').includes(port(cfg.server.http.address)), 'meshca\'s ops HTTP port is not the workload\'s port');
  assert.ok(cfg.server.grpc.dnsNames.includes(/sni:\s*(\S+)/.exec(envoy)![1]!), 'envoy.yaml\'s sni is one of meshca\'s dnsNames');
  assert.ok(envoy.includes(`spiffe://${cfg.trustDomain}/meshca`), 'envoy.yaml pins meshca\'s SPIFFE ID in its trust domain');
});

test('examples/istio: agent.env reaches the meshca.yaml listener under a name its certificate carries', () => {
  const cfg = parseConfigText(readFileSync(join(examples, 'istio', 'meshca.yaml'), 'utf8'), 'examples/istio/meshca.yaml');
  const env = Object.fromEntries(
    readFileSync(join(examples, 'istio', 'agent.env'), 'utf8')
      .split('\n')
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  const [host, port] = env.CA_ADDR!.split(':');
  assert.equal(port, cfg.server.grpc.address.split(':').pop(), 'CA_ADDR port = server.grpc.address port');
  assert.ok(cfg.server.grpc.dnsNames.includes(host!), `CA_ADDR host ${host} is in server.grpc.dnsNames`);
  assert.equal(env.TRUST_DOMAIN, cfg.trustDomain);
});

test('examples/istio: the README\'s openssl command makes workload.csr, a P-256 CSR for the bootstrap identity that the Istio CA accepts', async () => {
  const readme = readFileSync(join(examples, 'istio', 'README.md'), 'utf8');
  const sh = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!).join('\n');
  // The command with its backslash-continued lines, run as written.
  const cmd = /^openssl req (?:[^\n]*\\\n)*[^\n]*$/m.exec(sh)?.[0];
  assert.ok(cmd && cmd.includes('workload.csr'), 'the README shows the openssl command that makes workload.csr');
  const bootstrapId = /--spiffe-id (\S+)/.exec(sh)![1]!;
  const cfg = parseConfigText(readFileSync(join(examples, 'istio', 'meshca.yaml'), 'utf8'), 'examples/istio/meshca.yaml');
  const dir = mkdtempSync(join(tmpdir(), 'meshca-istio-csr-'));
  try {
    const r = spawnSync('bash', ['-euo', 'pipefail', '-c', cmd], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, `${cmd}\n${r.stderr}`);
    const pem = readFileSync(join(dir, 'workload.csr'), 'utf8');
    assert.equal(parseCsr(pem).keyType, 'ec-p256');
    const checked = await checkCsr(pem, cfg.trustDomain);
    assert.equal(checked.spiffeId, bootstrapId, 'the CSR asks for the identity of the bootstrap credential grpcurl presents');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('examples/kubernetes: every backend publishes the ConfigMap the Envoy sidecar mounts, and its steps apply the publisher RBAC', () => {
  const dir = join(examples, 'kubernetes');
  const sidecar = parseAllDocuments(readFileSync(join(dir, 'envoy-sidecar.yaml'), 'utf8')).map((d) => d.toJS() as { kind?: string; metadata?: { namespace?: string }; spec?: unknown });
  const pod = sidecar.find((o) => o.kind === 'Deployment' || o.kind === 'Pod')!;
  const mounted = [...JSON.stringify(pod.spec).matchAll(/"configMap":\{"name":"([^"]+)"\}/g)].map((m) => m[1]!).filter((n) => n.startsWith('meshca'));
  assert.ok(mounted.length > 0, 'the sidecar mounts meshca\'s bundle ConfigMap');
  const readme = readFileSync(join(dir, 'README.md'), 'utf8');
  for (const backend of ['cert-manager', 'cluster-trust-bundle']) {
    const doc = parseAllDocuments(readFileSync(join(dir, backend, 'config.yaml'), 'utf8')).map((d) => d.toJS() as { data?: Record<string, string> })[0]!;
    const cfg = parseConfigText(doc.data!['meshca.yaml']!, `${backend}/config.yaml`);
    const cm = cfg.bundlePublishers.kubernetes?.configMaps;
    for (const name of mounted) {
      assert.equal(cm?.name, name, `${backend}/config.yaml publishes ConfigMap ${name}`);
      assert.ok(cm.namespaces.includes(pod.metadata?.namespace ?? 'default'), `${backend}/config.yaml publishes it in the sidecar's namespace`);
    }
    const steps = /## (\S+) backend\n[\s\S]*?```sh\n([\s\S]*?)```/g;
    const block = [...readme.matchAll(steps)].find((m) => m[1] === backend)?.[2];
    assert.ok(block, `README has steps for the ${backend} backend`);
    for (const f of ['base.yaml', `${backend}/config.yaml`, 'publishers-rbac.yaml', 'envoy-sidecar.yaml']) assert.ok(block.includes(f), `the ${backend} steps apply ${f}`);
  }
});

test('every example directory has a README.md that names each of its files', () => {
  for (const name of readdirSync(examples)) {
    const dir = join(examples, name);
    if (!statSync(dir).isDirectory()) continue;
    const readme = join(dir, 'README.md');
    assert.ok(existsSync(readme), `examples/${name} has no README.md`);
    const text = readFileSync(readme, 'utf8');
    for (const f of walk(dir).filter((p) => p !== readme)) {
      const base = f.split('/').pop()!;
      assert.ok(text.includes(base), `examples/${name}/README.md does not say what ${relative(dir, f)} is`);
    }
  }
});

test('examples/vault/setup.sh lets in the ServiceAccount examples/kubernetes runs meshca as', () => {
  const base = parseAllDocuments(readFileSync(join(examples, 'kubernetes', 'base.yaml'), 'utf8')).map((d) => d.toJS() as { kind?: string; metadata?: { name?: string; namespace?: string } });
  const sa = base.find((o) => o.kind === 'ServiceAccount')!;
  const setup = readFileSync(join(examples, 'vault', 'setup.sh'), 'utf8');
  // The command with its backslash-continued lines.
  const role = /vault write auth\/kubernetes\/role\/meshca(?:[^\n]*\\\n)*[^\n]*/.exec(setup)?.[0] ?? '';
  const value = (key: string) => new RegExp(`\\b${key}=([\\w.-]+)`).exec(role)?.[1];
  assert.equal(value('bound_service_account_names'), sa.metadata!.name, 'ServiceAccount name');
  assert.equal(value('bound_service_account_namespaces'), sa.metadata!.namespace, 'ServiceAccount namespace');
});
