/**
 * Label and field selectors as the Kubernetes API server parses them (the subset real clients send):
 * labels `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`; fields `f=v`, `f==v`, `f!=v`.
 * Parse errors throw SelectorError, which the server turns into a 400 BadRequest.
 */
export class SelectorError extends Error {}

export type LabelRequirement =
  | { key: string; op: 'eq' | 'neq'; value: string }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'exists' | 'notexists' };

export interface FieldRequirement {
  field: string;
  op: 'eq' | 'neq';
  value: string;
}

/** Splits on commas that are not inside parentheses. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((p) => p.trim()).filter((p) => p !== '');
}

const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function checkKey(k: string): string {
  if (!LABEL_KEY.test(k)) throw new SelectorError(`unable to parse requirement: invalid label key "${k}"`);
  return k;
}
function checkValue(v: string): string {
  if (!LABEL_VALUE.test(v) || v.length > 63) throw new SelectorError(`unable to parse requirement: invalid label value: "${v}"`);
  return v;
}

export function parseLabelSelector(s: string | undefined): LabelRequirement[] {
  if (s === undefined || s.trim() === '') return [];
  return splitTop(s).map((part): LabelRequirement => {
    let m = /^(\S+?)\s+(in|notin)\s+\((.*)\)$/.exec(part);
    if (m) {
      const values = m[3]!.split(',').map((v) => checkValue(v.trim()));
      return { key: checkKey(m[1]!), op: m[2] as 'in' | 'notin', values };
    }
    m = /^([^!=\s]+)\s*(==|!=|=)\s*(\S*)$/.exec(part);
    if (m) return { key: checkKey(m[1]!), op: m[2] === '!=' ? 'neq' : 'eq', value: checkValue(m[3]!) };
    m = /^!\s*(\S+)$/.exec(part);
    if (m) return { key: checkKey(m[1]!), op: 'notexists' };
    if (/^\S+$/.test(part)) return { key: checkKey(part), op: 'exists' };
    throw new SelectorError(`unable to parse requirement: ${JSON.stringify(part)}`);
  });
}

export function matchLabels(reqs: LabelRequirement[], labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    switch (r.op) {
      case 'eq':
        return has && l[r.key] === r.value;
      case 'neq':
        return !has || l[r.key] !== r.value;
      case 'in':
        return has && r.values.includes(l[r.key]!);
      case 'notin':
        return !has || !r.values.includes(l[r.key]!);
      case 'exists':
        return has;
      case 'notexists':
        return !has;
    }
  });
}

/** Parses a field selector, rejecting fields not in `supported` with the real server's message. */
export function parseFieldSelector(s: string | undefined, supported: string[]): FieldRequirement[] {
  if (s === undefined || s.trim() === '') return [];
  return splitTop(s).map((part) => {
    const m = /^([^!=\s]+)\s*(==|!=|=)\s*(.*)$/.exec(part);
    if (!m) throw new SelectorError(`invalid selector: '${part}'; can't understand '${part}'`);
    const field = m[1]!;
    if (!supported.includes(field)) {
      throw new SelectorError(`field label not supported: ${field}`);
    }
    return { field, op: m[2] === '!=' ? 'neq' : 'eq', value: m[3]! } as FieldRequirement;
  });
}

export function matchFields(reqs: FieldRequirement[], get: (field: string) => string | undefined): boolean {
  return reqs.every((r) => {
    const v = get(r.field) ?? '';
    return r.op === 'eq' ? v === r.value : v !== r.value;
  });
}
