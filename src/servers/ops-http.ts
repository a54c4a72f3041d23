import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { AuthorityHealth } from '../authority/types.js';

export interface OpsServerOptions {
  readonly host: string;
  readonly port: number;
  readonly metrics: Registry;
  /** Readiness: 200 only when ready; the body says why not (or what is degraded). */
  readonly health: () => AuthorityHealth;
}

/**
 * The operations endpoint: GET /healthz (the process is alive), GET /readyz (200 only when meshca can serve
 * identities), GET /metrics (Prometheus text format). Nothing here changes state.
 */
export async function startOpsServer(o: OpsServerOptions): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (url === '/readyz') {
      const h = o.health();
      const body = JSON.stringify({ ready: h.ready, ...(h.reason ? { reason: h.reason } : {}) }) + '\n';
      res.writeHead(h.ready ? 200 : 503, { 'content-type': 'application/json' }).end(body);
    } else if (url === '/metrics') {
      o.metrics.metrics().then(
        (text) => res.writeHead(200, { 'content-type': o.metrics.contentType }).end(text),
        (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${e.message}\n`),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : o.port;
  return {
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
