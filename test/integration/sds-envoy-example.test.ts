import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { parse } from 'yaml';
import { Authorizer } from '../../src/identity/authorization.js';
import { resolveNames } from '../../src/servers/sds/names.js';
import { startHarness, type Harness } from '../support/sds-harness.js';

const here = dirname(fileURLToPath(import.meta.url));
// dist/test/integration -> repository root
const EXAMPLE = join(here, '..', '..', '..', 'examples', 'envoy', 'envoy.yaml');

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every object in the tree, with its key path. */
function walk(v: Json, path: string[] = [], out: Array<{ path: string[]; obj: { [k: string]: Json } }> = []) {
  if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...path, String(i)], out));
  else if (v && typeof v === 'object') {
    out.push({ path, obj: v });
    for (const [k, x] of Object.entries(v)) walk(x, [...path, k], out);
  }
  return out;
}

describe('examples/envoy/envoy.yaml', { timeout: 30_000 }, () => {
  let doc: { [k: string]: Json };
  let h: Harness;
  before(async () => {
    doc = parse(await readFile(EXAMPLE, 'utf8')) as { [k: string]: Json };
    h = await startHarness();
  });
  after(async () => h.close());

  it('the README explains every field the bootstrap uses', async () => {
    const readme = await readFile(join(dirname(EXAMPLE), 'README.md'), 'utf8');
    const keys = new Set(walk(doc).flatMap(({ obj }) => Object.keys(obj)));
    const missing = [...keys].filter((k) => !readme.includes(k));
    assert.deepEqual(missing, [], `fields of envoy.yaml the README does not mention: ${missing.join(', ')}`);
  });

  it('has node.id and node.cluster', () => {
    const node = doc.node as { id?: string; cluster?: string };
    assert.ok(node.id && node.cluster);
  });

  it('every SDS secret name is one meshca serves, over a V3 gRPC config source pointing at an existing cluster', async () => {
    const objs = walk(doc);
    const sds = objs.filter((o) => 'sds_config' in o.obj);
    const names = sds.map((o) => o.obj.name as string);
    assert.deepEqual([...new Set(names)].sort(), ['ROOTCA', 'default']);
    for (const o of sds) {
      const cfg = o.obj.sds_config as { [k: string]: Json };
      assert.equal(cfg.resource_api_version, 'V3');
      const api = cfg.api_config_source as { [k: string]: Json };
      assert.ok(api.api_type === 'GRPC' || api.api_type === 'DELTA_GRPC');
      assert.equal(api.transport_api_version, 'V3');
      assert.equal(api.set_node_on_first_message_only, true, 'Envoy must not repeat its whole node in every ACK');
    }
    // Names resolve under meshca's naming rules for the bootstrap identity (no error = served) ...
    const caller = { spiffeId: 'spiffe://cluster.local/ns/default/sa/web', via: 'mtls' as const };
    const fakeBundles = { own: () => ({ trustDomain: 'cluster.local', pem: '', sequence: 1 }), all: () => [], onChange: () => () => undefined };
    resolveNames(names, caller, { trustDomain: 'cluster.local', bundles: fakeBundles, authorizer: new Authorizer([]) });
    // ... and a running meshca actually serves them.
    const c = await h.client('spiffe://example.org/ns/default/sa/web', { id: (doc.node as { id: string }).id, cluster: 'web' });
    const r = await c.fetchSecrets([...new Set(names)]);
    assert.deepEqual(r.secrets.map((s) => s.name).sort(), ['ROOTCA', 'default']);
  });

  it('every referenced cluster exists; the meshca cluster is HTTP/2 with file-based mTLS and pins meshca\'s SPIFFE ID', () => {
    const res = doc.static_resources as { clusters: Array<{ [k: string]: Json }> };
    const clusters = new Map(res.clusters.map((c) => [c.name as string, c]));
    const objs = walk(doc);
    const refs = new Set<string>();
    for (const o of objs) {
      if (typeof o.obj.cluster_name === 'string') refs.add(o.obj.cluster_name);
      if (typeof o.obj.cluster === 'string' && o.path.includes('typed_config')) refs.add(o.obj.cluster);
    }
    assert.ok(refs.has('meshca_sds') && refs.has('local_app'));
    for (const r of refs) assert.ok(clusters.has(r), `cluster ${r} is defined`);
    const ca = JSON.stringify(clusters.get('meshca_sds'));
    assert.match(ca, /http2_protocol_options/);
    assert.match(ca, /UpstreamTlsContext/);
    assert.match(ca, /"certificate_chain":\{"filename"/);
    assert.match(ca, /"private_key":\{"filename"/);
    assert.match(ca, /"trusted_ca":\{"filename"/);
    assert.match(ca, /spiffe:\/\/cluster\.local\/meshca/);
  });
});
