import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Caller } from '../../auth/types.js';
import type { AuthzDecision } from '../../identity/authorization.js';
import { counter } from '../../telemetry/metrics.js';

export interface AuditRecord {
  readonly caller: Caller;
  readonly target: string;
  readonly decision: AuthzDecision;
  /** Which API asked: "IdentityService.Issue", "IstioCertificateService.CreateCertificate", ... */
  readonly api: string;
  readonly generateKey: boolean;
  /** DNS SANs requested (logged when there are any). */
  readonly dnsNames?: readonly string[];
}

/**
 * The audit log: one line per authorisation decision, on the pino child logger `audit` (field `logger: "audit"`),
 * with caller, target, decision (allow|deny), reason (rule for allows), via (how the caller authenticated), api.
 * Denials are at warn, allows at info. Counted in meshca_authz_decisions_total{api,decision}.
 */
export class AuditLog {
  private readonly log: Logger;
  private readonly decisions;

  /** `apis`: the api values this log records, listed at 0 from the start. */
  constructor(log: Logger, metrics: Registry | undefined, apis: readonly string[]) {
    this.log = log.child({ logger: 'audit' });
    this.decisions = counter(metrics, 'meshca_authz_decisions_total', 'Authorisation decisions of the controller and Istio APIs', ['api', 'decision']);
    for (const api of apis) for (const decision of ['allow', 'deny']) this.decisions.inc({ api, decision }, 0);
  }

  record(r: AuditRecord): void {
    const d = r.decision;
    const fields = {
      caller: r.caller.spiffeId,
      target: r.target,
      decision: d.allowed ? 'allow' : 'deny',
      reason: d.allowed ? (d.rule === 'self' ? 'own identity' : `controller rule ${d.controllerId}`) : d.reason,
      via: r.caller.via,
      api: r.api,
      generateKey: r.generateKey,
      ...(r.dnsNames && r.dnsNames.length > 0 ? { dnsNames: r.dnsNames } : {}),
    };
    this.decisions.inc({ api: r.api, decision: fields.decision });
    if (d.allowed) this.log.info(fields, 'authorization decision');
    else this.log.warn(fields, 'authorization decision');
  }
}
