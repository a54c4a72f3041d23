import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  SECRET_TYPE_URL,
  deltaResourceField,
  encodeAny,
  encodeDeltaResponse,
  encodeDiscoveryResponse,
  loadSdsProtos,
  multiBody,
  sotwBody,
} from '../../../src/servers/sds/proto.js';
import { spiffeValidatorSecret, tlsCertificateSecret, trustedCaSecret } from '../../../src/servers/sds/secrets.js';

const p = loadSdsProtos();

describe('hand-assembled responses decode with the protobuf codecs', () => {
  it('DiscoveryResponse with one Secret Any', () => {
    const secret = p.secret.serialize({ name: 'ROOTCA', validation_context: { trusted_ca: { inline_bytes: Buffer.from('PEM') } } });
    const bytes = encodeDiscoveryResponse('v-1', sotwBody(encodeAny(SECRET_TYPE_URL, secret)), 'n-1');
    const r = p.discoveryResponse.deserialize(bytes);
    assert.equal(r.version_info, 'v-1');
    assert.equal(r.nonce, 'n-1');
    assert.equal(r.type_url, SECRET_TYPE_URL);
    assert.equal(r.resources.length, 1);
    assert.equal(r.resources[0].type_url, SECRET_TYPE_URL);
    const s = p.secret.deserialize(r.resources[0].value);
    assert.equal(s.name, 'ROOTCA');
    assert.equal(s.validation_context.trusted_ca.inline_bytes.toString(), 'PEM');
  });

  it('long strings use multi-byte varint lengths', () => {
    const long = 'x'.repeat(70_000);
    const r = p.discoveryResponse.deserialize(encodeDiscoveryResponse(long, multiBody([]), 'n'));
    assert.equal(r.version_info, long);
  });

  it('strings are written as UTF-8 with their byte length', () => {
    const r = p.discoveryResponse.deserialize(encodeDiscoveryResponse('v-é-✓', multiBody([]), 'nonce-ü'));
    assert.equal(r.version_info, 'v-é-✓');
    assert.equal(r.nonce, 'nonce-ü');
  });

  it('DeltaDiscoveryResponse with Resource{name, version, resource} and removed_resources', () => {
    const enc = trustedCaSecret(p, 'ROOTCA', { trustDomain: 'example.org', pem: 'PEM', sequence: 1 });
    const bytes = encodeDeltaResponse('sv', [deltaResourceField('ROOTCA', enc.version, enc.any)], ['ALL', 'x'], 'n');
    const r = p.deltaResponse.deserialize(bytes);
    assert.equal(r.system_version_info, 'sv');
    assert.equal(r.nonce, 'n');
    assert.equal(r.type_url, SECRET_TYPE_URL);
    assert.deepEqual(r.removed_resources, ['ALL', 'x']);
    assert.equal(r.resources[0].name, 'ROOTCA');
    assert.equal(r.resources[0].version, enc.version);
    assert.equal(p.secret.deserialize(r.resources[0].resource.value).name, 'ROOTCA');
  });

  it('secret builders: tls_certificate, trusted_ca, SPIFFE validator; version is a content hash', () => {
    const svid = {
      spiffeId: 'spiffe://example.org/a',
      chainDer: [],
      chainPem: 'CHAIN',
      privateKeyPem: 'KEY',
      keyType: 'ec-p256' as const,
      serialHex: '01',
      notBefore: new Date(0),
      notAfter: new Date(1),
      renewAt: new Date(0),
      caGeneration: 1,
    };
    const a = tlsCertificateSecret(p, 'default', svid);
    const b = tlsCertificateSecret(p, 'default', svid);
    assert.equal(a.version, b.version);
    const s = p.secret.deserialize(Buffer.from(p.discoveryResponse.deserialize(encodeDiscoveryResponse('v', a.sotwBody, 'n')).resources[0].value));
    assert.equal(s.tls_certificate.certificate_chain.inline_bytes.toString(), 'CHAIN');
    assert.equal(s.tls_certificate.private_key.inline_bytes.toString(), 'KEY');
    assert.throws(() => tlsCertificateSecret(p, 'default', { ...svid, privateKeyPem: undefined }), /no private key/);
    const all = spiffeValidatorSecret(p, 'ALL', [
      { trustDomain: 'example.org', pem: 'A', sequence: 1 },
      { trustDomain: 'other.org', pem: 'B', sequence: 1 },
    ]);
    const anyMsg = p.discoveryResponse.deserialize(encodeDiscoveryResponse('v', all.sotwBody, 'n')).resources[0];
    const sec = p.secret.deserialize(anyMsg.value);
    const cfg = p.spiffeValidator.deserialize(sec.validation_context.custom_validator_config.typed_config.value);
    assert.deepEqual(cfg.trust_domains.map((t: { name: string }) => t.name), ['example.org', 'other.org']);
    const ca = trustedCaSecret(p, 'ROOTCA', { trustDomain: 'e', pem: 'BUNDLE', sequence: 1 });
    const caSecret = p.secret.deserialize(p.discoveryResponse.deserialize(encodeDiscoveryResponse('v', ca.sotwBody, 'n')).resources[0].value);
    assert.equal(caSecret.name, 'ROOTCA');
    assert.equal(caSecret.type, 'validation_context');
    assert.equal(caSecret.validation_context.trusted_ca.inline_bytes.toString(), 'BUNDLE');
    // Hand-encoded bytes equal the protobuf library's encoding of the same message.
    const viaLib = p.secret.serialize({ name: 'ROOTCA', validation_context: { trusted_ca: { inline_bytes: Buffer.from('BUNDLE') } } });
    assert.deepEqual(ca.any, encodeAny(SECRET_TYPE_URL, viaLib));
    const tlsViaLib = p.secret.serialize({
      name: 'default',
      tls_certificate: { certificate_chain: { inline_bytes: Buffer.from('CHAIN') }, private_key: { inline_bytes: Buffer.from('KEY') } },
    });
    assert.deepEqual(a.any, encodeAny(SECRET_TYPE_URL, tlsViaLib));
    assert.notEqual(trustedCaSecret(p, 'ROOTCA', { trustDomain: 'e', pem: 'A', sequence: 1 }).version, trustedCaSecret(p, 'ROOTCA', { trustDomain: 'e', pem: 'B', sequence: 2 }).version);
  });
});
