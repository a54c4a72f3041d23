import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspectChain, formatDuration } from '../../../src/x509/inspect.js';
import { chainToPem } from '../../../src/x509/pem.js';
import { LeafSigner } from '../../../src/x509/leaf-signer.js';
import { generateKeyPair } from '../../../src/x509/keys.js';
import { NOW, TD, buildLeaf, makeCa } from './fixtures.js';

test('formats durations with the two largest units', () => {
  assert.equal(formatDuration(47 * 60_000 + 12_000), '47m12s');
  assert.equal(formatDuration(3 * 60_000), '3m');
  assert.equal(formatDuration(26 * 3600_000 + 5), '1d2h');
  assert.equal(formatDuration(400), '0s');
});

test('reports a good chain with SPIFFE ID, time left, key, roles and chaining', async () => {
  const ca = await makeCa();
  const s = new LeafSigner(ca.signingCa);
  const leaf = s.sign({ spiffeId: `spiffe://${TD}/ns/a`, dnsNames: ['a.svc'], ipAddresses: ['10.0.0.1'], publicKey: generateKeyPair('ed25519').publicKey, notBefore: new Date(NOW.getTime() - 1000), notAfter: new Date(NOW.getTime() + 47 * 60_000 + 12_000) });
  const out = inspectChain(chainToPem([leaf, ca.interDer, ca.rootDer]), { now: NOW });
  assert.match(out, /Certificate 1 of 3\n  role:       leaf\n  subject:    \(empty\)/);
  assert.match(out, /SPIFFE ID:  spiffe:\/\/example\.org\/ns\/a/);
  assert.match(out, /DNS SANs:   a\.svc/);
  assert.match(out, /IP SANs:    10\.0\.0\.1/);
  assert.match(out, /expires in 47m12s/);
  assert.match(out, /key:        ed25519/);
  assert.match(out, /role:       CA \(intermediate\)/);
  assert.match(out, /role:       CA \(self-signed root\)/);
  assert.match(out, /1 <- 2: issued and signed by the next certificate/);
  assert.match(out, /3: self-signed \(trust anchor\)/);
  assert.doesNotMatch(out, /PROBLEM/);
  const later = inspectChain(chainToPem([leaf]), { now: new Date(NOW.getTime() + 51 * 60_000) });
  assert.match(later, /EXPIRED 3m\d*s? ago/);
});

test('reports profile problems and broken chaining', async () => {
  const ca = await makeCa();
  const other = await makeCa();
  const bad = buildLeaf(ca, { uris: [`spiffe://${TD}/a`, `spiffe://${TD}/b`] });
  const out = inspectChain(chainToPem([bad, other.interDer]), { now: NOW, trustDomain: TD });
  assert.match(out, /SPIFFE ID:  \(ambiguous: 2 URI SANs\)/);
  assert.match(out, /PROBLEM:    must have exactly one URI SAN, found 2/);
  assert.match(out, /1 <- 2: PROBLEM: (issuer name does not match|signature does not verify)/);
  assert.throws(() => inspectChain('nothing here'), /no CERTIFICATE blocks/);
});

/**
 * Leaves made by openssl, not by meshca's own builder, each breaking one SPIFFE ID rule. Returns the PEM chain
 * (leaf, then the CA that signed it).
 */
function opensslLeaf(dir: string, name: string, san: string): string {
  const run = (args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
  };
  if (!existsSync(join(dir, 'ca.pem'))) {
    run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=testca',
      '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-addext', 'subjectAltName=URI:spiffe://cluster.local']);
  }
  run(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/']);
  writeFileSync(
    join(dir, `${name}.ext`),
    `basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,${san}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n`,
  );
  run(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.pem`]);
  return readFileSync(join(dir, `${name}.pem`), 'utf8') + readFileSync(join(dir, 'ca.pem'), 'utf8');
}

test('without a trust domain, inspect still names the broken SPIFFE ID rule of an openssl-made leaf; only the trust-domain comparison is skipped', () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshca-inspect-'));
  try {
    const cases = [
      { name: 'nonspiffe', san: 'URI:https://cluster.local/ns/a', problem: 'URI SAN is not a valid SPIFFE ID: invalid SPIFFE ID "https://cluster.local/ns/a": scheme must be "spiffe://"' },
      { name: 'dotdot', san: 'URI:spiffe://cluster.local/ns/../a', problem: 'URI SAN is not a valid SPIFFE ID: invalid SPIFFE ID "spiffe://cluster.local/ns/../a": path segments must not be "." or ".."' },
      { name: 'nouri', san: 'DNS:a.example', problem: 'must have exactly one URI SAN, found 0' },
    ];
    for (const c of cases) {
      const pem = opensslLeaf(dir, c.name, c.san);
      const leafReport = (o: string) => o.slice(0, o.indexOf('Certificate 2 of'));
      const without = leafReport(inspectChain(pem));
      const withTd = leafReport(inspectChain(pem, { trustDomain: 'cluster.local' }));
      assert.ok(without.includes(`  PROBLEM:    ${c.problem}\n`), `${c.name}:\n${without}`);
      assert.doesNotMatch(without, /no SPIFFE ID to take a trust domain from/, c.name);
      assert.deepEqual(problemsOf(without), problemsOf(withTd), `${c.name}: the same rules with and without --trust-domain cluster.local`);
    }
    // The skipped comparison: a valid ID of another trust domain is a problem only when a trust domain is given.
    const other = opensslLeaf(dir, 'other', 'URI:spiffe://other.example/ns/a');
    assert.match(inspectChain(other), /profile:    OK \(X509-SVID, trust domain other\.example\)/);
    assert.match(inspectChain(other, { trustDomain: 'cluster.local' }), /PROBLEM:    SPIFFE ID spiffe:\/\/other\.example\/ns\/a is not in trust domain "cluster\.local"/);
    // A CA with no SPIFFE ID is checked too, and the report says the trust domain was not.
    const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'plain.key', '-out', 'plain.pem', '-days', '2', '-subj', '/CN=plain',
      '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(inspectChain(readFileSync(join(dir, 'plain.pem'), 'utf8')), /profile:    OK \(SPIFFE CA; trust domain not checked: pass --trust-domain\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function problemsOf(report: string): string[] {
  return report.split('\n').filter((l) => l.startsWith('  PROBLEM:'));
}
