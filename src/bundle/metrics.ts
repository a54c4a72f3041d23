import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * Counters and gauges registered once per registry: several components (or two servers in one test process sharing
 * a registry) may ask for the same metric; prom-client throws on a second registration, so reuse the first.
 */
export function counter<L extends string>(registry: Registry | undefined, name: string, help: string, labelNames: readonly L[]): Counter<L> {
  const existing = registry?.getSingleMetric(name);
  if (existing) return existing as Counter<L>;
  return new Counter({ name, help, labelNames: [...labelNames], registers: registry ? [registry] : [] });
}

export function gauge<L extends string>(registry: Registry | undefined, name: string, help: string, labelNames: readonly L[]): Gauge<L> {
  const existing = registry?.getSingleMetric(name);
  if (existing) return existing as Gauge<L>;
  return new Gauge({ name, help, labelNames: [...labelNames], registers: registry ? [registry] : [] });
}
