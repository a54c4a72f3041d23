import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Authorizer } from '../../../src/identity/authorization.js';

const controller = 'spiffe://td/ns/mesh/sa/controller';
const authz = new Authorizer([
  { id: controller, allow: ['spiffe://td/ns/apps/*'], maxTtlSeconds: 7200, generateKeys: false },
  { id: 'spiffe://td/ci/*', allow: ['spiffe://td/bootstrap/*'], maxTtlSeconds: 3600, generateKeys: true },
]);
const caller = (id: string) => ({ spiffeId: id, via: 'mtls' as const });

test('ok/a workload may get its own identity over SDS with a generated key', () => {
  const d = authz.decide({ caller: caller('spiffe://td/w'), target: 'spiffe://td/w', generateKey: true, channel: 'sds' });
  assert.equal(d.allowed, true);
});

test('fail/a workload may get its own identity over the API only with a CSR', () => {
  assert.equal(authz.decide({ caller: caller('spiffe://td/w'), target: 'spiffe://td/w', generateKey: false, channel: 'api' }).allowed, true);
  const d = authz.decide({ caller: caller('spiffe://td/w'), target: 'spiffe://td/w', generateKey: true, channel: 'api' });
  assert.equal(d.allowed, false);
  assert.match((d as { reason: string }).reason, /only with a CSR/);
});

test('fail/a workload may not get another identity', () => {
  const d = authz.decide({ caller: caller('spiffe://td/w'), target: 'spiffe://td/other', generateKey: false, channel: 'sds' });
  assert.equal(d.allowed, false);
  assert.match((d as { reason: string }).reason, /not a controller/);
});

test('ok/a controller gets identities under its allowed prefix with its max TTL', () => {
  const d = authz.decide({ caller: caller(controller), target: 'spiffe://td/ns/apps/sa/web', generateKey: false, channel: 'api' });
  assert.deepEqual(d, { allowed: true, rule: 'controller', controllerId: controller, maxTtlSeconds: 7200 });
});

test('fail/a controller outside its prefix or generating keys without permission', () => {
  const outside = authz.decide({ caller: caller(controller), target: 'spiffe://td/ns/other/sa/web', generateKey: false, channel: 'api' });
  assert.match((outside as { reason: string }).reason, /no allow pattern matches/);
  const gen = authz.decide({ caller: caller(controller), target: 'spiffe://td/ns/apps/sa/web', generateKey: true, channel: 'api' });
  assert.match((gen as { reason: string }).reason, /generateKeys: false/);
});

test('ok/controller rules match callers by path prefix', () => {
  const d = authz.decide({ caller: caller('spiffe://td/ci/job-7'), target: 'spiffe://td/bootstrap/proxy', generateKey: true, channel: 'api' });
  assert.equal(d.allowed, true);
});

