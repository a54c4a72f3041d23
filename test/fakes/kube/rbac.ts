/**
 * A small RBAC table: user → PolicyRules, evaluated like the RBAC authorizer (union of rules, `*` wildcards,
 * resourceNames only restricting requests that name an object; a list or watch names one through a
 * `metadata.name=<n>` field selector, as on a real server). Rules bound cluster-wide unless `namespaces` is
 * given (modelling a RoleBinding in those namespaces). Group membership, aggregation and escalation checks are
 * not modelled.
 */
export interface PolicyRule {
  apiGroups: string[];
  /** Plural resource names, with subresources as `certificatesigningrequests/approval`; `*` matches all. */
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
  /** If set, the rule applies only in these namespaces (never to cluster-scoped requests). */
  namespaces?: string[];
}

export interface AuthzAttributes {
  user: string;
  verb: string;
  group: string;
  /** `resource` or `resource/subresource`. */
  resource: string;
  name?: string;
  namespace?: string;
}

export function ruleAllows(rule: PolicyRule, a: AuthzAttributes): boolean {
  if (!rule.verbs.includes('*') && !rule.verbs.includes(a.verb)) return false;
  if (!rule.apiGroups.includes('*') && !rule.apiGroups.includes(a.group)) return false;
  const base = a.resource.split('/')[0]!;
  const resOk = rule.resources.some((r) => r === '*' || r === a.resource || (r === `${base}/*` && a.resource.includes('/')) || (r === `*/${a.resource.split('/')[1]}` && a.resource.includes('/')));
  if (!resOk) return false;
  if (rule.resourceNames && rule.resourceNames.length > 0) {
    if (!a.name || !rule.resourceNames.includes(a.name)) return false;
  }
  if (rule.namespaces) {
    if (!a.namespace || !rule.namespaces.includes(a.namespace)) return false;
  }
  return true;
}

/** The real authorizer's denial text (without the `<resource> "<name>" is forbidden: ` prefix). */
export function forbiddenReason(a: AuthzAttributes): string {
  const where = a.namespace ? `in the namespace "${a.namespace}"` : 'at the cluster scope';
  return `User "${a.user}" cannot ${a.verb} resource "${a.resource}" in API group "${a.group}" ${where}`;
}
