import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Authority, IssuedSvid } from '../../authority/types.js';
import type { Caller } from '../../auth/types.js';
import { grantedTtl, type Authorizer } from '../../identity/authorization.js';
import { parseWorkloadId } from '../../identity/spiffe-id.js';
import { counter } from '../../telemetry/metrics.js';
import type { BundleRegistry } from '../../bundle/registry.js';
import { CaError, errorMessage, invalidArgument, permissionDenied } from '../../util/errors.js';
import { clampInt64Seconds, formatDuration } from '../../util/duration.js';
import type { KeyType } from '../../x509/types.js';
import type { AnyServerCall } from '../call-auth.js';
import { toServiceError } from '../status.js';
import { AuditLog } from './audit.js';
import { toProtoBundle, type ProtoTrustBundle } from './bundle-service.js';
import { IDENTITY_SERVICE, serviceDefinition } from './proto.js';
import { checkCsr, type CheckedCsr } from './csr-checks.js';
import { answerBatch, batchEntryError } from './issue-batch.js';
import { showList } from '../../util/show-list.js';
import { isDnsName } from '../../x509/profile.js';

/** Dependencies of the controller API handlers (IdentityService, BundleService). */
export interface ControllerServiceDeps {
  readonly authority: Authority;
  readonly authorizer: Authorizer;
  /** Authenticates the caller of a call (src/servers/call-auth.ts callAuthenticator); rejects with UNAUTHENTICATED. */
  readonly authenticate: (call: AnyServerCall) => Promise<Caller>;
  readonly log: Logger;
  readonly metrics: Registry;
  /** Own and federated bundles (BundleService; the bundle returned with each issued certificate). */
  readonly bundles: BundleRegistry;
  /** workload.ttl and workload.maxTtl (seconds): the default lifetime and the hard cap for every caller. */
  readonly workload: { readonly ttlSeconds: number; readonly maxTtlSeconds: number };
  /** Largest IssueBatch; default 100. */
  readonly maxBatchSize?: number;
  /**
   * server.grpc.maxMessageBytes: the gRPC server's send limit, which an IssueBatch response is kept within (the
   * server refuses to send a larger one, failing the whole call after every certificate was minted).
   */
  readonly maxMessageBytes: number;
  /** Aborted when the server starts draining: open WatchBundle streams then end with UNAVAILABLE. */
  readonly draining?: AbortSignal;
}

/** IssueRequest as @grpc/proto-loader decodes it (keepCase, longs as strings, enums as names, oneofs). */
export interface ProtoIssueRequest {
  spiffe_id?: string;
  csr?: 'csr_pem' | 'csr_der';
  csr_pem?: string;
  csr_der?: Buffer;
  dns_names?: string[];
  ttl_seconds?: string | number;
  key_type?: string;
}

interface ProtoTimestamp {
  seconds: number;
  nanos: number;
}

/** IssueBatchResult as the handler answers it (the `result` oneof is whichever of certificate / error is set). */
export interface ProtoIssueBatchResult {
  spiffe_id: string;
  certificate?: ProtoIssueResponse;
  error?: { code: number; message: string; details: never[] };
}

export interface ProtoIssueResponse {
  spiffe_id: string;
  cert_chain_der: Buffer[];
  cert_chain_pem: string;
  private_key_pem: string;
  bundle: ProtoTrustBundle;
  not_before: ProtoTimestamp;
  not_after: ProtoTimestamp;
  ttl_seconds: number;
  serial_number: string;
}

const KEY_TYPES: Record<string, KeyType | undefined> = {
  KEY_TYPE_UNSPECIFIED: undefined,
  KEY_TYPE_EC_P256: 'ec-p256',
  KEY_TYPE_EC_P384: 'ec-p384',
  KEY_TYPE_RSA_2048: 'rsa-2048',
  KEY_TYPE_RSA_3072: 'rsa-3072',
  KEY_TYPE_ED25519: 'ed25519',
};

export const DEFAULT_MAX_BATCH = 100;

/**
 * Bytes one IssueBatchResult adds to an encoded IssueBatchResponse, with the serializer grpc-js sends it with: a
 * response of only that result is its `results` field (tag, length, message), and the response has no other field,
 * so the sizes of its results add up to the size of the response exactly.
 */
function batchResultSize(result: ProtoIssueBatchResult): number {
  return serializeBatchResponse({ results: [result] }).length;
}

let serializeBatchResponseFn: ((value: unknown) => Buffer) | undefined;
function serializeBatchResponse(value: { results: ProtoIssueBatchResult[] }): Buffer {
  serializeBatchResponseFn ??= serviceDefinition(IDENTITY_SERVICE).IssueBatch!.responseSerialize;
  return serializeBatchResponseFn(value);
}

