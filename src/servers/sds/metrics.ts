import { Counter, Gauge, type Registry } from 'prom-client';
import { registered } from '../../telemetry/metrics.js';

/** SDS metrics (issuance counters and latency live in the authority). Names are stable: dashboards use them. */
export type PushReason = 'renewal' | 'bundle' | 'subscription' | 'reissue';

export interface SdsMetrics {
  readonly streamsOpen: Gauge<'method'>;
  readonly secretsPushed: Counter<'type'>;
  readonly pushes: Counter<'reason'>;
  readonly nacks: Counter<'method'>;
  readonly streamErrors: Counter<'method' | 'code'>;
  readonly requests: Counter<'method'>;
}

/** Label values listed at 0 from the start, so a scrape shows every series before the first stream, push or NACK. */
const STREAM_METHODS = ['StreamSecrets', 'DeltaSecrets', 'StreamAggregatedResources', 'DeltaAggregatedResources'] as const;
const PUSH_REASONS: readonly PushReason[] = ['renewal', 'bundle', 'subscription', 'reissue'];
const SECRET_TYPES = ['tls_certificate', 'validation_context'] as const;

export function createSdsMetrics(registry: Registry, nearestExpiry: () => Date | undefined, now: () => number): SdsMetrics {
  const registers = [registry];
  registered(registry, 'meshca_sds_served_cert_nearest_expiry_seconds', () =>
    new Gauge({
      name: 'meshca_sds_served_cert_nearest_expiry_seconds',
      help: 'Seconds until the earliest notAfter of any certificate currently served over SDS (absent when none)',
      registers,
      collect() {
        const t = nearestExpiry();
        // reset() alone leaves an unlabelled gauge at 0, which reads as "a certificate expires now": drop the sample.
        if (t === undefined) this.remove();
        else this.set((t.getTime() - now()) / 1000);
      },
    }),
  );
  const m: SdsMetrics = {
    streamsOpen: registered(registry, 'meshca_sds_streams_open', () =>
      new Gauge({ name: 'meshca_sds_streams_open', help: 'Open SDS streams', labelNames: ['method'], registers }),
    ),
    secretsPushed: registered(registry, 'meshca_sds_secrets_pushed_total', () =>
      new Counter({ name: 'meshca_sds_secrets_pushed_total', help: 'Secrets sent to SDS clients, by secret type', labelNames: ['type'], registers }),
    ),
    pushes: registered(registry, 'meshca_sds_pushes_total', () =>
      new Counter({
        name: 'meshca_sds_pushes_total',
        help: 'SDS responses sent, by reason (renewal, bundle, subscription, reissue)',
        labelNames: ['reason'],
        registers,
      }),
    ),
    nacks: registered(registry, 'meshca_sds_nacks_total', () =>
      new Counter({ name: 'meshca_sds_nacks_total', help: 'SDS NACKs received (requests with error_detail)', labelNames: ['method'], registers }),
    ),
    streamErrors: registered(registry, 'meshca_sds_errors_total', () =>
      new Counter({ name: 'meshca_sds_errors_total', help: 'SDS calls ended with an error status', labelNames: ['method', 'code'], registers }),
    ),
    requests: registered(registry, 'meshca_sds_requests_total', () =>
      new Counter({ name: 'meshca_sds_requests_total', help: 'SDS requests received (including ACKs)', labelNames: ['method'], registers }),
    ),
  };
  // inc(..., 0) creates a missing series at 0 and leaves an existing one (a shared registry) unchanged.
  for (const method of STREAM_METHODS) {
    m.streamsOpen.inc({ method }, 0);
    m.nacks.inc({ method }, 0);
  }
  for (const method of [...STREAM_METHODS, 'FetchSecrets']) m.requests.inc({ method }, 0);
  for (const reason of PUSH_REASONS) m.pushes.inc({ reason }, 0);
  for (const type of SECRET_TYPES) m.secretsPushed.inc({ type }, 0);
  return m;
}
