/** Splits a listen address "host:port", "[v6]:port" or ":port" (host defaults to all interfaces). */
export function splitHostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  let host = address.slice(0, i);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host: host || '0.0.0.0', port: Number(address.slice(i + 1)) };
}
