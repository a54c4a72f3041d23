import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseConfig, parseConfigText } from '../../../src/config/load.js';

test('ok/embedded defaults', () => {
  const c = parseConfig({});
  assert.equal(c.trustDomain, 'cluster.local');
  assert.equal(c.dataDir, './.meshca');
  assert.equal(c.server.grpc.address, '127.0.0.1:8443');
  assert.deepEqual(c.server.grpc.dnsNames, ['localhost']);
  assert.equal(c.server.http.address, '127.0.0.1:8080');
  assert.equal(c.workload.ttl, 3600);
  assert.equal(c.workload.maxTtl, 86400);
  assert.equal(c.workload.keyType, 'ec-p256');
  assert.equal(c.workload.renewFraction, 0.5);
  assert.equal(c.workload.backdate, 30);
  assert.equal(c.authority.type, 'internal');
  assert.equal(c.authority.internal.rootTtl, 8760 * 3600);
  assert.equal(c.authority.internal.signingCaTtl, 48 * 3600);
  assert.ok(Object.isFrozen(c.workload));
});

test('ok/durations in every documented form', () => {
  const c = parseConfig({ workload: { ttl: '20s', maxTtl: '24h' }, authority: { internal: { signingCaTtl: '5m', rootTtl: '1h30m' } } });
  assert.equal(c.workload.ttl, 20);
  assert.equal(c.authority.internal.signingCaTtl, 300);
  assert.equal(c.authority.internal.rootTtl, 5400);
});

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.problems;
  }
  assert.fail('expected a ConfigError');
}

test('fail/unknown keys are named by their path', () => {
  const p = problems(() => parseConfig({ server: { grpc: { adress: 'x' } }, bogus: 1 }));
  assert.ok(p.includes('server.grpc.adress: unknown key'), p.join('\n'));
  assert.ok(p.includes('bogus: unknown key'), p.join('\n'));
});

test('fail/one line per problem, each naming the key', () => {
  const p = problems(() =>
    parseConfig({ trustDomain: 'Bad.Domain', workload: { ttl: 'soon', keyType: 'dsa', renewFraction: 2, backdate: '10m' } }),
  );
  assert.ok(p.some((l) => l.startsWith('trustDomain: ') && /lower-case/.test(l)), p.join('\n'));
  assert.ok(p.some((l) => l.startsWith('workload.ttl: ') && /not a duration/.test(l)), p.join('\n'));
  assert.ok(p.some((l) => l.startsWith('workload.keyType: ') && /ec-p256/.test(l)), p.join('\n'));
  assert.ok(p.some((l) => l.startsWith('workload.renewFraction: ')), p.join('\n'));
  assert.ok(p.some((l) => l.startsWith('workload.backdate: ') && /maximum/.test(l)), p.join('\n'));
});

test('fail/ttl above maxTtl and partial operator CA files', () => {
  const p = problems(() => parseConfig({ workload: { ttl: '48h' }, authority: { internal: { caCertFile: '/x' } } }));
  assert.ok(p.includes('workload.ttl: is longer than workload.maxTtl'), p.join('\n'));
  assert.ok(p.some((l) => l.startsWith('authority.internal.caKeyFile: is required')), p.join('\n'));
  assert.ok(p.some((l) => l.startsWith('authority.internal.rootCertFile: is required')), p.join('\n'));
});

test('fail/controllers need valid SPIFFE ID patterns', () => {
  const p = problems(() => parseConfig({ authorization: { controllers: [{ id: 'not-an-id', allow: [] }] } }));
  assert.ok(p.some((l) => l.startsWith('authorization.controllers[0].id: ') && /scheme/.test(l)), p.join('\n'));
  assert.ok(p.some((l) => l.startsWith('authorization.controllers[0].allow: ')), p.join('\n'));
});

