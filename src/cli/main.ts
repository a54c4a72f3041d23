import { parseArgs, type ParseArgsConfig } from 'node:util';
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { ConfigError, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { CaError, errorMessage } from '../util/errors.js';
import { formatDuration, parseDurationSeconds } from '../util/duration.js';
import { SystemClock } from '../util/clock.js';
import { createLogger } from '../telemetry/logger.js';
import { writeFileAtomic } from '../store/file-store.js';
import { signingCaLifetime } from '../../providers/index.js';
import { coveredTtlSeconds } from '../authority/rotation.js';

const USAGE = `meshca — a pluggable certificate authority for service meshes

Usage:
  meshca serve   [--config FILE]                 run the CA (gRPC SDS/Istio/controller API, ops HTTP)
  meshca issue   [--config FILE] --spiffe-id ID [--ttl D] [--dns NAME]... [--ip ADDR]...
                 [--key-type ec-p256|ec-p384|rsa-2048|rsa-3072|ed25519] --out DIR
                                                 mint an identity: DIR/cert.pem, DIR/key.pem (0600), DIR/bundle.pem
  meshca bundle  [--config FILE] [--format pem|jwks]   print the trust bundle on stdout
  meshca inspect FILE [--trust-domain TD]        describe a PEM chain and flag X.509-SVID problems
  meshca rotate  [--config FILE] [--root]        rotate the signing CA now (and the root with --root);
                                                 a running server re-issues every leaf
  meshca version

The config file may also be given as $MESHCA_CONFIG; with neither, embedded defaults are used.
Exit codes: 0 ok, 1 runtime error, 2 bad usage or bad configuration.`;

class UsageError extends Error {}

type Values = Record<string, string | boolean | string[] | boolean[] | undefined>;

/** Strict argument parsing; every command also takes --config and --help. Bad flags are usage errors (exit 2). */
function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>, allowPositionals = false): { values: Values; positionals: string[] } {
  try {
    const r = parseArgs({ args, options: { ...options, config: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, allowPositionals, strict: true });
    return { values: r.values as Values, positionals: r.positionals };
  } catch (e) {
    throw new UsageError(errorMessage(e));
  }
}

function config(file: string | undefined): Config {
  return loadConfig(file).config;
}

/**
 * A reader that closes stdout early (`meshca bundle | head -c1`, `meshca --help | true`) is not a failure of the
 * command: what is left of the output is dropped, and the command finishes as usual (so a one-shot command still
 * closes the CA and releases the state lock) and exits quietly. Any other stdout error fails the command.
 */
function dropOutputWhenReaderLeaves(): void {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    // EPIPE: the reader closed the pipe; ERR_STREAM_DESTROYED: a later write to the stdout that EPIPE destroyed.
    if (e.code === 'EPIPE' || e.code === 'ERR_STREAM_DESTROYED') return;
    process.stderr.write(`meshca: cannot write to stdout: ${errorMessage(e)}\n`);
    process.exit(1);
  });
}

