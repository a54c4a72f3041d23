import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { REPO_ROOT, startServe, tempDir, writeTestConfig } from '../support/cli.js';

/**
 * TLS 1.3 session tickets from `meshca serve`'s gRPC listener. SSL_OP_NO_TICKET alone still lets OpenSSL send two
 * (stateful, never resumable under Node) tickets per handshake; examples/tuning/openssl.cnf turns them off, and the
 * README tells operators to load it. Both halves are checked so that the file's effect is measured, not assumed.
 */
const TUNING = join(REPO_ROOT, 'examples', 'tuning', 'openssl.cnf');

/** TLS 1.3 handshake with the server (no client certificate), then counts the session tickets that arrive. */
function ticketsFrom(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let tickets = 0;
    const s = connect({ host: '127.0.0.1', port, ALPNProtocols: ['h2'], rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(tickets);
    }, 600); // tickets follow the handshake at once; the server's HTTP/2 SETTINGS keep the socket reading
    s.on('session', () => tickets++);
    s.on('data', () => {});
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Starts `meshca serve` with `env`, counts the tickets of one handshake, stops it. */
async function ticketsFromServe(cfg: string, env: NodeJS.ProcessEnv): Promise<number> {
  const s = await startServe(cfg, { env });
  try {
    return await ticketsFrom(s.grpcPort!);
  } finally {
    await s.stop();
  }
}

test('examples/tuning/openssl.cnf stops the TLS 1.3 session tickets that SSL_OP_NO_TICKET alone does not', { timeout: 60_000 }, async () => {
  const t = await tempDir();
  try {
    const cfg = await writeTestConfig(t.dir);
    assert.equal(await ticketsFromServe(cfg, { OPENSSL_CONF: undefined }), 2, 'Node/OpenSSL default: two TLS 1.3 tickets per handshake despite SSL_OP_NO_TICKET');
    assert.equal(await ticketsFromServe(cfg, { OPENSSL_CONF: TUNING }), 0, 'OPENSSL_CONF=examples/tuning/openssl.cnf: no tickets');
  } finally {
    await t.cleanup();
  }
});
