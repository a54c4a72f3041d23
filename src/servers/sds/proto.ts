import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import * as protoLoader from '@grpc/proto-loader';
import type * as grpc from '@grpc/grpc-js';
import { lazyNodeDeserializer } from './lazy-node.js';

/**
 * Loads meshca's wire-compatible subsets of Envoy's protos (proto/, see proto/SOURCES.md) with @grpc/proto-loader and
 * gives the SDS server what it needs to encode responses: the service definition, the message codecs from the same
 * loaded root, the type URLs, and a tiny protobuf writer that assembles a DiscoveryResponse around pre-encoded
 * resources so that a fan-out push serialises the (large) Secret once and only the per-stream version/nonce per stream.
 */

export const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
export const SPIFFE_VALIDATOR_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig';
export const RESOURCE_TYPE_URL = 'type.googleapis.com/envoy.service.discovery.v3.Resource';
export const SPIFFE_VALIDATOR_NAME = 'envoy.tls.cert_validator.spiffe';
export const SDS_SERVICE = 'envoy.service.secret.v3.SecretDiscoveryService';
export const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** proto/ at the repository root, found from both src/ (ts-node style) and dist/src/ (compiled). */
export function protoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'proto');
    if (existsSync(join(candidate, 'envoy', 'service', 'secret', 'v3', 'sds.proto'))) return candidate;
    dir = dirname(dir);
  }
  throw new Error('sds: cannot find the proto/ directory (expected next to package.json)');
}

export const SDS_PROTO_FILES = [
  'envoy/service/secret/v3/sds.proto',
  'envoy/service/discovery/v3/ads.proto',
  'envoy/extensions/transport_sockets/tls/v3/secret.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto',
];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Codec = protoLoader.MessageTypeDefinition<any, any>;

export interface SdsProtos {
  readonly packageDefinition: protoLoader.PackageDefinition;
  readonly service: grpc.ServiceDefinition;
  /** AggregatedDiscoveryService (ADS): the same messages, Secrets only. */
  readonly adsService: grpc.ServiceDefinition;
  readonly secret: Codec;
  readonly spiffeValidator: Codec;
  readonly discoveryRequest: Codec;
  readonly discoveryResponse: Codec;
  readonly deltaRequest: Codec;
  readonly deltaResponse: Codec;
  readonly resource: Codec;
}

let cached: SdsProtos | undefined;

function codec(def: protoLoader.PackageDefinition, name: string): Codec {
  const c = def[name];
  if (!c || (c as Codec).format !== 'Protocol Buffer 3 DescriptorProto') throw new Error(`sds: message ${name} missing from proto/`);
  return c as Codec;
}

/**
 * The loaded protos (loaded once per process). The service definition's response serialisers accept a Buffer as an
 * already-encoded message (see encodeDiscoveryResponse) as well as a plain object; its request deserialisers decode
 * `node` only when it is read (lazy-node.ts).
 */
export function loadSdsProtos(): SdsProtos {
  if (cached) return cached;
  const def = protoLoader.loadSync(SDS_PROTO_FILES, { ...LOADER_OPTIONS, includeDirs: [protoRoot()] });
  const node = codec(def, 'envoy.config.core.v3.Node');
  const wrap = (serviceName: string, deltaMethod: string): grpc.ServiceDefinition => {
    const svc = def[serviceName] as grpc.ServiceDefinition | undefined;
    if (!svc) throw new Error(`sds: service ${serviceName} missing from proto/`);
    const service: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
    for (const [name, m] of Object.entries(svc)) {
      const ser = m.responseSerialize;
      // node is field 1 of DeltaDiscoveryRequest and field 2 of DiscoveryRequest.
      const delta = name === deltaMethod;
      service[name] = {
        ...m,
        requestDeserialize: lazyNodeDeserializer(m.requestDeserialize, delta ? 1 : 2, (b) => node.deserialize(b), delta ? 'DeltaDiscoveryRequest' : 'DiscoveryRequest'),
        responseSerialize: (v: unknown) => (Buffer.isBuffer(v) ? v : ser(v)),
      };
    }
    return service as grpc.ServiceDefinition;
  };
  cached = {
    packageDefinition: def,
    service: wrap(SDS_SERVICE, 'DeltaSecrets'),
    adsService: wrap(ADS_SERVICE, 'DeltaAggregatedResources'),
    secret: codec(def, 'envoy.extensions.transport_sockets.tls.v3.Secret'),
    spiffeValidator: codec(def, 'envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig'),
    discoveryRequest: codec(def, 'envoy.service.discovery.v3.DiscoveryRequest'),
    discoveryResponse: codec(def, 'envoy.service.discovery.v3.DiscoveryResponse'),
    deltaRequest: codec(def, 'envoy.service.discovery.v3.DeltaDiscoveryRequest'),
    deltaResponse: codec(def, 'envoy.service.discovery.v3.DeltaDiscoveryResponse'),
    resource: codec(def, 'envoy.service.discovery.v3.Resource'),
  };
  return cached;
}

