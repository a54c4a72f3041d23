/**
 * Replaces credential-shaped strings in a message meant for a person (stderr, a log line): Vault tokens (hvs./hvb./
 * hvr. and legacy s./b./r. service, batch and recovery tokens), JWTs (Kubernetes ServiceAccount tokens, OIDC) and
 * PEM private keys. For messages that echo input a user may have misplaced, such as a token pasted into the wrong
 * config key: the message stays useful (it still names the key and the rule) without carrying the secret.
 */
const PATTERNS: readonly RegExp[] = [
  /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)/g,
  /\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/g,
  /\bhv[sbr]\.[A-Za-z0-9_-]{20,}/g,
  /\b[sbr]\.[A-Za-z0-9]{24}\b/g,
];

export function redactCredentials(text: string): string {
  let out = text;
  for (const p of PATTERNS) out = out.replace(p, '[redacted]');
  return out;
}
