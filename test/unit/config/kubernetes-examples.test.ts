import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { parseConfigText } from '../../../src/config/load.js';
import { REPO_ROOT } from '../../support/cli.js';

/**
 * examples/kubernetes as a user applies it (issue #6): the Envoy sidecar authenticates to meshca with a projected
 * ServiceAccount token, so every backend's meshca config must accept Bearer tokens for the sidecar's audience, and
 * the RBAC in the directory must let meshca's ServiceAccount create TokenReviews (README: "Full manifests per
 * backend are in examples/kubernetes/").
 */

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
}
interface Obj {
  kind?: string;
  metadata?: { name?: string; namespace?: string };
  data?: Record<string, string>;
  rules?: Rule[];
  roleRef?: { kind?: string; name?: string };
  subjects?: { kind?: string; name?: string; namespace?: string }[];
  spec?: unknown;
}

const DIR = join(REPO_ROOT, 'examples', 'kubernetes');

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

function docs(file: string): Obj[] {
  return parseAllDocuments(readFileSync(file, 'utf8'))
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => !!o);
}

const files = walk(DIR).filter((f) => /\.ya?ml$/.test(f));
const all = files.flatMap((f) => docs(f).map((o) => ({ file: relative(REPO_ROOT, f), o })));

/** Rules granted to ServiceAccount meshca/meshca through any (Cluster)RoleBinding in examples/kubernetes. */
function meshcaRules(): { rule: Rule; scope: string }[] {
  const out: { rule: Rule; scope: string }[] = [];
  for (const { o: b } of all) {
    if (b.kind !== 'ClusterRoleBinding' && b.kind !== 'RoleBinding') continue;
    if (!b.subjects?.some((s) => s.kind === 'ServiceAccount' && s.name === 'meshca' && s.namespace === 'meshca')) continue;
    const role = all.find(({ o }) => o.kind === b.roleRef?.kind && o.metadata?.name === b.roleRef?.name)?.o;
    assert.ok(role, `${b.kind} ${b.metadata?.name} refers to ${b.roleRef?.kind} ${b.roleRef?.name}, which examples/kubernetes defines`);
    const scope = b.kind === 'ClusterRoleBinding' ? '*' : (b.metadata?.namespace ?? '');
    for (const rule of role.rules ?? []) out.push({ rule, scope });
  }
  return out;
}

function allows(group: string, resource: string, verb: string, namespace?: string): boolean {
  return meshcaRules().some(
    ({ rule, scope }) =>
      (scope === '*' || namespace === undefined || scope === namespace) &&
      (rule.apiGroups ?? []).includes(group) &&
      (rule.resources ?? []).includes(resource) &&
      ((rule.verbs ?? []).includes(verb) || (rule.verbs ?? []).includes('*')),
  );
}

describe('examples/kubernetes: the Envoy sidecar\'s projected token works as shipped', () => {
  const sidecar = readFileSync(join(DIR, 'envoy-sidecar.yaml'), 'utf8');
  const audience = /serviceAccountToken:\s*\{\s*audience:\s*([A-Za-z0-9._-]+)/.exec(sidecar)?.[1];

  it('ok/the sidecar projects a token with an audience', () => {
    assert.ok(audience, 'envoy-sidecar.yaml projects a serviceAccountToken with an audience');
  });

  const configs = all.filter(({ o }) => o.kind === 'ConfigMap' && typeof o.data?.['meshca.yaml'] === 'string');
  it('ok/there is a meshca config per backend', () => {
    assert.ok(configs.length >= 2, configs.map((c) => c.file).join(', '));
  });
  for (const { file, o } of configs) {
    it(`ok/${file}: auth.kubernetesTokens accepts the sidecar's tokens`, () => {
      const cfg = parseConfigText(o.data!['meshca.yaml']!, file);
      assert.equal(cfg.auth.kubernetesTokens.enabled, true, 'auth.kubernetesTokens.enabled: true, or the sidecar gets UNAUTHENTICATED');
      assert.equal(cfg.auth.kubernetesTokens.audience, audience, 'the audience the sidecar\'s token is issued for');
    });
  }

  it('ok/meshca\'s ServiceAccount may create TokenReviews', () => {
    assert.ok(allows('authentication.k8s.io', 'tokenreviews', 'create'), 'a ClusterRole bound to meshca/meshca grants create on tokenreviews.authentication.k8s.io');
  });

  it('ok/HA manifests: the state Secret and the rotation Lease in namespace meshca', () => {
    for (const verb of ['get', 'create', 'update', 'list', 'watch']) assert.ok(allows('', 'secrets', verb, 'meshca'), `${verb} on secrets in meshca`);
    for (const verb of ['get', 'create', 'update']) assert.ok(allows('coordination.k8s.io', 'leases', verb, 'meshca'), `${verb} on leases in meshca`);
  });
});