test('fail/YAML syntax errors and non-mapping documents', () => {
  assert.match(problems(() => parseConfigText('a: [1, 2', 'f.yaml'))[0]!, /^YAML: /);
  assert.deepEqual(problems(() => parseConfigText('- 1\n- 2\n', 'f.yaml')), ['(top level): must be a mapping of keys, not a list']);
  assert.match(problems(() => parseConfigText('a: 1\na: 2\n', 'f.yaml'))[0]!, /YAML: .*unique|duplicate/i);
});

test('fail/a listen port above 65535 is a config error naming the key', () => {
  const p = problems(() => parseConfig({ server: { grpc: { address: '127.0.0.1:70000' }, http: { address: '127.0.0.1:99999' } } }));
  assert.ok(p.includes('server.grpc.address: port must be between 0 and 65535'), p.join('\n'));
  assert.ok(p.includes('server.http.address: port must be between 0 and 65535'), p.join('\n'));
  assert.equal(parseConfig({ server: { http: { address: '127.0.0.1:65535' } } }).server.http.address, '127.0.0.1:65535');
});

test('fail/an address without a port is one problem, not also a port-range complaint', () => {
  assert.deepEqual(problems(() => parseConfig({ server: { http: { address: 'localhost' } } })), ['server.http.address: must be host:port, e.g. 127.0.0.1:8443']);
});

test('ok/server.bundleEndpoint defaults to profile https_spiffe on 0.0.0.0:8543, as documented', () => {
  const c = parseConfig({ server: { bundleEndpoint: {} } });
  assert.equal(c.server.bundleEndpoint?.profile, 'https_spiffe');
  assert.equal(c.server.bundleEndpoint?.address, '0.0.0.0:8543');
  assert.equal(c.server.bundleEndpoint?.refreshHint, 300);
  assert.equal(parseConfig({}).server.bundleEndpoint, undefined, 'absent = not served');
});

