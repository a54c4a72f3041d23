import { X509Certificate } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Authority, IssuedSvid } from '../../authority/types.js';
import type { Caller } from '../../auth/types.js';
import { grantedTtl, type Authorizer } from '../../identity/authorization.js';
import { parseWorkloadId } from '../../identity/spiffe-id.js';
import { counter } from '../../telemetry/metrics.js';
import { certPem } from '../../bundle/pem.js';
import { CaError, errorMessage, invalidArgument, permissionDenied } from '../../util/errors.js';
import { clampInt64Seconds, formatDuration } from '../../util/duration.js';
import type { AnyServerCall } from '../call-auth.js';
import { toServiceError } from '../status.js';
import { AuditLog } from '../controller/audit.js';
import { checkCsr } from '../controller/csr-checks.js';
import { ISTIO_CA_SERVICE, serviceDefinition } from '../controller/proto.js';

/** Anything services can be added to: a grpc-js Server or meshca's GrpcServer. */
export interface AnyGrpcServer {
  addService(def: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): void;
}

export interface IstioServiceDeps {
  readonly authority: Authority;
  readonly authorizer: Authorizer;
  /** mTLS peer (or Bearer token, when a token authenticator is configured); rejects with UNAUTHENTICATED. */
  readonly authenticate: (call: AnyServerCall) => Promise<Caller>;
  readonly log: Logger;
  readonly metrics: Registry;
  /** workload.ttl (default for validity_duration <= 0) and workload.maxTtl (above it: INVALID_ARGUMENT). */
  readonly workload: { readonly ttlSeconds: number; readonly maxTtlSeconds: number };
}

/**
 * google.protobuf.Value as decoded: protobufjs's bundled well-known types use camelCase names (stringValue) even with
 * keepCase, so both spellings are read.
 */
interface StructValue {
  kind?: string;
  stringValue?: string;
  string_value?: string;
}

interface ProtoIstioRequest {
  csr?: string;
  validity_duration?: string | number;
  metadata?: { fields?: Record<string, StructValue> } | null;
}

/** Istio's metadata key naming the identity a trusted node agent (ztunnel) asks for on a workload's behalf. */
export const IMPERSONATED_IDENTITY = 'ImpersonatedIdentity';

/**
 * leaf, intermediates, then the trust anchor that signed the last of them: one PEM certificate per element, each
 * ending in "\n" (istiod's format; the istio-agent takes the last element as the root and rejects <= 1 entries).
 */
export function istioCertChain(svid: IssuedSvid, rootsDer: readonly Buffer[]): string[] {
  const chain = svid.chainDer.map(certPem);
  const last = new X509Certificate(svid.chainDer[svid.chainDer.length - 1]!);
  const root = rootsDer.find((r) => {
    const x = new X509Certificate(r);
    return last.checkIssued(x) && last.verify(x.publicKey);
  });
  if (!root) throw new CaError('INTERNAL', 'the issued chain does not lead to a root of the current trust bundle');
  return [...chain, certPem(root)];
}

/**
 * istio.v1.auth.IstioCertificateService/CreateCertificate (protocols.md §5), so unchanged istio-agents can use meshca:
 * - the caller is authenticated by its mTLS client certificate (or a Bearer token when configured): UNAUTHENTICATED
 *   otherwise;
 * - the CSR's signature is verified and its key used; a CA request, several URI SANs, a non-SPIFFE URI or a foreign
 *   trust domain is INVALID_ARGUMENT. DNS/IP/e-mail SANs are ignored, as istiod does;
 * - the identity is the CSR's URI SAN, or the caller's own ID when the CSR has none (istio-agent CSRs carry it), or
 *   metadata ImpersonatedIdentity. Another identity than the caller's is PERMISSION_DENIED unless
 *   authorization.controllers allows the caller that identity; every decision is audited;
 * - validity_duration <= 0 means workload.ttl (capped at the controller's maxTtl); a longer request than
 *   workload.maxTtl (or the controller's maxTtl) is clamped to it, as issue #4 asks ("honoured up to the policy
 *   maximum") and cert-manager istio-csr does; a CA that is not ready or cannot sign is INTERNAL, like istiod
 *   (protocols.md §5);
 * - the answer is cert_chain = leaf, intermediates, root (one PEM certificate per element).
 */
