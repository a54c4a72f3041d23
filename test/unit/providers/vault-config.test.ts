import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { vaultConfigSchema } from '../../../providers/vault/config.js';

function issues(input: unknown): string[] {
  const r = vaultConfigSchema.safeParse(input);
  assert.equal(r.success, false, 'expected the config to be rejected');
  return r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

describe('authority.vault config', () => {
  it('ok/applies the documented defaults', () => {
    const c = vaultConfigSchema.parse({ address: 'https://vault.example:8200', auth: { token: 's.x' } });
    assert.equal(c.mode, 'intermediate');
    assert.equal(c.pkiMount, 'pki');
    assert.equal(c.intermediateTtl, 48 * 3600);
    assert.equal(c.auth.method, 'token');
    assert.equal(c.auth.serviceAccountTokenFile, '/var/run/secrets/kubernetes.io/serviceaccount/token');
    assert.deepEqual(c.tls, { caFile: '', serverName: '', certFile: '', keyFile: '' });
  });

  it('ok/normalises fingerprint, namespace and mount paths', () => {
    const fp = 'AB:'.repeat(31) + 'AB';
    const c = vaultConfigSchema.parse({
      address: 'https://v:8200', rootFingerprint: fp, namespace: '/team-a/', pkiMount: '/pki_int/',
      auth: { method: 'approle', roleId: 'r', secretIdFile: '/s', mount: 'approle-meshca' }, intermediateTtl: '24h',
    });
    assert.equal(c.rootFingerprint, 'ab'.repeat(32));
    assert.equal(c.namespace, 'team-a');
    assert.equal(c.pkiMount, 'pki_int');
    assert.equal(c.intermediateTtl, 86400);
  });

  it('ok/issuer defaults to "" (the mount\'s default issuer) and takes a name or ID', () => {
    assert.equal(vaultConfigSchema.parse({ address: 'https://v:8200', auth: { token: 't' } }).issuer, '');
    assert.equal(vaultConfigSchema.parse({ address: 'https://v:8200', issuer: ' root-2026 ', auth: { token: 't' } }).issuer, 'root-2026');
    assert.equal(vaultConfigSchema.parse({ address: 'https://v:8200', issuer: '6d2a1c3e-0b4f-4e39-9d7a-3b1c2f8e9a10', auth: { token: 't' } }).issuer, '6d2a1c3e-0b4f-4e39-9d7a-3b1c2f8e9a10');
  });

  it('fail/issuer must be one path segment', () => {
    for (const bad of ['a/b', '..', 'root 2026']) {
      assert.ok(issues({ address: 'https://v:8200', issuer: bad, auth: { token: 't' } }).some((m) => m.startsWith('issuer: ') && m.includes('authority.vault.issuer')), bad);
    }
  });

  it('fail/leaf mode needs a role', () => {
    assert.ok(issues({ address: 'https://v:8200', mode: 'leaf', auth: { token: 't' } }).some((m) => m.includes('role is required in leaf mode')));
  });

  it('fail/each auth method names its missing field', () => {
    assert.ok(issues({ address: 'https://v:8200', auth: { method: 'approle' } }).some((m) => m.includes('authority.vault.auth.roleId is required when method is approle')));
    assert.ok(issues({ address: 'https://v:8200', auth: { method: 'kubernetes' } }).some((m) => m.includes('authority.vault.auth.role is required when method is kubernetes')));
    assert.ok(issues({ address: 'https://v:8200', auth: {} }).some((m) => m.includes('authority.vault.auth.token or authority.vault.auth.tokenFile is required')));
    assert.ok(issues({ address: 'https://v:8200', auth: { token: 'a', tokenFile: '/b' } }).some((m) => m.includes('set only one of')));
  });

  it('fail/rejects unknown keys, bad durations, bad addresses and half a client cert', () => {
    assert.ok(issues({ address: 'https://v:8200', auth: { token: 't' }, extra: 1 }).some((m) => m.includes('extra')));
    assert.ok(issues({ address: 'https://v:8200', auth: { token: 't', bogus: 1 } }).some((m) => m.includes('bogus')));
    assert.ok(issues({ address: 'https://v:8200', auth: { token: 't' }, intermediateTtl: 'soon' }).some((m) => m.startsWith('intermediateTtl')));
    assert.ok(issues({ address: 'vault:8200', auth: { token: 't' } }).some((m) => m.startsWith('address')));
    assert.ok(issues({ address: 'https://v:8200', auth: { token: 't' }, tls: { certFile: '/c' } }).some((m) => m.includes('must be set together')));
    assert.ok(issues({ address: 'https://v:8200', auth: { token: 't' }, rootFingerprint: 'abc' }).some((m) => m.startsWith('rootFingerprint')));
  });
});

describe('examples/vault configs', () => {
  for (const name of ['meshca-intermediate.yaml', 'meshca-leaf.yaml']) {
    it(`ok/${name} is a valid authority.vault section`, async () => {
      const { readFile } = await import('node:fs/promises');
      const { parse } = await import('yaml');
      const doc = parse(await readFile(new URL(`../../../../examples/vault/${name}`, import.meta.url), 'utf8')) as { authority: { type: string; vault: unknown } };
      assert.equal(doc.authority.type, 'vault');
      const c = vaultConfigSchema.parse(doc.authority.vault);
      assert.equal(c.mode, name.includes('leaf') ? 'leaf' : 'intermediate');
    });
  }
});
