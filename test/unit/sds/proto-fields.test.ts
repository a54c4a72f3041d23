import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadSdsProtos, SECRET_TYPE_URL, SPIFFE_VALIDATOR_TYPE_URL } from '../../../src/servers/sds/proto.js';

/**
 * Every field number meshca's proto/ subset declares, checked against protocols.md §1.2–§1.4 and §8 (which were
 * checked against envoyproxy/data-plane-api). A mismatch here would silently break a real Envoy.
 */
const SPEC: Record<string, Record<string, number>> = {
  'envoy.service.discovery.v3.DiscoveryRequest': {
    version_info: 1, node: 2, resource_names: 3, type_url: 4, response_nonce: 5, error_detail: 6,
  },
  'envoy.service.discovery.v3.DiscoveryResponse': {
    version_info: 1, resources: 2, canary: 3, type_url: 4, nonce: 5, control_plane: 6,
  },
  'envoy.service.discovery.v3.DeltaDiscoveryRequest': {
    node: 1, type_url: 2, resource_names_subscribe: 3, resource_names_unsubscribe: 4, initial_resource_versions: 5,
    response_nonce: 6, error_detail: 7,
  },
  'envoy.service.discovery.v3.DeltaDiscoveryResponse': {
    system_version_info: 1, resources: 2, type_url: 4, nonce: 5, removed_resources: 6, control_plane: 7,
  },
  'envoy.service.discovery.v3.Resource': { version: 1, resource: 2, name: 3, aliases: 4, ttl: 6 },
  'google.rpc.Status': { code: 1, message: 2, details: 3 },
  'envoy.config.core.v3.Node': {
    id: 1, cluster: 2, metadata: 3, locality: 4, user_agent_name: 6, user_agent_version: 7, user_agent_build_version: 8,
    extensions: 9, client_features: 10,
  },
  'envoy.config.core.v3.BuildVersion': { version: 1, metadata: 2 },
  'envoy.type.v3.SemanticVersion': { major_number: 1, minor_number: 2, patch: 3 },
  'envoy.config.core.v3.DataSource': { filename: 1, inline_bytes: 2, inline_string: 3, environment_variable: 4, watched_directory: 5 },
  'envoy.config.core.v3.ControlPlane': { identifier: 1 },
  'envoy.config.core.v3.TypedExtensionConfig': { name: 1, typed_config: 2 },
  'envoy.config.core.v3.ConfigSource': { api_config_source: 2, initial_fetch_timeout: 4, resource_api_version: 6 },
  // set_node_on_first_message_only is not in protocols.md; its number is from envoyproxy/envoy
  // api/envoy/config/core/v3/config_source.proto ("bool set_node_on_first_message_only = 7;").
  'envoy.config.core.v3.ApiConfigSource': { api_type: 1, grpc_services: 4, set_node_on_first_message_only: 7, transport_api_version: 8 },
  'envoy.config.core.v3.GrpcService.EnvoyGrpc': { cluster_name: 1 },
  'envoy.extensions.transport_sockets.tls.v3.Secret': {
    name: 1, tls_certificate: 2, session_ticket_keys: 3, validation_context: 4, generic_secret: 5,
  },
  'envoy.extensions.transport_sockets.tls.v3.TlsCertificate': { certificate_chain: 1, private_key: 2 },
  'envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext': {
    trusted_ca: 1, verify_certificate_hash: 2, verify_certificate_spki: 3, require_signed_certificate_timestamp: 6, crl: 7,
    allow_expired_certificate: 8, match_subject_alt_names: 9, trust_chain_verification: 10, custom_validator_config: 12,
    only_verify_leaf_cert_crl: 14, match_typed_subject_alt_names: 15, max_verify_depth: 16,
  },
  'envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher': { san_type: 1, matcher: 2, oid: 3 },
  'envoy.type.matcher.v3.StringMatcher': { exact: 1, prefix: 2, suffix: 3, contains: 7, ignore_case: 6 },
  'envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig': { trust_domains: 1, trust_bundles: 2 },
  'envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig.TrustDomain': { name: 1, trust_bundle: 2 },
  'envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig': { name: 1, sds_config: 2 },
};

interface FieldDescriptor {
  name: string;
  number: number;
}

interface DescriptorProto {
  name: string;
  field: FieldDescriptor[];
  nestedType: DescriptorProto[];
}

/** Fields of a top-level message, or of a nested one ("Parent.Child", found in the parent's nested types). */
function fieldsOf(def: Record<string, unknown>, msg: string): FieldDescriptor[] {
  const top = def[msg] as { type?: DescriptorProto } | undefined;
  if (top?.type) return top.type.field;
  const cut = msg.lastIndexOf('.');
  const parent = def[msg.slice(0, cut)] as { type?: DescriptorProto } | undefined;
  const nested = parent?.type?.nestedType.find((n) => n.name === msg.slice(cut + 1));
  assert.ok(nested, `${msg} is defined`);
  return nested.field;
}

describe('proto/ field numbers match the spec', () => {
  const def = loadSdsProtos().packageDefinition;

  for (const [msg, fields] of Object.entries(SPEC)) {
    it(`${msg}`, () => {
      const actual = Object.fromEntries(fieldsOf(def, msg).map((f) => [f.name, f.number]));
      for (const [name, num] of Object.entries(fields)) assert.equal(actual[name], num, `${msg}.${name}`);
      // No field we declare is missing from the spec table (catches an accidental extra or renumbered field).
      for (const name of Object.keys(actual)) {
        if (msg.endsWith('Extension') || msg.endsWith('Locality') || msg.endsWith('GrpcService')) continue;
        assert.ok(name in fields || ['aliases', 'cluster_names', 'path', 'authority'].includes(name), `${msg}.${name} is in the spec table`);
      }
    });
  }

  it('the SDS service has the three methods with the right streaming kinds and paths', () => {
    const svc = loadSdsProtos().service;
    assert.equal(svc.StreamSecrets!.path, '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets');
    assert.equal(svc.DeltaSecrets!.path, '/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets');
    assert.equal(svc.FetchSecrets!.path, '/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets');
    assert.ok(svc.StreamSecrets!.requestStream && svc.StreamSecrets!.responseStream);
    assert.ok(svc.DeltaSecrets!.requestStream && svc.DeltaSecrets!.responseStream);
    assert.ok(!svc.FetchSecrets!.requestStream && !svc.FetchSecrets!.responseStream);
  });

  it('ADS has its two streaming methods at the upstream paths', () => {
    const svc = loadSdsProtos().adsService;
    assert.deepEqual(Object.keys(svc).sort(), ['DeltaAggregatedResources', 'StreamAggregatedResources']);
    assert.equal(svc.StreamAggregatedResources!.path, '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources');
    assert.equal(svc.DeltaAggregatedResources!.path, '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources');
    for (const m of Object.values(svc)) assert.ok(m.requestStream && m.responseStream);
  });

  it('type URLs are the Envoy ones', () => {
    assert.equal(SECRET_TYPE_URL, 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret');
    assert.equal(SPIFFE_VALIDATOR_TYPE_URL, 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig');
  });
});
