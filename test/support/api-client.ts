import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/**
 * A client for meshca's controller API and Istio's CA service built only from the .proto files (proto/), as a third
 * party would: nothing from src/ is used to encode or decode.
 */
const PROTO_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'proto');

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

let pkg: Any;
function load(): Any {
  pkg ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(['meshca/v1/identity.proto', 'meshca/v1/bundle.proto', 'istio/v1/auth/ca.proto'], {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: [PROTO_DIR],
    }),
  );
  return pkg;
}

export interface ClientCreds {
  /** PEM roots to verify the server with. */
  readonly rootsPem: string;
  /** Client certificate chain and key (PEM); omit for a call without a client certificate. */
  readonly certPem?: string;
  readonly keyPem?: string;
}

export interface ApiClients {
  readonly identity: Any;
  readonly bundle: Any;
  readonly istio: Any;
  close(): void;
}

export function apiClients(port: number, creds: ClientCreds, options: grpc.ClientOptions = {}): ApiClients {
  const p = load();
  const c = grpc.credentials.createSsl(
    Buffer.from(creds.rootsPem),
    creds.keyPem ? Buffer.from(creds.keyPem) : null,
    creds.certPem ? Buffer.from(creds.certPem) : null,
  );
  const target = `127.0.0.1:${port}`;
  // The server certificate names localhost (and 127.0.0.1); verify by name, not by IP SNI.
  const opts = { 'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost', ...options };
  const identity = new p.meshca.v1.IdentityService(target, c, opts);
  const bundle = new p.meshca.v1.BundleService(target, c, opts);
  const istio = new p.istio.v1.auth.IstioCertificateService(target, c, opts);
  return {
    identity,
    bundle,
    istio,
    close: () => {
      identity.close();
      bundle.close();
      istio.close();
    },
  };
}

/** Promisified unary call with a deadline; rejects with the grpc ServiceError. */
export function unary<Res = Any>(client: Any, method: string, req: unknown, metadata?: grpc.Metadata, timeoutMs = 10_000): Promise<Res> {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + timeoutMs);
    const cb = (err: grpc.ServiceError | null, res: Res) => (err ? reject(err) : resolve(res));
    if (metadata) client[method](req, metadata, { deadline }, cb);
    else client[method](req, { deadline }, cb);
  });
}
