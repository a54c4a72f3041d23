import * as protoLoader from '@grpc/proto-loader';
import type * as grpc from '@grpc/grpc-js';
import { protoRoot } from '../sds/proto.js';

/** Loader options shared by meshca's own and Istio's protos: field names as in the .proto, enums as names, 64-bit ints as strings. */
export const PROTO_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export const IDENTITY_SERVICE = 'meshca.v1.IdentityService';
export const BUNDLE_SERVICE = 'meshca.v1.BundleService';
export const ISTIO_CA_SERVICE = 'istio.v1.auth.IstioCertificateService';

let cached: protoLoader.PackageDefinition | undefined;

/** proto/meshca/v1/*.proto and proto/istio/v1/auth/ca.proto, loaded once per process. */
export function loadApiProtos(): protoLoader.PackageDefinition {
  cached ??= protoLoader.loadSync(['meshca/v1/identity.proto', 'meshca/v1/bundle.proto', 'istio/v1/auth/ca.proto'], {
    ...PROTO_OPTIONS,
    includeDirs: [protoRoot()],
  });
  return cached;
}

export function serviceDefinition(name: string): grpc.ServiceDefinition {
  const s = loadApiProtos()[name] as grpc.ServiceDefinition | undefined;
  if (!s) throw new Error(`proto: service ${name} missing from proto/`);
  return s;
}
