import { createServer, type Server } from 'node:http';
import { connectKube, loadKubeModule, type Kube } from '../../src/kube/client.js';

/**
 * A stalled Kubernetes API server (or a proxy in front of it) accepts requests and never answers. client-node 1.x
 * has no request timeout of its own, so every meshca request must carry a deadline, or whatever waits on it (a
 * rotation, a Lease renewal, a shutdown) waits until TCP gives up.
 */
export async function hungApiServer(): Promise<{ server: Server; port: number; requests: string[]; closed: () => number }> {
  const requests: string[] = [];
  let closed = 0;
  const server = createServer((req) => {
    requests.push(`${req.method} ${req.url}`);
    req.socket.on('close', () => closed++);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port, requests, closed: () => closed };
}

export async function kubeFor(port: number, requestTimeoutMs?: number): Promise<Kube> {
  const k8s = await loadKubeModule();
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'meshca-sa-token' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return connectKube({ component: 'test', kubeConfig: kc, ...(requestTimeoutMs !== undefined ? { requestTimeoutMs } : {}) });
}