test('fail/SPIFFE IDs meshca serves under must be workload IDs of its own trust domain', () => {
  const p = problems(() =>
    parseConfig({
      server: { uds: { path: '/run/meshca.sock', identity: 'garbage' }, bundleEndpoint: { spiffeId: 'spiffe://other.example/be' } },
    }),
  );
  assert.ok(p.some((l) => l.startsWith('server.uds.identity: ') && /scheme/.test(l)), p.join('\n'));
  assert.ok(p.some((l) => l.startsWith('server.bundleEndpoint.spiffeId: ') && /not this CA's trust domain/.test(l)), p.join('\n'));
  const root = problems(() => parseConfig({ server: { bundleEndpoint: { spiffeId: 'spiffe://cluster.local' } } }));
  assert.ok(root.some((l) => l.startsWith('server.bundleEndpoint.spiffeId: ') && /must have a path/.test(l)), root.join('\n'));
});

test('fail/server.grpc.dnsNames must be DNS names, named by index', () => {
  const p = problems(() => parseConfig({ server: { grpc: { dnsNames: ['localhost', 'bad name!'] } } }));
  assert.ok(p.some((l) => l.startsWith('server.grpc.dnsNames[1]: must be a DNS name')), p.join('\n'));
  assert.deepEqual(parseConfig({ server: { grpc: { dnsNames: ['meshca.istio-system.svc', '*.example.org'] } } }).server.grpc.dnsNames, [
    'meshca.istio-system.svc',
    '*.example.org',
  ]);
});

test('fail/a key of the wrong type is named with what it must be and what it is, never "is required"', () => {
  const cases: Array<[string, string]> = [
    ['trustDomain: 5', 'trustDomain: must be a string, not a number'],
    ['server: 5', 'server: must be a mapping, not a number'],
    ['workload: []', 'workload: must be a mapping, not a list'],
    ['workload: {renewFraction: "0.5"}', 'workload.renewFraction: must be a number, not a string'],
    ['workload: {renewFraction: .nan}', 'workload.renewFraction: must be a number, not a number that is not finite (.nan or .inf)'],
    ['server: {grpc: {dnsNames: localhost}}', 'server.grpc.dnsNames: must be a list, not a string'],
    ['authority: {type: vault, vault: {address: "https://v:8200", auth: {token: t}, intermediateTtl: true}}', 'authority.vault.intermediateTtl: must be a duration such as 20s, 5m, 1h or 24h'],
    ['workload: {maxTtl: true}', 'workload.maxTtl: must be a duration such as 20s, 5m, 1h or 24h'],
    ['signing: {workers: "2"}', 'signing.workers: must be "auto" or an integer from 0 to 64'],
    ['trustDomain: !!binary Zm9v', 'trustDomain: must be a string, not binary data'],
  ];
  for (const [yaml, want] of cases) assert.deepEqual(problems(() => parseConfigText(yaml, 'c.yaml')), [want], yaml);
  // Never the value: a token under the wrong key, or a token file given as the config, must not reach stderr.
  const secret = 'hvs.CAESIJlU0a5SLhXyZq1Xk2Yl3fQe8mNab';
  for (const yaml of [`authority: {type: vault, vault: {address: "https://v:8200", auth: ${secret}}}`, secret, `trustDomain: 12345678901234`]) {
    const p = problems(() => parseConfigText(yaml, 'c.yaml'));
    assert.ok(p.every((l) => !l.includes(secret) && !l.includes('12345678901234')), p.join('\n'));
  }
  // A missing required key is still "is required".
  const p = problems(() => parseConfig({ authority: { type: 'vault', vault: { pkiMount: 'pki' } } }));
  assert.ok(p.includes('authority.vault.address: is required'), p.join('\n'));
});

test('fail/YAML that is not a mapping of keys, or cannot be resolved, is one line, not a crash or a list of Buffer methods', () => {
  assert.deepEqual(problems(() => parseConfigText('!!binary foo', 'c.yaml')), ['(top level): must be a mapping of keys, not binary data']);
  assert.deepEqual(problems(() => parseConfigText('- a', 'c.yaml')), ['(top level): must be a mapping of keys, not a list']);
  const alias = problems(() => parseConfigText('a: &x 1\nb: *y\n', 'c.yaml'));
  assert.equal(alias.length, 1);
  assert.match(alias[0]!, /^YAML: Unresolved alias .*y$/);
});

test('fail/a trust domain written as a SPIFFE URI says to drop the scheme', () => {
  assert.deepEqual(problems(() => parseConfig({ trustDomain: 'spiffe://cluster.local' })), [
    'trustDomain: invalid trust domain "spiffe://cluster.local": give the bare name without the "spiffe://" scheme (e.g. example.org)',
  ]);
});

test('fail/server.uds.identity may not be one of meshca\'s own identities', () => {
  for (const identity of ['spiffe://cluster.local/meshca', 'spiffe://cluster.local/meshca/bundle-endpoint']) {
    const p = problems(() => parseConfig({ server: { uds: { path: '/run/meshca.sock', identity } } }));
    assert.deepEqual(p, [`server.uds.identity: ${identity} is reserved for meshca itself (${identity.endsWith('/meshca') ? identity : 'spiffe://cluster.local/meshca/*'}); give Unix-socket callers a workload identity`]);
  }
});

test('fail/a credential pasted under the wrong key never reaches the error text, wherever a message echoes the value', () => {
  const vault = 'hvs.CAESIsecretTOKEN123xyzABCDEFGH';
  const jwt = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln';
  for (const raw of [{ trustDomain: vault }, { workload: { ttl: vault } }, { server: { uds: { path: '/run/x.sock', identity: jwt } } }, { authorization: { controllers: [{ id: jwt, allow: ['spiffe://cluster.local/*'] }] } }]) {
    let text = '';
    try {
      parseConfig(raw);
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      text = `${e.message}\n${e.problems.join('\n')}`;
    }
    assert.ok(text.length > 0, 'refused');
    assert.ok(!text.includes('secretTOKEN') && !text.includes('eyJzdWIi'), text);
    assert.match(text, /\[redacted\]/);
  }
});
