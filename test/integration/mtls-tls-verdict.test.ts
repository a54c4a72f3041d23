import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startHarness, type Harness } from '../support/sds-harness.js';

const CONTROLLER = 'spiffe://example.org/mesh/controller';

/**
 * A bootstrap CA (server.grpc.clientCaFile) with two sub-CAs: one name-constrained to another trust domain (what an
 * operator hands a partner team), one unconstrained. Both issue a leaf claiming the controller's identity.
 */
async function makePki(dir: string): Promise<void> {
  await writeFile(
    join(dir, 'ext.cnf'),
    `[root]
basicConstraints=critical,CA:true
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
[constrained]
basicConstraints=critical,CA:true,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
nameConstraints=critical,permitted;URI:partner.example
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
[open]
basicConstraints=critical,CA:true,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
[leaf]
basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth,serverAuth
subjectAltName=critical,URI:${CONTROLLER}
authorityKeyIdentifier=keyid
`,
  );
  const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const key = (name: string) => ossl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`);
  key('root');
  ossl('req', '-new', '-x509', '-key', 'root.key', '-subj', '/CN=bootstrap root', '-days', '2', '-config', 'ext.cnf', '-extensions', 'root', '-out', 'root.pem');
  for (const sub of ['constrained', 'open']) {
    key(sub);
    ossl('req', '-new', '-key', `${sub}.key`, '-subj', `/CN=${sub} sub-CA`, '-config', 'ext.cnf', '-out', `${sub}.csr`);
    ossl('x509', '-req', '-in', `${sub}.csr`, '-CA', 'root.pem', '-CAkey', 'root.key', '-set_serial', '0x1001', '-days', '2', '-extfile', 'ext.cnf', '-extensions', sub, '-out', `${sub}.pem`);
    key(`${sub}-leaf`);
    ossl('req', '-new', '-key', `${sub}-leaf.key`, '-subj', '/', '-config', 'ext.cnf', '-out', `${sub}-leaf.csr`);
    ossl('x509', '-req', '-in', `${sub}-leaf.csr`, '-CA', `${sub}.pem`, '-CAkey', `${sub}.key`, '-set_serial', '0x2002', '-days', '1', '-extfile', 'ext.cnf', '-extensions', 'leaf', '-out', `${sub}-leaf.pem`);
  }
}

describe('mTLS: a chain the TLS layer refused is never accepted', { timeout: 60_000 }, () => {
  let h: Harness;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshca-tls-verdict-'));
    await makePki(dir);
    h = await startHarness({ clientCaFile: join(dir, 'root.pem') });
  });
  after(async () => {
    await h?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const client = async (sub: string) =>
    h.rawClient({
      certPem: (await readFile(join(dir, `${sub}-leaf.pem`), 'utf8')) + (await readFile(join(dir, `${sub}.pem`), 'utf8')),
      keyPem: await readFile(join(dir, `${sub}-leaf.key`), 'utf8'),
    });

  it('ok/a leaf from an unconstrained bootstrap sub-CA authenticates as its SPIFFE ID', async () => {
    const s = (await client('open')).streamSecrets();
    s.request(['ROOTCA']);
    const r = await s.next();
    assert.equal(r.secrets[0]!.name, 'ROOTCA');
    s.cancel();
  });

  it('fail/a leaf outside its sub-CA name constraints is UNAUTHENTICATED with the TLS reason, though its signatures are fine', async () => {
    const s = (await client('constrained')).streamSecrets();
    s.request(['ROOTCA']);
    const st = await s.status();
    assert.equal(st.code, grpc.status.UNAUTHENTICATED, `got ${st.code} ${st.details}`);
    assert.match(st.details, /the client certificate chain failed TLS verification \([A-Z_]+\)/);
    assert.ok((await h.metric('meshca_auth_failures_total', { reason: 'untrusted' })) >= 1);
  });
});

describe('server.grpc.clientCaFile', { timeout: 30_000 }, () => {
  it('fail/an intermediate CA in clientCaFile stops start, naming it (OpenSSL anchors client chains at self-signed roots)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshca-client-ca-'));
    try {
      await makePki(dir);
      await assert.rejects(startHarness({ clientCaFile: join(dir, 'open.pem') }), (e: Error) => {
        assert.match(e.message, /server\.grpc\.clientCaFile .*open\.pem: certificate 1 \("CN=open sub-CA"\) is not a self-signed root CA; list the root of the bootstrap certificates/);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
