/**
 * Small wire-level facts shared by the backend and the token manager: the headers every Vault request carries and
 * how a `sys/health` answer is read.
 */

/**
 * Headers for one Vault request: `X-Vault-Request: true` (sent by every official Vault client; Vault Agent and Vault
 * Proxy listeners with `require_request_header` refuse requests without it, 412) and the token when there is one.
 * A fresh object per call: node-vault writes X-Vault-Namespace into the headers object it is given, so a shared one
 * could carry a token into another request.
 */
export function vaultHeaders(token?: string): Record<string, string> {
  return token ? { 'X-Vault-Request': 'true', 'X-Vault-Token': token } : { 'X-Vault-Request': 'true' };
}

/**
 * `GET sys/health` with standby and performance-standby nodes answering 200 (they forward requests). node-vault
 * resolves every sys/health status with the body, so the body alone decides.
 */
export const HEALTH_PATH = 'sys/health?standbyok=true&perfstandbyok=true';

/**
 * Why Vault cannot serve meshca according to a sys/health body, or undefined when it can. Vault's order: an
 * uninitialised server (501) also reports sealed:true, so it is checked first; then sealed (503); then a DR secondary
 * (472), which serves no API requests. Standby and performance standby nodes forward, so they count as serving. A
 * body without Vault's boolean `initialized` and `sealed` fields (a proxy's error page, another server) is a
 * problem, not a healthy answer.
 */
export function healthProblem(body: unknown): string | undefined {
  const b = (body !== null && typeof body === 'object' ? body : {}) as Record<string, unknown>;
  if (typeof b.initialized !== 'boolean' || typeof b.sealed !== 'boolean') {
    return 'vault: sys/health answered without Vault\'s health fields (initialized, sealed); check that authority.vault.address reaches Vault, not a proxy error page';
  }
  if (!b.initialized) return 'vault: not initialized';
  if (b.sealed) return 'vault: sealed';
  if (typeof b.replication_dr_mode === 'string' && b.replication_dr_mode.startsWith('secondary')) {
    return 'vault: DR secondary (472): it serves no API requests; point authority.vault.address at the primary cluster';
  }
  return undefined;
}
