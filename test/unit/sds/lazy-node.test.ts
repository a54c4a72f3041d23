import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SECRET_TYPE_URL, loadSdsProtos } from '../../../src/servers/sds/proto.js';
import { splitField } from '../../../src/servers/sds/lazy-node.js';

const p = loadSdsProtos();
const envoyNode = {
  id: 'sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local',
  cluster: 'svc.ns',
  metadata: { fields: { ISTIO_VERSION: { string_value: '1.24.0' } } },
  user_agent_name: 'envoy',
  extensions: Array.from({ length: 50 }, (_, i) => ({ name: `envoy.ext.${i}`, category: 'envoy.filters.network' })),
  client_features: ['xds.config.resource-in-sotw'],
};

describe('requests decode node lazily', () => {
  const deserialize = p.service.StreamSecrets!.requestDeserialize;
  const fields = { version_info: 'v1', resource_names: ['default', 'ROOTCA'], type_url: SECRET_TYPE_URL, response_nonce: 'n1' };

  it('gives the same request as a full decode, node included', () => {
    const bytes = p.discoveryRequest.serialize({ ...fields, node: envoyNode });
    const lazy = deserialize(bytes) as Record<string, unknown>;
    const full = p.discoveryRequest.deserialize(bytes) as Record<string, unknown>;
    for (const k of ['version_info', 'resource_names', 'type_url', 'response_nonce', 'error_detail']) assert.deepEqual(lazy[k], full[k], k);
    assert.deepEqual(lazy.node, full.node);
    assert.equal((lazy.node as { id: string }).id, envoyNode.id);
  });

  it('merges repeated node fields as protobuf does, and leaves requests without node alone', () => {
    const a = p.discoveryRequest.serialize({ node: { id: 'first' } });
    const b = p.discoveryRequest.serialize({ ...fields, node: { cluster: 'c2' } });
    const merged = deserialize(Buffer.concat([a, b])) as { node: { id: string; cluster: string }; response_nonce: string };
    assert.equal(merged.node.id, 'first');
    assert.equal(merged.node.cluster, 'c2');
    assert.equal(merged.response_nonce, 'n1');
    const none = deserialize(p.discoveryRequest.serialize(fields)) as { node: unknown; type_url: string };
    assert.equal(none.node, null);
    assert.equal(none.type_url, SECRET_TYPE_URL);
  });

  it('reports a malformed node as INVALID_ARGUMENT naming the field, only when it is read', () => {
    const ok = p.discoveryRequest.serialize(fields);
    // node = field 2, length 3, bytes that are not a valid Node (truncated varint field).
    const bad = Buffer.concat([ok, Buffer.from([0x12, 0x03, 0x08, 0xff, 0xff])]);
    const req = deserialize(bad) as { node: unknown; response_nonce: string };
    assert.equal(req.response_nonce, 'n1');
    assert.throws(() => req.node, { code: 'INVALID_ARGUMENT', message: /DiscoveryRequest\.node is not a valid envoy\.config\.core\.v3\.Node/ });
  });

  it('Delta requests carry node in field 1', () => {
    const bytes = p.deltaRequest.serialize({ node: envoyNode, type_url: SECRET_TYPE_URL, resource_names_subscribe: ['default'] });
    const req = p.service.DeltaSecrets!.requestDeserialize(bytes) as { node: { id: string }; resource_names_subscribe: string[] };
    assert.equal(req.node.id, envoyNode.id);
    assert.deepEqual(req.resource_names_subscribe, ['default']);
  });

  it('splitField keeps every other field in order and refuses malformed input', () => {
    const bytes = p.discoveryRequest.serialize({ ...fields, node: { id: 'x' } });
    const s = splitField(bytes, 2)!;
    assert.equal(s.values.length, 1);
    assert.deepEqual(p.discoveryRequest.deserialize(s.rest).resource_names, ['default', 'ROOTCA']);
    assert.equal(splitField(Buffer.from([0x12, 0x05, 0x01]), 2), undefined, 'length past the end');
    assert.equal(splitField(Buffer.from([0x13]), 2), undefined, 'group wire type');
  });
});
