import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, tempDir, writeTestConfig } from '../support/cli.js';

/** An operator CA made with the openssl CLI (independent of meshca): root -> intermediate, Istio cacerts layout. */
function makeOperatorCa(dir: string): void {
  const run = (args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
  };
  const ext = join(dir, 'ca.ext');
  spawnSync('sh', ['-c', `printf 'basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign,cRLSign\\nsubjectKeyIdentifier=hash\\nauthorityKeyIdentifier=keyid\\n' > ${ext}`]);
  run(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'root-key.pem']);
  run(['req', '-x509', '-new', '-key', 'root-key.pem', '-subj', '/O=Operator/CN=Operator Root', '-days', '30', '-out', 'root-cert.pem',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  run(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ec-key.pem']);
  run(['pkcs8', '-topk8', '-nocrypt', '-in', 'ec-key.pem', '-out', 'ca-key.pem']);
  run(['req', '-new', '-key', 'ca-key.pem', '-subj', '/O=Operator/CN=Operator Intermediate', '-out', 'ca.csr']);
  run(['x509', '-req', '-in', 'ca.csr', '-CA', 'root-cert.pem', '-CAkey', 'root-key.pem', '-CAcreateserial', '-days', '20', '-extfile', ext, '-out', 'ca-cert.pem']);
}

/** A config pointing the internal backend at operator CA files in `dir` (file names as in Istio's cacerts). */
function operatorConfig(dir: string, files: { caKey: string; root: string }): Promise<string> {
  return writeTestConfig(
    dir,
    `authority:\n  internal:\n    caCertFile: ${join(dir, 'ca-cert.pem')}\n    caKeyFile: ${join(dir, files.caKey)}\n    rootCertFile: ${join(dir, files.root)}\n`,
  );
}

test('with the operator\'s CA files, meshca mints its signing CA under them and leaves verify to root-cert.pem', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    makeOperatorCa(t.dir);
    const cfg = await operatorConfig(t.dir, { caKey: 'ca-key.pem', root: 'root-cert.pem' });
    const out = join(t.dir, 'out');
    const r = await runCli(['issue', '--config', cfg, '--spiffe-id', 'spiffe://test.example/op/w', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const chain = await readFile(join(out, 'cert.pem'), 'utf8');
    const certs = chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)!;
    assert.equal(certs.length, 3, 'leaf, meshca signing CA, operator intermediate');
    assert.equal(await readFile(join(out, 'bundle.pem'), 'utf8'), await readFile(join(t.dir, 'root-cert.pem'), 'utf8'));
    await writeFile(join(t.dir, 'leaf.pem'), certs[0]!);
    await writeFile(join(t.dir, 'untrusted.pem'), certs.slice(1).join(''));
    const v = spawnSync('openssl', ['verify', '-x509_strict', '-CAfile', join(t.dir, 'root-cert.pem'), '-untrusted', join(t.dir, 'untrusted.pem'), join(t.dir, 'leaf.pem')], { encoding: 'utf8' });
    assert.equal(v.status, 0, v.stdout + v.stderr);
  } finally {
    await t.cleanup();
  }
});

test('a key that does not match caCertFile is an error naming the key', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    makeOperatorCa(t.dir);
    const cfg = await operatorConfig(t.dir, { caKey: 'root-key.pem', root: 'root-cert.pem' });
    const r = await runCli(['bundle', '--config', cfg]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /authority\.internal\.caKeyFile: .* does not match the certificate in caCertFile/);
    const cfg2 = await operatorConfig(t.dir, { caKey: 'ca-key.pem', root: 'ca-cert.pem' });
    const r2 = await runCli(['bundle', '--config', cfg2]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /authority\.internal\.rootCertFile: no certificate in .* issued/);
  } finally {
    await t.cleanup();
  }
});