export async function main(argv: string[]): Promise<void> {
  dropOutputWhenReaderLeaves();
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'serve':
        return await serve(rest);
      case 'issue':
        return await issue(rest);
      case 'bundle':
        return await bundle(rest);
      case 'inspect':
        return await inspect(rest);
      case 'rotate':
        return await rotate(rest);
      case 'version':
      case '--version': {
        // Like every command: strict flags, and --help prints the usage rather than doing the command.
        const { values } = parse(rest, {});
        if (values.help) return void process.stdout.write(USAGE + '\n');
        process.stdout.write(`meshca ${await version()}\n`);
        return;
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE + '\n');
        return;
      default:
        throw new UsageError(`unknown command "${cmd}"`);
    }
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`meshca: ${e.message}\n`);
      process.exit(2);
    }
    if (e instanceof UsageError) {
      process.stderr.write(`meshca: ${e.message}\n\n${USAGE}\n`);
      process.exit(2);
    }
    if (e instanceof CaError && e.code === 'INVALID_ARGUMENT') {
      process.stderr.write(`meshca: ${e.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`meshca: ${errorMessage(e)}\n`);
    process.exit(1);
  }
}

async function version(): Promise<string> {
  const pkg = JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function serve(args: string[]): Promise<void> {
  const { values } = parse(args, {});
  if (values.help) return void process.stdout.write(USAGE + '\n');
  const cfg = config(values.config as string | undefined);
  const { runServe } = await import('../main.js');
  await runServe(cfg);
}

/** One-shot commands share the CA state with a running server through the store lock. */
async function withCore<T>(cfg: Config, fn: (core: import('../core.js').Core) => Promise<T>): Promise<T> {
  const { openCore } = await import('../core.js');
  const log = createLogger(cfg.log.level === 'info' ? 'warn' : cfg.log.level);
  const core = await openCore(cfg, { log, clock: new SystemClock(), workers: 0 });
  try {
    return await fn(core);
  } finally {
    await core.close();
  }
}

async function issue(args: string[]): Promise<void> {
  const { values } = parse(args, {
    'spiffe-id': { type: 'string' },
    ttl: { type: 'string' },
    dns: { type: 'string', multiple: true },
    ip: { type: 'string', multiple: true },
    out: { type: 'string' },
    'key-type': { type: 'string' },
  });
  if (values.help) return void process.stdout.write(USAGE + '\n');
  if (!values['spiffe-id']) throw new UsageError('issue: --spiffe-id is required');
  if (!values.out) throw new UsageError('issue: --out DIR is required');
  const cfg = config(values.config as string | undefined);
  const { parseWorkloadId } = await import('../identity/spiffe-id.js');
  const id = parseWorkloadId(values['spiffe-id'] as string, cfg.trustDomain);
  const { reservedPatternOf } = await import('../identity/authorization.js');
  const reserved = reservedPatternOf(id.uri, cfg.trustDomain, cfg.server.bundleEndpoint?.spiffeId);
  if (reserved !== undefined) {
    throw new CaError('INVALID_ARGUMENT', `issue: ${id.uri} is reserved for meshca itself (${reserved}): meshca issues and rotates its own serving identity`);
  }
  const ttl = values.ttl !== undefined ? parseDurationSeconds(values.ttl as string, '--ttl') : undefined;
  // The same floor as workload.ttl: a shorter leaf would expire before a proxy could use it (notBefore is backdated).
  if (ttl !== undefined && ttl < 10) throw new UsageError(`issue: --ttl ${String(values.ttl)} is shorter than the minimum 10s`);
  const keyType = values['key-type'] as string | undefined;
  const { KEY_TYPES } = await import('../x509/types.js');
  if (keyType !== undefined && !(KEY_TYPES as readonly string[]).includes(keyType)) {
    throw new UsageError(`issue: --key-type must be one of ${KEY_TYPES.join(', ')}`);
  }
  const outDir = resolve(values.out as string);
  await withCore(cfg, async (core) => {
    const issuedAtMs = Date.now();
    const svid = await core.authority.issue({
      spiffeId: id.uri,
      dnsNames: (values.dns as string[] | undefined) ?? [],
      ipAddresses: (values.ip as string[] | undefined) ?? [],
      ...(ttl !== undefined ? { ttlSeconds: ttl } : {}),
      ...(keyType ? { keyType: keyType as (typeof KEY_TYPES)[number] } : {}),
      source: 'cli',
    });
    await mkdir(outDir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(join(outDir, 'key.pem'), svid.privateKeyPem!, 0o600);
    await writeFileAtomic(join(outDir, 'cert.pem'), svid.chainPem, 0o644);
    await writeFileAtomic(join(outDir, 'bundle.pem'), core.authority.bundle().pem, 0o644);
    process.stdout.write(
      `issued ${svid.spiffeId} (serial ${svid.serialHex}, expires ${svid.notAfter.toISOString()})\n` +
        `  ${join(outDir, 'cert.pem')}\n  ${join(outDir, 'key.pem')}\n  ${join(outDir, 'bundle.pem')}\n`,
    );
    const short = shortLeafWarning(svid.chainDer, issuedAtMs, ttl ?? cfg.workload.ttl, cfg);
    if (short) process.stderr.write(`meshca: warning: ${short}\n`);
  });
}

/**
 * Why a leaf is shorter than asked for, or undefined when it got the full lifetime. Leaves never outlive their
 * signing CA, so a CA near the end of its life cuts them short; issue still succeeds (the leaf is valid), but the
 * operator who asked for --ttl must hear it. Lifetime is the certificate's notAfter (whole seconds) minus the time
 * the request was made, so up to 1 s of truncation is not a shortfall.
 */
function shortLeafWarning(chainDer: readonly Buffer[], issuedAtMs: number, requestedSeconds: number, cfg: Config): string | undefined {
  const leafNotAfterMs = Date.parse(new X509Certificate(chainDer[0]!).validTo);
  const gotSeconds = Math.floor((leafNotAfterMs - issuedAtMs) / 1000);
  if (gotSeconds >= requestedSeconds - 1) return undefined;
  const what = `the leaf lives ${formatDuration(gotSeconds)}, not the ${formatDuration(requestedSeconds)} asked for`;
  const issuer = chainDer[1] ? new X509Certificate(chainDer[1]) : undefined;
  const caNotAfterMs = issuer ? Date.parse(issuer.validTo) : undefined;
  if (caNotAfterMs === undefined || leafNotAfterMs < caNotAfterMs) return `${what}: the ${cfg.authority.type} backend signed it for less`;
  const ca = signingCaLifetime(cfg.authority);
  const hint = ca.held
    ? `a lifetime up to 1/6 of ${ca.key} (${formatDuration(coveredTtlSeconds(ca.seconds))}) is always issued in full`
    : 'the backend\'s CA is near the end of its life';
  return `${what}: its signing CA expires at ${new Date(caNotAfterMs).toISOString()} (${hint})`;
}

async function bundle(args: string[]): Promise<void> {
  const { values } = parse(args, { format: { type: 'string', default: 'pem' } });
  if (values.help) return void process.stdout.write(USAGE + '\n');
  const format = values.format as string;
  if (format !== 'pem' && format !== 'jwks') throw new UsageError(`bundle: --format must be pem or jwks (got "${format}")`);
  const cfg = config(values.config as string | undefined);
  await withCore(cfg, async (core) => {
    const b = core.authority.bundle();
    if (format === 'pem') {
      process.stdout.write(b.pem);
    } else {
      const { bundleToJwks } = await import('../bundle/jwks.js');
      // The same spiffe_refresh_hint as the bundle endpoint and bundle.files serve.
      process.stdout.write(JSON.stringify(bundleToJwks(b, cfg.server.bundleEndpoint?.refreshHint ?? 300), null, 2) + '\n');
    }
  });
}

async function inspect(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { 'trust-domain': { type: 'string' } }, true);
  if (values.help) return void process.stdout.write(USAGE + '\n');
  if (positionals.length !== 1) throw new UsageError('inspect: give exactly one PEM file');
  let text: string;
  try {
    text = await readFile(positionals[0]!, 'utf8');
  } catch (e) {
    throw new CaError('INVALID_ARGUMENT', `inspect: cannot read ${positionals[0]}: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`);
  }
  const { inspectChain } = await import('../x509/inspect.js');
  const td = values['trust-domain'] as string | undefined;
  let report: string;
  try {
    report = inspectChain(text, td ? { trustDomain: td } : {});
  } catch (e) {
    if (e instanceof CaError && e.code === 'INVALID_ARGUMENT') throw new CaError('INVALID_ARGUMENT', `inspect: ${positionals[0]}: ${e.message}`);
    throw e;
  }
  process.stdout.write(report + '\n');
}

async function rotate(args: string[]): Promise<void> {
  const { values } = parse(args, { root: { type: 'boolean', default: false } });
  if (values.help) return void process.stdout.write(USAGE + '\n');
  const cfg = config(values.config as string | undefined);
  await withCore(cfg, async (core) => {
    await core.authority.rotate({ root: values.root === true });
    const a = core.authority.activeSigningCa();
    process.stdout.write(
      `rotated: signing CA generation ${a?.generation ?? '-'}, bundle sequence ${core.authority.bundle().sequence}; a running meshca re-issues every leaf within seconds\n`,
    );
  });
}