function timestamp(d: Date): ProtoTimestamp {
  const ms = d.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const sa = new Set(a.map((x) => x.toLowerCase()));
  const sb = new Set(b.map((x) => x.toLowerCase()));
  return sa.size === sb.size && [...sa].every((x) => sb.has(x));
}

/**
 * ttl_seconds (int64): negative is INVALID_ARGUMENT; any larger value, up to 2^63-1, is a request for "as long as
 * policy allows" and is capped later, so it is clamped here to a number that stays exact (one day above the hard cap).
 */
function parseTtl(v: string | number | undefined, maxTtlSeconds: number): number {
  const n = clampInt64Seconds(v, -1, maxTtlSeconds + 86400, 'ttl_seconds');
  if (n < 0) throw invalidArgument(`ttl_seconds must not be negative (got ${String(v)})`);
  return n;
}

/** An Issue request that was validated and authorised, with its granted TTL: what mintIssue() signs. */
export interface PreparedIssue {
  readonly target: string;
  readonly dnsNames: readonly string[];
  readonly ttl: number;
  readonly csr: CheckedCsr | undefined;
  readonly keyType: KeyType | undefined;
}

/**
 * One Issue request, for an authenticated caller: validate (SPIFFE ID, CSR, TTL, key type), authorise (audited),
 * cap the TTL, issue. Throws CaError; the caller maps it to a status.
 */
export async function issueOne(deps: ControllerServiceDeps, audit: AuditLog, caller: Caller, req: ProtoIssueRequest, api: string): Promise<ProtoIssueResponse> {
  return mintIssue(deps, await prepareIssue(deps, audit, caller, req, api));
}

/** The checks of issueOne() without the signing: validate, authorise (audited), cap the TTL. Throws CaError. */
export async function prepareIssue(deps: ControllerServiceDeps, audit: AuditLog, caller: Caller, req: ProtoIssueRequest, api: string): Promise<PreparedIssue> {
  const td = deps.authority.trustDomain;
  if (!req.spiffe_id) throw invalidArgument('spiffe_id is required');
  const target = parseWorkloadId(req.spiffe_id, td).uri;
  const csrInput = req.csr === 'csr_pem' ? req.csr_pem ?? '' : req.csr === 'csr_der' ? req.csr_der ?? Buffer.alloc(0) : undefined;
  const csr = csrInput !== undefined ? await checkCsr(csrInput, td, deps.authority.parseCsr?.bind(deps.authority)) : undefined;
  if (csr) {
    const others = [...csr.ipAddresses.map((ip) => `IP:${ip}`), ...csr.emails.map((e) => `email:${e}`)];
    if (others.length > 0) {
      throw invalidArgument(`CSR carries SANs meshca never certifies (${others.join(', ')}); an X509-SVID names the SPIFFE ID and optional DNS names only`);
    }
    if (csr.spiffeId === undefined) throw invalidArgument(`CSR has no URI SAN; it must carry the requested identity ${target}`);
    if (csr.spiffeId !== target) throw invalidArgument(`CSR URI SAN ${csr.spiffeId} does not match requested identity ${target}`);
  }
  const ttlRequested = parseTtl(req.ttl_seconds, deps.workload.maxTtlSeconds);
  const keyName = req.key_type ?? 'KEY_TYPE_UNSPECIFIED';
  if (!(keyName in KEY_TYPES)) throw invalidArgument(`key_type ${keyName} is not supported`);
  const keyType = KEY_TYPES[keyName];
  if (csr && keyType !== undefined) throw invalidArgument('key_type applies only when meshca generates the key (no CSR)');
  const reqDns = req.dns_names ?? [];
  let dnsNames: readonly string[] = reqDns;
  if (csr && csr.dnsNames.length > 0) {
    if (reqDns.length === 0) dnsNames = csr.dnsNames;
    else if (!sameSet(reqDns, csr.dnsNames)) {
      throw invalidArgument(`dns_names [${reqDns.join(', ')}] differ from the CSR's DNS SANs [${csr.dnsNames.join(', ')}]`);
    }
  }

  // Malformed names are the caller's bug (INVALID_ARGUMENT), whoever may or may not have them.
  const badDns = dnsNames.filter((d) => !isDnsName(d));
  if (badDns.length > 0) throw invalidArgument(`invalid DNS name${badDns.length > 1 ? 's' : ''} ${showList(badDns)}`);
  const generateKey = csr === undefined;
  const decision = deps.authorizer.decide({ caller, target, generateKey, channel: 'api', dnsNames });
  audit.record({ caller, target, decision, api, generateKey, dnsNames });
  if (!decision.allowed) throw permissionDenied(decision.reason);

  const { ttl, cap } = grantedTtl(ttlRequested, decision, deps.workload);
  if (ttlRequested > cap) {
    deps.log.debug({ caller: caller.spiffeId, target, requested: formatDuration(ttlRequested), granted: formatDuration(ttl) }, 'ttl capped by policy');
  }
  return { target, dnsNames, ttl, csr, keyType };
}