test('fail/a workload may not put DNS names it chose in its own certificate (they are identities for host-name checks)', () => {
  const d = authz.decide({ caller: caller('spiffe://td/w'), target: 'spiffe://td/w', generateKey: false, channel: 'api', dnsNames: ['payments.default.svc'] });
  assert.equal(d.allowed, false);
  assert.match((d as { reason: string }).reason, /may not put DNS names "payments\.default\.svc" .*only callers listed in authorization\.controllers may, within their rule's dnsNames/);
});

test('ok/DNS names within a rule: exact names and "*.<suffix>" at any depth; a rule without dnsNames allows any', () => {
  const dns = new Authorizer([
    { id: 'spiffe://td/ns/web/sa/web', allow: ['spiffe://td/ns/web/sa/web'], maxTtlSeconds: 3600, generateKeys: false, dnsNames: ['web.web.svc', '*.web.svc.cluster.local'] },
    { id: controller, allow: ['spiffe://td/ns/apps/*'], maxTtlSeconds: 7200, generateKeys: false },
    { id: 'spiffe://td/ns/ops/sa/ops', allow: ['spiffe://td/ns/apps/*'], maxTtlSeconds: 7200, generateKeys: false, dnsNames: [] },
  ]);
  const web = caller('spiffe://td/ns/web/sa/web');
  const self = (names: string[]) => dns.decide({ caller: web, target: web.spiffeId, generateKey: false, channel: 'api', dnsNames: names });
  assert.equal(self(['web.web.svc', 'a.web.svc.cluster.local', 'x.y.web.svc.cluster.local', '*.web.svc.cluster.local', 'WEB.Web.SVC']).allowed, true);
  for (const bad of [['db.web.svc'], ['web.svc.cluster.local'], ['evilweb.svc.cluster.local'], ['web.web.svc', 'other.example']]) {
    const d = self(bad);
    assert.equal(d.allowed, false, bad.join());
    assert.match((d as { reason: string }).reason, /controller spiffe:\/\/td\/ns\/web\/sa\/web may not put DNS names .*id spiffe:\/\/td\/ns\/web\/sa\/web allows dnsNames \[web\.web\.svc, \*\.web\.svc\.cluster\.local\]/);
  }
  const forApp = (c: string, names: string[]) => dns.decide({ caller: caller(c), target: 'spiffe://td/ns/apps/x', generateKey: false, channel: 'api', dnsNames: names });
  assert.equal(forApp(controller, ['anything.example']).allowed, true);
  assert.equal(forApp('spiffe://td/ns/ops/sa/ops', []).allowed, true);
  assert.equal(forApp('spiffe://td/ns/ops/sa/ops', ['x.apps.svc']).allowed, false);
});

test('fail/a denial for hundreds of DNS names lists ten and counts the rest (the message travels in a gRPC trailer)', () => {
  const names = Array.from({ length: 3000 }, (_, i) => `n${i}.example.com`);
  const d = authz.decide({ caller: caller('spiffe://td/w'), target: 'spiffe://td/w', generateKey: false, channel: 'api', dnsNames: names });
  const reason = (d as { reason: string }).reason;
  assert.match(reason, /DNS names "n0\.example\.com", .*"n9\.example\.com" and 2990 more in the certificate/);
  assert.ok(reason.length < 1000, `reason is ${reason.length} characters`);
});

test("fail/meshca's own identities and DNS names go to no caller, whatever its allow patterns say, not even one presenting them", () => {
  const broad = Authorizer.fromConfig({
    trustDomain: 'td',
    authorization: { controllers: [{ id: controller, allow: ['spiffe://td/*'], maxTtl: 3600, generateKeys: true }] },
    // As written in a config: the parser accepts an upper-case scheme; meshca issues the lower-case form.
    server: { grpc: { dnsNames: ['localhost', 'meshca.meshca.svc'] }, bundleEndpoint: { spiffeId: 'SPIFFE://td/infra/bundle' } },
  });
  for (const target of ['spiffe://td/meshca', 'spiffe://td/meshca/bundle-endpoint', 'spiffe://td/infra/bundle']) {
    for (const generateKey of [true, false]) {
      const d = broad.decide({ caller: caller(controller), target, generateKey, channel: generateKey ? 'sds' : 'api' });
      assert.equal(d.allowed, false, target);
      assert.match((d as { reason: string }).reason, new RegExp(`identity ${target} is reserved for meshca itself`));
    }
  }
  assert.equal(broad.decide({ caller: caller(controller), target: 'spiffe://td/meshcax', generateKey: true, channel: 'sds' }).allowed, true, 'only /meshca and below');
  assert.equal(broad.decide({ caller: caller(controller), target: 'spiffe://td/ns/meshca/sa/x', generateKey: true, channel: 'sds' }).allowed, true);
  // A caller that got hold of a reserved identity (from an older version, say) cannot renew it either.
  const self = broad.decide({ caller: caller('spiffe://td/meshca'), target: 'spiffe://td/meshca', generateKey: false, channel: 'api' });
  assert.equal(self.allowed, false);
  for (const dns of ['localhost', 'MESHCA.meshca.svc']) {
    const d = broad.decide({ caller: caller(controller), target: 'spiffe://td/ns/apps/sa/x', dnsNames: [dns], generateKey: true, channel: 'api' });
    assert.equal(d.allowed, false, dns);
    assert.match((d as { reason: string }).reason, /is meshca's own \(server\.grpc\.dnsNames\)/);
  }
  assert.equal(broad.decide({ caller: caller(controller), target: 'spiffe://td/ns/apps/sa/x', dnsNames: ['x.apps.svc'], generateKey: true, channel: 'api' }).allowed, true);
});

test('fail/a DNS name that overlaps meshca\'s serving names through a wildcard, on either side, is refused', () => {
  const a = Authorizer.fromConfig({
    trustDomain: 'td',
    authorization: { controllers: [{ id: controller, allow: ['spiffe://td/ns/*'], maxTtl: 3600, generateKeys: true }] },
    server: { grpc: { dnsNames: ['localhost', 'meshca.mesh-system.svc', '*.meshca.internal'] } },
  });
  const ask = (dns: string) => a.decide({ caller: caller(controller), target: 'spiffe://td/ns/a/sa/x', dnsNames: [dns], generateKey: true, channel: 'api' }).allowed;
  for (const dns of ['*.mesh-system.svc', '*.MESH-SYSTEM.svc', 'x.meshca.internal', 'X.MESHCA.INTERNAL', '*.meshca.internal']) assert.equal(ask(dns), false, dns);
  for (const dns of ['*.svc', 'a.b.meshca.internal', '*.localhost', 'web.mesh-system.svc.cluster.local']) assert.equal(ask(dns), true, dns);
});
