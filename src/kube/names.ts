import { createHash } from 'node:crypto';

/** Label put on every object meshca creates for a trust domain, so leftovers can be found and swept. */
export const TRUST_DOMAIN_LABEL = 'meshca.io/trust-domain';

const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/**
 * A trust domain as a label value (at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends). Trust
 * domains that do not fit are replaced by "td-" and a hash, which is stable, so sweeping still finds them.
 */
export function trustDomainLabelValue(td: string): string {
  if (td.length <= 63 && LABEL_VALUE.test(td)) return td;
  return `td-${createHash('sha256').update(td).digest('hex').slice(0, 40)}`;
}

/** A label selector string from a map: {a: "b", c: "d"} → "a=b,c=d". */
export function labelSelector(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}
