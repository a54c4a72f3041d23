import { createHash } from 'node:crypto';
import type { IssuedSvid } from '../../authority/types.js';
import type { DomainBundle } from './bundles.js';
import { SECRET_TYPE_URL, SPIFFE_VALIDATOR_NAME, SPIFFE_VALIDATOR_TYPE_URL, encodeAny, type SdsProtos } from './proto.js';

/**
 * Builds Secret resources and encodes them once as `Any` bytes. An EncodedSecret is immutable and shared by every
 * stream that serves the same name and content; `version` is a content hash (stable across restarts, so Delta
 * clients reconnecting with initial_resource_versions skip unchanged secrets).
 */
export interface EncodedSecret {
  readonly name: string;
  readonly kind: 'tls_certificate' | 'validation_context';
  /** google.protobuf.Any{type_url: Secret, value: Secret bytes}. */
  readonly any: Buffer;
  readonly version: string;
}

function finish(protos: SdsProtos, name: string, kind: EncodedSecret['kind'], secret: object): EncodedSecret {
  const value = protos.secret.serialize(secret);
  const version = createHash('sha256').update(value).digest('base64url').slice(0, 16);
  return { name, kind, any: encodeAny(SECRET_TYPE_URL, value), version };
}

/** Secret{name, tls_certificate{certificate_chain: PEM leaf then intermediates, private_key: PKCS#8 PEM}}. */
export function tlsCertificateSecret(protos: SdsProtos, name: string, svid: IssuedSvid): EncodedSecret {
  if (!svid.privateKeyPem) throw new Error(`sds: SVID for ${svid.spiffeId} has no private key (SDS always needs meshca-generated keys)`);
  return finish(protos, name, 'tls_certificate', {
    name,
    tls_certificate: {
      certificate_chain: { inline_bytes: Buffer.from(svid.chainPem, 'utf8') },
      private_key: { inline_bytes: Buffer.from(svid.privateKeyPem, 'utf8') },
    },
  });
}

/** Secret{name, validation_context{trusted_ca: PEM bundle}} for ROOTCA and spiffe://<td>. */
export function trustedCaSecret(protos: SdsProtos, name: string, bundle: DomainBundle): EncodedSecret {
  return finish(protos, name, 'validation_context', {
    name,
    validation_context: { trusted_ca: { inline_bytes: Buffer.from(bundle.pem, 'utf8') } },
  });
}

/**
 * Secret{name, validation_context{custom_validator_config{envoy.tls.cert_validator.spiffe,
 * SPIFFECertValidatorConfig{trust_domains: [{bare name, inline PEM}]}}}} for ALL: Envoy picks the bundle by the
 * peer's trust domain, so domains never mix.
 */
export function spiffeValidatorSecret(protos: SdsProtos, name: string, bundles: readonly DomainBundle[]): EncodedSecret {
  const config = protos.spiffeValidator.serialize({
    trust_domains: bundles.map((b) => ({ name: b.trustDomain, trust_bundle: { inline_bytes: Buffer.from(b.pem, 'utf8') } })),
  });
  return finish(protos, name, 'validation_context', {
    name,
    validation_context: {
      custom_validator_config: { name: SPIFFE_VALIDATOR_NAME, typed_config: { type_url: SPIFFE_VALIDATOR_TYPE_URL, value: config } },
    },
  });
}
