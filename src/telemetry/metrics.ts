import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * Metrics registered once per registry: several components (or two servers in one test process sharing a registry)
 * may ask for the same metric, and prom-client throws on a second registration, so the first one is reused.
 */

/** The metric already registered under `name`, or the one `make` creates (and registers in `registry`). */
export function registered<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

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
