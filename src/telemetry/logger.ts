import { pino, type Logger } from 'pino';

/**
 * Paths that must never reach a log line even if someone passes the object by mistake. Private keys, tokens and
 * CSRs are also never put into log fields on purpose (tests assert it).
 */
export const REDACT_PATHS = [
  'key',
  'privateKey',
  'privateKeyPem',
  'private_key',
  'keyPem',
  'token',
  'secretId',
  'secret_id',
  'clientToken',
  'client_token',
  'authorization',
  'csr',
  'csrPem',
  '*.privateKey',
  '*.privateKeyPem',
  '*.private_key',
  '*.keyPem',
  '*.token',
  '*.secretId',
  '*.authorization',
  'headers.authorization',
  'headers["x-vault-token"]',
];

/** JSON-lines logger on stderr (stdout is reserved for command output such as `meshca bundle`). */
export function createLogger(level: string, destination: NodeJS.WritableStream | number = 2): Logger {
  const dest = typeof destination === 'number' ? pino.destination({ fd: destination, sync: true }) : destination;
  return pino(
    {
      level,
      base: { svc: 'meshca' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    dest as pino.DestinationStream,
  );
}