// ---- minimal protobuf writer (length-delimited fields only) ----

function varintSize(n: number): number {
  let size = 1;
  while (n > 0x7f) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(out: Buffer, at: number, n: number): number {
  let o = at;
  while (n > 0x7f) {
    out[o++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[o++] = n;
  return o;
}

/** Size of a wire-type-2 field whose value is `len` bytes. */
function fieldSize(field: number, len: number): number {
  return varintSize((field << 3) | 2) + varintSize(len) + len;
}

/** Writes a wire-type-2 field at `at` (string values as UTF-8); returns the offset just past it. */
function writeField(out: Buffer, at: number, field: number, value: Buffer | string, len: number): number {
  let o = writeVarint(out, at, (field << 3) | 2);
  o = writeVarint(out, o, len);
  return o + (typeof value === 'string' ? out.write(value, o, len, 'utf8') : value.copy(out, o));
}

/** Encodes field `field` with wire type 2 (string, bytes, embedded message). */
export function lengthDelimited(field: number, value: Buffer | string): Buffer {
  const len = typeof value === 'string' ? Buffer.byteLength(value, 'utf8') : value.length;
  const out = Buffer.allocUnsafe(fieldSize(field, len));
  writeField(out, 0, field, value, len);
  return out;
}

/** google.protobuf.Any{type_url=1, value=2}. */
export function encodeAny(typeUrl: string, value: Buffer): Buffer {
  return Buffer.concat([lengthDelimited(1, typeUrl), lengthDelimited(2, value)]);
}

const SECRET_TYPE_FIELD_SOTW = lengthDelimited(4, SECRET_TYPE_URL);
const SECRET_TYPE_FIELD_DELTA = lengthDelimited(4, SECRET_TYPE_URL);

/** The shared middle of a SotW DiscoveryResponse: resources=2 (one Secret Any) and type_url=4. */
export function sotwBody(secretAny: Buffer): Buffer {
  return Buffer.concat([lengthDelimited(2, secretAny), SECRET_TYPE_FIELD_SOTW]);
}

/**
 * A DiscoveryResponse: version_info=1, resources=2, type_url=4 (the Secret type), nonce=5. `body` holds the
 * already-encoded resources and type_url fields (sotwBody, or several resources + the type field for Fetch), so a
 * fan-out push copies only the per-stream version and nonce around a shared buffer.
 */
export function encodeDiscoveryResponse(versionInfo: string, body: Buffer, nonce: string): Buffer {
  // One allocation per stream and push (this runs 10,000 times when a bundle changes).
  const vLen = Buffer.byteLength(versionInfo, 'utf8');
  const nLen = Buffer.byteLength(nonce, 'utf8');
  const out = Buffer.allocUnsafe(fieldSize(1, vLen) + body.length + fieldSize(5, nLen));
  let o = writeField(out, 0, 1, versionInfo, vLen);
  o += body.copy(out, o);
  writeField(out, o, 5, nonce, nLen);
  return out;
}

/** Several Secret Anys as the body of one DiscoveryResponse (FetchSecrets). */
export function multiBody(secretAnys: readonly Buffer[]): Buffer {
  return Buffer.concat([...secretAnys.map((a) => lengthDelimited(2, a)), SECRET_TYPE_FIELD_SOTW]);
}

/** A Resource{version=1, resource=2 Any, name=3} as a `resources=2` field of a DeltaDiscoveryResponse. */
export function deltaResourceField(name: string, version: string, secretAny: Buffer): Buffer {
  return lengthDelimited(2, Buffer.concat([lengthDelimited(1, version), lengthDelimited(2, secretAny), lengthDelimited(3, name)]));
}

/** DeltaDiscoveryResponse: system_version_info=1, resources=2, type_url=4, nonce=5, removed_resources=6. */
export function encodeDeltaResponse(
  systemVersion: string,
  resourceFields: readonly Buffer[],
  removed: readonly string[],
  nonce: string,
): Buffer {
  return Buffer.concat([
    lengthDelimited(1, systemVersion),
    ...resourceFields,
    SECRET_TYPE_FIELD_DELTA,
    lengthDelimited(5, nonce),
    ...removed.map((r) => lengthDelimited(6, r)),
  ]);
}