/** Signs a prepared request. Throws CaError (UNAVAILABLE while the CA cannot sign). */
export async function mintIssue(deps: ControllerServiceDeps, p: PreparedIssue): Promise<ProtoIssueResponse> {
  const { target, dnsNames, ttl, csr, keyType } = p;
  const svid: IssuedSvid = await deps.authority.issue({
    spiffeId: target,
    dnsNames,
    ttlSeconds: ttl,
    source: 'api',
    ...(csr ? { publicKey: csr.publicKey, csrDer: csr.der } : {}),
    ...(keyType ? { keyType } : {}),
  });
  return {
    spiffe_id: svid.spiffeId,
    cert_chain_der: [...svid.chainDer],
    cert_chain_pem: svid.chainPem,
    private_key_pem: svid.privateKeyPem ?? '',
    bundle: toProtoBundle(deps.bundles.own()),
    not_before: timestamp(svid.notBefore),
    not_after: timestamp(svid.notAfter),
    // The ttl granted (requested, capped by policy), not notAfter - notBefore, which adds the workload.backdate of
    // notBefore; less only when the signing CA ends sooner and clamped notAfter.
    ttl_seconds: Math.min(ttl, Math.round((svid.notAfter.getTime() - svid.notBefore.getTime()) / 1000)),
    serial_number: svid.serialHex.toLowerCase(),
  };
}

/**
 * meshca.v1.IdentityService handlers. Every failure is a status with a message naming what was wrong (mapping in
 * src/servers/status.ts); internal errors are logged and returned as INTERNAL without detail.
 */
export function identityServiceHandlers(deps: ControllerServiceDeps): grpc.UntypedServiceImplementation {
  const audit = new AuditLog(deps.log, deps.metrics, ['IdentityService.Issue', 'IdentityService.IssueBatch']);
  const requests = counter(deps.metrics, 'meshca_api_requests_total', 'Controller and Istio API calls by method and result code', ['method', 'code']);
  const log = deps.log.child({ component: 'identity-service' });
  const maxBatch = deps.maxBatchSize ?? DEFAULT_MAX_BATCH;
  const fail = (method: string, e: unknown): Error => {
    const err = toServiceError(e);
    requests.inc({ method, code: e instanceof CaError ? e.code : 'INTERNAL' });
    if (!(e instanceof CaError) || e.code === 'INTERNAL') log.error({ method, err: errorMessage(e) }, 'request failed');
    else log.info({ method, code: e.code, err: e.message }, 'request refused');
    return err;
  };
  return {
    Issue: (call: grpc.ServerUnaryCall<ProtoIssueRequest, ProtoIssueResponse>, cb: grpc.sendUnaryData<ProtoIssueResponse>) => {
      void (async () => {
        try {
          const caller = await deps.authenticate(call as AnyServerCall);
          const res = await issueOne(deps, audit, caller, call.request, 'IdentityService.Issue');
          requests.inc({ method: 'Issue', code: 'OK' });
          cb(null, res);
        } catch (e) {
          cb(fail('Issue', e));
        }
      })();
    },
    IssueBatch: (call: grpc.ServerUnaryCall<{ requests?: ProtoIssueRequest[] }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      void (async () => {
        try {
          const caller = await deps.authenticate(call as AnyServerCall);
          const list = call.request.requests ?? [];
          if (list.length === 0) throw invalidArgument('requests is empty');
          if (list.length > maxBatch) throw invalidArgument(`batch of ${list.length} requests is larger than the maximum ${maxBatch}`);
          const entryError = (r: ProtoIssueRequest, e: unknown) => {
            if (!(e instanceof CaError) || e.code === 'INTERNAL') log.error({ method: 'IssueBatch', target: r.spiffe_id, err: errorMessage(e) }, 'batch entry failed');
            return batchEntryError(r, e);
          };
          const results = await answerBatch({
            requests: list,
            prepare: (r) => prepareIssue(deps, audit, caller, r, 'IdentityService.IssueBatch'),
            mint: (p) => mintIssue(deps, p),
            entryError,
            encodedSize: batchResultSize,
            maxMessageBytes: deps.maxMessageBytes,
            log,
          });
          // answerBatch kept the encoded response within the server's send limit, so OK is the status sent.
          requests.inc({ method: 'IssueBatch', code: 'OK' });
          cb(null, { results });
        } catch (e) {
          cb(fail('IssueBatch', e));
        }
      })();
    },
  };
}
