import { createHash } from 'node:crypto';
import { ownedCopy } from '../../util/buffers.js';
import type { IssuedSvid } from '../../authority/types.js';
import type { DomainBundle } from './bundles.js';
import {
  SECRET_TYPE_URL,
  SPIFFE_VALIDATOR_NAME,
  SPIFFE_VALIDATOR_TYPE_URL,
  encodeAny,
  lengthDelimited as ld,
  sotwBody,
  type SdsProtos,
} from './proto.js';

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
  /** DiscoveryResponse fields resources=2 (this Any) + type_url=4, shared by every stream it is pushed to. */
  readonly sotwBody: Buffer;
}

function fromValue(name: string, kind: EncodedSecret['kind'], value: Buffer): EncodedSecret {
  // The first 16 base64url characters of the digest, encoded from its first 12 bytes (the same text) so the string
  // is flat: a slice of the full encoding keeps all 43 characters alive as its parent, for every stream's secret.
  const version = createHash('sha256').update(value).digest().toString('base64url', 0, 12);
  const anyBytes = encodeAny(SECRET_TYPE_URL, value);
  // Lives as long as its certificate: kept out of Node's shared buffer pool (util/buffers.ts).
  const body = ownedCopy(sotwBody(anyBytes));
  // `any` is a view into `body` (which embeds it after a tag and a length) so each secret is held in memory once.
  const start = body.indexOf(anyBytes);
  const any = start >= 0 ? body.subarray(start, start + anyBytes.length) : anyBytes;
  return { name, kind, any, version, sotwBody: body };
}

function finish(protos: SdsProtos, name: string, kind: EncodedSecret['kind'], secret: object): EncodedSecret {
  return fromValue(name, kind, protos.secret.serialize(secret));
}

/** DataSource{inline_bytes=2}. */
const inlineBytes = (text: string): Buffer => ld(2, Buffer.from(text, 'utf8'));

/**
 * Secret{name, tls_certificate{certificate_chain: PEM leaf then intermediates, private_key: PKCS#8 PEM}}.
 * Hand-encoded (hot path: every renewal and re-issue); test/unit/sds/wire.test.ts decodes it with the proto codecs.
 */
export function tlsCertificateSecret(_protos: SdsProtos, name: string, svid: IssuedSvid): EncodedSecret {
  if (!svid.privateKeyPem) throw new Error(`sds: SVID for ${svid.spiffeId} has no private key (SDS always needs meshca-generated keys)`);
  // Secret{name=1, tls_certificate=2{certificate_chain=1, private_key=2}}
  const tls = Buffer.concat([ld(1, inlineBytes(svid.chainPem)), ld(2, inlineBytes(svid.privateKeyPem))]);
  return fromValue(name, 'tls_certificate', Buffer.concat([ld(1, name), ld(2, tls)]));
}

/** Secret{name, validation_context{trusted_ca: PEM bundle}} for ROOTCA and spiffe://<td>. */
export function trustedCaSecret(_protos: SdsProtos, name: string, bundle: DomainBundle): EncodedSecret {
  // Secret{name=1, validation_context=4{trusted_ca=1}}
  return fromValue(name, 'validation_context', Buffer.concat([ld(1, name), ld(4, ld(1, inlineBytes(bundle.pem)))]));
}

/**
 * Secret{name, validation_context{custom_validator_config{envoy.tls.cert_validator.spiffe,
 * SPIFFECertValidatorConfig{trust_domains: [{bare name, inline PEM}]}}}} for ALL: Envoy picks the bundle by the
 * peer's trust domain, so domains never mix. The trust domains (own and federated) are sorted by name, as SPIRE
 * sorts them (protocols.md §3.1).
 */
export function spiffeValidatorSecret(protos: SdsProtos, name: string, bundles: readonly DomainBundle[]): EncodedSecret {
  const sorted = [...bundles].sort((a, b) => (a.trustDomain < b.trustDomain ? -1 : a.trustDomain > b.trustDomain ? 1 : 0));
  const config = protos.spiffeValidator.serialize({
    trust_domains: sorted.map((b) => ({ name: b.trustDomain, trust_bundle: { inline_bytes: Buffer.from(b.pem, 'utf8') } })),
  });
  return finish(protos, name, 'validation_context', {
    name,
    validation_context: {
      custom_validator_config: { name: SPIFFE_VALIDATOR_NAME, typed_config: { type_url: SPIFFE_VALIDATOR_TYPE_URL, value: config } },
    },
  });
}
