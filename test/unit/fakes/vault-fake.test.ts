import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import nodeVault from 'node-vault';
import { startFakeVault, createTestCsr, vaultGlob, parseVaultDuration, type FakeVault } from '../../fakes/vault.js';
import { ManualClock } from '../../fakes/clock.js';

const TD = 'example.org';
const ID = `spiffe://${TD}/ns/default/sa/web`;

interface ApiErr {
  message: string;
  response: { statusCode: number; body: { errors: string[] } };
}
async function rejects(p: Promise<unknown>, status: number, text?: RegExp): Promise<ApiErr> {
  try {
    await p;
  } catch (e) {
    const err = e as ApiErr;
    assert.equal(err.response?.statusCode, status, `expected status ${status}, got ${err.response?.statusCode}: ${err.message}`);
    assert.ok(Array.isArray(err.response.body.errors), 'error body has errors[]');
    if (text) assert.match(err.message, text);
    return err;
  }
  assert.fail(`expected a ${status} rejection`);
}

describe('fake vault', { timeout: 20_000 }, () => {
  let fake: FakeVault;
  const clock = new ManualClock(Date.now());
  const client = (token?: string, namespace?: string) =>
    nodeVault({ endpoint: fake.url, ...(token ? { token } : {}), ...(namespace ? { namespace } : {}), requestOptions: { timeout: 5000 } });

  before(async () => {
    fake = await startFakeVault({ now: () => clock.nowMs(), namespaces: ['team-a'] });
    await fake.mountPki('pki', { namespace: 'team-a' });
    fake.setRole('pki', 'default-role', { allowed_uri_sans: `spiffe://${TD}/*` });
    fake.setRole('pki', 'meshca', { allowed_uri_sans: [`spiffe://${TD}/ns/*/sa/*`], require_cn: false, key_type: 'any', basic_constraints_valid_for_non_ca: true, max_ttl: '2h' });
  });
  after(async () => {
    await fake.close();
  });

  it('globs match like go-glob (a star crosses "/")', () => {
    assert.ok(vaultGlob('spiffe://td/ns/*/sa/*', 'spiffe://td/ns/a/sa/b'));
    assert.ok(vaultGlob('spiffe://td/*', 'spiffe://td/a/b/c'));
    assert.ok(!vaultGlob('spiffe://td/ns/*/sa/*', 'spiffe://other/ns/a/sa/b'));
    assert.ok(vaultGlob('exact', 'exact'));
    assert.ok(!vaultGlob('exact', 'exactly'));
    assert.equal(parseVaultDuration('1h30m', 'ttl'), 5400);
    assert.equal(parseVaultDuration('300', 'ttl'), 300);
    assert.equal(parseVaultDuration(42, 'ttl'), 42);
    assert.throws(() => parseVaultDuration('1x', 'ttl'));
  });

  it('signs a SPIFFE leaf with a role allowing it, through the real node-vault client', async () => {
    const csr = await createTestCsr({ uris: [ID] });
    const res = await client(fake.rootToken).write('pki/sign/meshca', { csr: csr.pem, uri_sans: ID, ttl: '1h' });
    for (const k of ['request_id', 'lease_id', 'lease_duration', 'renewable', 'data', 'wrap_info', 'warnings', 'auth']) assert.ok(k in res, `response has ${k}`);
    const leaf = new X509Certificate(res.data.certificate);
    const root = new X509Certificate(res.data.issuing_ca);
    assert.ok(leaf.checkIssued(root) && leaf.verify(root.publicKey));
    assert.ok(leaf.publicKey.equals(csr.publicKey));
    assert.equal(leaf.subjectAltName, `URI:${ID}`);
    assert.equal(leaf.ca, false);
    assert.deepEqual(res.data.ca_chain, [res.data.issuing_ca]);
    assert.match(res.data.serial_number, /^[0-9a-f]{2}(:[0-9a-f]{2})+$/);
    const lifetime = new Date(leaf.validTo).getTime() - clock.nowMs();
    assert.ok(Math.abs(lifetime - 3600_000) < 2000, `1h lifetime, got ${lifetime}`);
    assert.equal(res.data.expiration, Math.floor(new Date(leaf.validTo).getTime() / 1000));
  });

  it('rejects an EC CSR under a role with the default key_type rsa', async () => {
    const csr = await createTestCsr({ uris: [ID], cn: 'web' });
    await rejects(client(fake.rootToken).write('pki/sign/default-role', { csr: csr.pem, common_name: 'web' }), 400, /role requires keys of type rsa/);
  });

  it('requires a common name by default (require_cn=true)', async () => {
    const csr = await createTestCsr({ keyType: 'rsa', uris: [ID] });
    await rejects(client(fake.rootToken).write('pki/sign/default-role', { csr: csr.pem }), 400, /common_name field is required/);
  });

  it('rejects a URI SAN the role does not allow with 400', async () => {
    const csr = await createTestCsr({ uris: [`spiffe://${TD}/admin`] });
    await rejects(client(fake.rootToken).write('pki/sign/meshca', { csr: csr.pem }), 400, /URI Subject Alternative Names were provided via CSR which are not valid for this role/);
  });

  it('rejects a CSR whose signature does not verify', async () => {
    const csr = await createTestCsr({ uris: [ID] });
    const der = Buffer.from(csr.der);
    der[der.length - 5] = der[der.length - 5]! ^ 0xff;
    const pem = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----`;
    const err = await rejects(client(fake.rootToken).write('pki/sign/meshca', { csr: pem }), 400);
    assert.match(err.message, /signature|parsed/);
  });

  it('caps a TTL over the role max_ttl with a warning, and refuses to outlive the CA', async () => {
    const csr = await createTestCsr({ uris: [ID] });
    const res = await client(fake.rootToken).write('pki/sign/meshca', { csr: csr.pem, ttl: '5h' });
    assert.match(String(res.warnings), /longer than permitted maxTTL/);
    const leaf = new X509Certificate(res.data.certificate);
    assert.ok(Math.abs(new Date(leaf.validTo).getTime() - clock.nowMs() - 7200_000) < 2000);
    fake.setRole('pki', 'long', { allowed_uri_sans: '*', require_cn: false, key_type: 'any', max_ttl: 20 * 365 * 86400 });
    await rejects(client(fake.rootToken).write('pki/sign/long', { csr: csr.pem, ttl: `${15 * 365 * 24}h` }), 400, /beyond the expiration of the CA certificate/);
  });

  it('signs an intermediate with CA:true, certSign+cRLSign and a ttl truncated to the root', async () => {
    const csr = await createTestCsr({ ca: true });
    const res = await client(fake.rootToken).write('pki/root/sign-intermediate', { csr: csr.pem, ttl: `${20 * 365 * 24}h`, uri_sans: `spiffe://${TD}`, common_name: 'meshca' });
    const ca = new X509Certificate(res.data.certificate);
    const root = new X509Certificate(fake.rootPem('pki'));
    assert.equal(ca.ca, true);
    assert.ok(ca.checkIssued(root) && ca.verify(root.publicKey));
    assert.equal(ca.validTo, root.validTo);
    assert.equal(ca.subjectAltName, `DNS:meshca, URI:spiffe://${TD}`, 'like Vault, a hostname-like CN becomes a DNS SAN');
    assert.match(ca.subject, /CN=meshca/);
    assert.ok(ca.keyUsage === undefined || ca.keyUsage.length >= 0);
    const excluded = await client(fake.rootToken).write('pki/root/sign-intermediate', { csr: csr.pem, ttl: 3600, uri_sans: `spiffe://${TD}`, common_name: 'meshca', exclude_cn_from_sans: true });
    assert.equal(new X509Certificate(excluded.data.certificate).subjectAltName, `URI:spiffe://${TD}`);
    const spaced = await client(fake.rootToken).write('pki/root/sign-intermediate', { csr: csr.pem, ttl: 3600, uri_sans: `spiffe://${TD}`, common_name: 'meshca CA example.org' });
    assert.equal(new X509Certificate(spaced.data.certificate).subjectAltName, `URI:spiffe://${TD}`, 'a CN that is no hostname stays out');
    const viaIssuer = await client(fake.rootToken).write('pki/issuer/default/sign-intermediate', { csr: csr.pem, ttl: 3600, format: 'pem_bundle' });
    assert.ok(viaIssuer.data.certificate.split('BEGIN CERTIFICATE').length - 1 >= 2, 'pem_bundle carries the chain');
  });

  it('serves ca_chain as PEM and JSON and issuer json without a token', async () => {
    const r = await fetch(`${fake.url}/v1/pki/ca_chain`);
    assert.equal(r.status, 200);
    assert.match(await r.text(), /BEGIN CERTIFICATE/);
    const j = await client().read('pki/cert/ca_chain');
    assert.match(j.data.certificate, /BEGIN CERTIFICATE/);
    const iss = await client().read('pki/issuer/default/json');
    assert.equal(iss.data.ca_chain.length, 1);
  });

  it('answers 403 for a missing, unknown or expired token', async () => {
    const csr = await createTestCsr({ uris: [ID] });
    await rejects(client().write('pki/sign/meshca', { csr: csr.pem }), 403, /missing client token/);
    await rejects(client('hvs.nope').write('pki/sign/meshca', { csr: csr.pem }), 403, /permission denied/);
    const t = fake.createToken({ policies: ['root'], ttlSeconds: 60 });
    await client(t).tokenLookupSelf();
    clock.advance(61_000);
    await rejects(client(t).tokenLookupSelf(), 403, /permission denied/);
    const t2 = fake.createToken({ policies: ['root'], ttlSeconds: 600 });
    fake.expireToken(t2);
    await rejects(client(t2).write('pki/sign/meshca', { csr: csr.pem }), 403, /permission denied/);
  });

  it('enforces policies: a leaf-only token may sign but not sign-intermediate', async () => {
    fake.setPolicy('leaf', 'path "pki/sign/meshca" {\n  capabilities = ["update"]\n}\n');
    const t = fake.createToken({ policies: ['leaf'] });
    const csr = await createTestCsr({ uris: [ID] });
    await client(t).write('pki/sign/meshca', { csr: csr.pem });
    await rejects(client(t).write('pki/root/sign-intermediate', { csr: csr.pem }), 403, /permission denied/);
    const self = await client(t).tokenLookupSelf();
    assert.deepEqual(self.data.policies, ['default', 'leaf']);
  });

  it('renews tokens up to the explicit max TTL and refuses non-renewable ones', async () => {
    const t = fake.createToken({ ttlSeconds: 100, explicitMaxTtlSeconds: 150 });
    clock.advance(80_000);
    const r = await client(t).tokenRenewSelf();
    assert.equal(r.auth.lease_duration, 70);
    assert.match(String(r.warnings), /capped/);
    const nr = fake.createToken({ ttlSeconds: 100, renewable: false });
    await rejects(client(nr).tokenRenewSelf(), 400, /not renewable/);
    const batch = fake.createToken({ ttlSeconds: 100, type: 'batch' });
    await rejects(client(batch).tokenRenewSelf(), 400, /batch tokens cannot be renewed/);
  });

  it('logs in with AppRole and Kubernetes, on custom mounts too', async () => {
    fake.setPolicy('signer', 'path "pki/sign/*" { capabilities = ["update"] }');
    const ar = fake.addAppRole('meshca', { policies: ['signer'], tokenTtlSeconds: 120 });
    const c = client();
    const res = await c.approleLogin({ role_id: ar.roleId, secret_id: ar.secretId });
    assert.equal(res.auth.lease_duration, 120);
    assert.deepEqual(res.auth.policies, ['default', 'signer']);
    await rejects(client().approleLogin({ role_id: ar.roleId, secret_id: 'wrong' }), 400, /invalid role or secret ID/);
    fake.addKubernetesRole('meshca', {
      mount: 'k8s-east',
      jwts: { 'jwt-1': { serviceAccountName: 'meshca', serviceAccountNamespace: 'mesh' }, 'jwt-2': { serviceAccountName: 'other', serviceAccountNamespace: 'mesh' } },
      boundServiceAccountNames: ['meshca'],
      boundServiceAccountNamespaces: ['mesh'],
      policies: ['signer'],
    });
    const k = await client().kubernetesLogin({ role: 'meshca', jwt: 'jwt-1', mount_point: 'k8s-east' });
    assert.match(k.auth.client_token, /^hvs\./);
    await rejects(client().kubernetesLogin({ role: 'meshca', jwt: 'jwt-2', mount_point: 'k8s-east' }), 403);
    // no auth method is mounted at auth/kubernetes: not a login path, so an unauthenticated call is refused
    await rejects(client().kubernetesLogin({ role: 'meshca', jwt: 'jwt-1' }), 403);
  });

  it('isolates namespaces: mounts and tokens live in one namespace', async () => {
    const t = fake.createToken({ namespace: 'team-a', policies: ['root'] });
    const csr = await createTestCsr({ ca: true });
    await client(t, 'team-a').write('pki/root/sign-intermediate', { csr: csr.pem, ttl: '1h' });
    await rejects(client(t).write('pki/root/sign-intermediate', { csr: csr.pem, ttl: '1h' }), 403);
    const last = fake.requests[fake.requests.length - 2]!;
    assert.equal(last.namespace, 'team-a');
    assert.equal(last.headers['x-vault-namespace'], 'team-a');
    assert.notEqual(fake.rootPem('pki', 'team-a'), fake.rootPem('pki'));
  });

  it('answers 404 for unknown paths and 405 for wrong methods', async () => {
    await rejects(client(fake.rootToken).read('pki/nope'), 404);
    await rejects(client(fake.rootToken).read('nomount/x'), 404, /no handler for route/);
    await rejects(client(fake.rootToken).read('pki/sign/meshca'), 405);
    // Unauthenticated read paths take no writes, with or without a token.
    await rejects(client().write('pki/cert/ca_chain', {}), 405, /unsupported operation/);
    await rejects(client(fake.rootToken).write('pki/issuer/default/json', {}), 405, /unsupported operation/);
    await rejects(client(fake.rootToken).read('auth/token/revoke-self'), 405);
  });

  it('health: uninitialised 501, DR secondary 472, performance standby 473, each with its query override', async () => {
    const status = async (q = '') => (await fetch(`${fake.url}/v1/sys/health${q}`)).status;
    fake.setInitialized(false);
    try {
      assert.equal(await status(), 501);
      assert.equal(await status('?uninitcode=200'), 200);
      const h = await client().health();
      assert.equal(h.initialized, false);
      assert.equal(h.sealed, true, 'an uninitialised Vault is sealed too');
      await rejects(client(fake.rootToken).tokenLookupSelf(), 503, /Vault is sealed/);
    } finally {
      fake.setInitialized(true);
    }
    fake.setReplication('dr-secondary');
    try {
      assert.equal(await status('?standbyok=true'), 472);
      assert.equal(await status('?drsecondarycode=299'), 299);
      assert.equal((await client().health()).replication_dr_mode, 'secondary');
    } finally {
      fake.setReplication('none');
    }
    fake.setReplication('perf-standby');
    try {
      assert.equal(await status('?standbyok=true'), 473);
      assert.equal(await status('?perfstandbyok=true'), 200);
      assert.equal(await status('?performancestandbycode=200'), 200);
      const h = await client().health();
      assert.equal(h.performance_standby, true);
      await client(fake.rootToken).tokenLookupSelf();
    } finally {
      fake.setReplication('none');
    }
    assert.equal(await status(), 200);
  });

  it('requireRequestHeader: like a Vault Agent listener, 412 without X-Vault-Request: true', async () => {
    const agent = await startFakeVault({ requireRequestHeader: true, pkiMounts: [] });
    try {
      const plain = nodeVault({ endpoint: agent.url, token: agent.rootToken, requestOptions: { timeout: 5000 } });
      await rejects(plain.tokenLookupSelf(), 412, /missing "X-Vault-Request" header/);
      const withHeader = nodeVault({ endpoint: agent.url, token: agent.rootToken, requestOptions: { timeout: 5000, headers: { 'X-Vault-Request': 'true' } } });
      assert.equal((await withHeader.tokenLookupSelf()).data.id, agent.rootToken);
    } finally {
      await agent.close();
    }
  });

  it('is sealed: 503 everywhere, health reports it, query overrides apply', async () => {
    fake.seal();
    try {
      await rejects(client(fake.rootToken).write('pki/sign/meshca', { csr: 'x' }), 503, /Vault is sealed/);
      const h = await client().health();
      assert.equal(h.sealed, true);
      assert.equal((await fetch(`${fake.url}/v1/sys/health`)).status, 503);
      assert.equal((await fetch(`${fake.url}/v1/sys/health?sealedcode=200`)).status, 200);
      assert.equal((await fetch(`${fake.url}/v1/sys/health`, { method: 'HEAD' })).status, 503);
    } finally {
      fake.unseal();
    }
    fake.setStandby(true);
    try {
      assert.equal((await fetch(`${fake.url}/v1/sys/health`)).status, 429);
      assert.equal((await fetch(`${fake.url}/v1/sys/health?standbyok=true`)).status, 200);
      await rejects(client(fake.rootToken).tokenLookupSelf(), 429);
    } finally {
      fake.setStandby(false);
    }
  });

  it('fails the next N requests with a chosen status and logs requests', async () => {
    fake.failNext({ count: 2, status: 500 });
    await rejects(client(fake.rootToken).tokenLookupSelf(), 500);
    await rejects(client(fake.rootToken).tokenLookupSelf(), 500);
    await client(fake.rootToken).tokenLookupSelf();
    const last = fake.requests[fake.requests.length - 1]!;
    assert.equal(last.path, 'auth/token/lookup-self');
    assert.equal(last.status, 200);
    assert.equal(last.headers['x-vault-token'], fake.rootToken);
    const bearer = await fetch(`${fake.url}/v1/auth/token/lookup-self`, { headers: { Authorization: `Bearer ${fake.rootToken}` } });
    assert.equal(bearer.status, 200);
  });

  it('serves HTTPS with a generated CA and optional client certificates', async () => {
    const tlsFake = await startFakeVault({ tls: { serverName: 'vault.test', requireClientCert: true }, pkiMounts: [] });
    try {
      const c = nodeVault({
        endpoint: tlsFake.url,
        token: tlsFake.rootToken,
        requestOptions: { ca: tlsFake.tls!.caPem, cert: tlsFake.tls!.clientCertPem, key: tlsFake.tls!.clientKeyPem, timeout: 5000 },
      });
      const r = await c.tokenLookupSelf();
      assert.equal(r.data.id, tlsFake.rootToken);
      const noCert = nodeVault({ endpoint: tlsFake.url, token: tlsFake.rootToken, requestOptions: { ca: tlsFake.tls!.caPem, timeout: 5000 } });
      await assert.rejects(noCert.tokenLookupSelf());
    } finally {
      await tlsFake.close();
    }
  });
});