export function istioServiceHandlers(deps: IstioServiceDeps): grpc.UntypedServiceImplementation {
  const audit = new AuditLog(deps.log, deps.metrics, ['IstioCertificateService.CreateCertificate']);
  const requests = counter(deps.metrics, 'meshca_api_requests_total', 'Controller and Istio API calls by method and result code', ['method', 'code']);
  const log = deps.log.child({ component: 'istio-ca' });
  const td = deps.authority.trustDomain;

  const create = async (call: grpc.ServerUnaryCall<ProtoIstioRequest, unknown>): Promise<{ cert_chain: string[] }> => {
    const caller = await deps.authenticate(call as AnyServerCall);
    const req = call.request;
    if (!req.csr) throw invalidArgument('csr is required (a PEM PKCS#10 certificate request)');
    // The message names the PEM label without its dashes: log scanners look for PEM blocks, and this is not one.
    if (!req.csr.includes('-----BEGIN')) throw invalidArgument('csr must be PEM text (a "CERTIFICATE REQUEST" block)');
    const csr = await checkCsr(req.csr, td, deps.authority.parseCsr?.bind(deps.authority));
    const imp = req.metadata?.fields?.[IMPERSONATED_IDENTITY];
    let target = csr.spiffeId ?? caller.spiffeId;
    // istiod reads the key with GetStringValue() != "": an empty string is no impersonation. Another kind of value
    // (number, struct, ...) is refused rather than silently ignored, since the caller meant to impersonate someone.
    const value = imp === undefined ? undefined : imp.stringValue ?? imp.string_value;
    if (imp !== undefined && value !== '') {
      if (typeof value !== 'string') throw invalidArgument(`metadata ${IMPERSONATED_IDENTITY} must be a string value (a SPIFFE ID)`);
      let id: string;
      try {
        id = parseWorkloadId(value, td).uri;
      } catch (e) {
        if (e instanceof CaError) throw invalidArgument(`metadata ${IMPERSONATED_IDENTITY}: ${e.message}`);
        throw e;
      }
      if (csr.spiffeId !== undefined && csr.spiffeId !== id) {
        throw invalidArgument(`CSR URI SAN ${csr.spiffeId} does not match metadata ${IMPERSONATED_IDENTITY} ${id}`);
      }
      target = id;
    }
    const decision = deps.authorizer.decide({ caller, target, generateKey: false, channel: 'api' });
    audit.record({ caller, target, decision, api: 'IstioCertificateService.CreateCertificate', generateKey: false });
    if (!decision.allowed) throw permissionDenied(decision.reason);

    // validity_duration (int64 seconds) is honoured up to the policy maximum (issue #4): <= 0 means workload.ttl, a
    // longer request is clamped to the caller's cap rather than refused, so an unchanged istio-agent asking for its
    // SECRET_TTL still gets a certificate when meshca's policy is shorter (the agent renews from the cert's notAfter).
    const vd = clampInt64Seconds(req.validity_duration, 0, deps.workload.maxTtlSeconds + 1, 'validity_duration');
    const { ttl, cap } = grantedTtl(vd, decision, deps.workload);
    if (vd > cap) {
      log.info({ caller: caller.spiffeId, target, requested: String(req.validity_duration), granted: formatDuration(ttl) }, 'validity_duration capped by policy');
    }
    let svid: IssuedSvid;
    try {
      svid = await deps.authority.issue({ spiffeId: target, ttlSeconds: ttl, publicKey: csr.publicKey, csrDer: csr.der, source: 'istio' });
    } catch (e) {
      // istiod: a CA that is not ready or cannot sign is INTERNAL; only request errors stay INVALID_ARGUMENT.
      if (e instanceof CaError && e.code === 'INVALID_ARGUMENT') throw e;
      throw new CaError('INTERNAL', `CSR signing error (${e instanceof CaError ? e.message : 'internal error'})`, { cause: e });
    }
    return { cert_chain: istioCertChain(svid, deps.authority.bundle().rootsDer) };
  };

  return {
    CreateCertificate: (call: grpc.ServerUnaryCall<ProtoIstioRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      create(call).then(
        (res) => {
          requests.inc({ method: 'CreateCertificate', code: 'OK' });
          cb(null, res);
        },
        (e: unknown) => {
          requests.inc({ method: 'CreateCertificate', code: e instanceof CaError ? e.code : 'INTERNAL' });
          if (!(e instanceof CaError) || e.code === 'INTERNAL') log.error({ err: errorMessage(e) }, 'CreateCertificate failed');
          else log.info({ code: e.code, err: e.message }, 'CreateCertificate refused');
          cb(toServiceError(e));
        },
      );
    },
  };
}

/** Registers istio.v1.auth.IstioCertificateService on a gRPC server (before it starts). */
export function registerIstioService(server: AnyGrpcServer, deps: IstioServiceDeps): void {
  server.addService(serviceDefinition(ISTIO_CA_SERVICE), istioServiceHandlers(deps));
}
