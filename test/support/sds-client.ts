import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/**
 * A small SDS client that behaves like Envoy (node{id, cluster} on the first request, ACKs echoing version and
 * nonce), built independently of the server code: it loads proto/ itself and decodes Any payloads with its own
 * codecs. One SdsClient = one gRPC channel = one HTTP/2 connection (local subchannel pool), like one Envoy.
 * Reused by integration tests, e2e tests and the benchmark.
 */
export const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';

const PROTO_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'proto');
const PROTO_DIR_SRC = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'proto');

/* eslint-disable @typescript-eslint/no-explicit-any */
type Codec = protoLoader.MessageTypeDefinition<any, any>;

interface ClientProtos {
  readonly Client: grpc.ServiceClientConstructor;
  readonly secret: Codec;
  readonly spiffeValidator: Codec;
  readonly discoveryRequest: Codec;
  readonly discoveryResponse: Codec;
  readonly deltaRequest: Codec;
  readonly deltaResponse: Codec;
}
let protos: ClientProtos | undefined;

export function clientProtos(): ClientProtos {
  if (protos) return protos;
  const files = [
    'envoy/service/secret/v3/sds.proto',
    'envoy/extensions/transport_sockets/tls/v3/secret.proto',
    'envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto',
  ];
  const def = protoLoader.loadSync(files, {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [PROTO_DIR, PROTO_DIR_SRC],
  });
  const pkg = grpc.loadPackageDefinition(def) as any;
  protos = {
    Client: pkg.envoy.service.secret.v3.SecretDiscoveryService as grpc.ServiceClientConstructor,
    secret: def['envoy.extensions.transport_sockets.tls.v3.Secret'] as Codec,
    spiffeValidator: def['envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig'] as Codec,
    discoveryRequest: def['envoy.service.discovery.v3.DiscoveryRequest'] as Codec,
    discoveryResponse: def['envoy.service.discovery.v3.DiscoveryResponse'] as Codec,
    deltaRequest: def['envoy.service.discovery.v3.DeltaDiscoveryRequest'] as Codec,
    deltaResponse: def['envoy.service.discovery.v3.DeltaDiscoveryResponse'] as Codec,
  };
  return protos;
}

export interface Node {
  id: string;
  cluster: string;
}

export interface DecodedSecret {
  name: string;
  type: 'tls_certificate' | 'validation_context' | string;
  tls_certificate?: { certificate_chain: { inline_bytes: Buffer }; private_key: { inline_bytes: Buffer } };
  validation_context?: {
    trusted_ca: { inline_bytes: Buffer } | null;
    custom_validator_config: { name: string; typed_config: { type_url: string; value: Buffer } } | null;
  };
}

export interface SotwResponse {
  version_info: string;
  type_url: string;
  nonce: string;
  resources: Array<{ type_url: string; value: Buffer }>;
  secrets: DecodedSecret[];
}

export interface DeltaResponse {
  system_version_info: string;
  type_url: string;
  nonce: string;
  removed_resources: string[];
  resources: Array<{ name: string; version: string; resource: { type_url: string; value: Buffer } | null }>;
  secrets: DecodedSecret[];
}

export interface EndStatus {
  code: number;
  details: string;
}

export interface SdsClientOptions {
  /** "127.0.0.1:port" or "unix:/path". */
  readonly target: string;
  /** TLS: trust anchors for the server, and optional client certificate (omit for a no-client-cert test). */
  readonly tls?: { readonly caPem: string; readonly certPem?: string; readonly keyPem?: string; readonly serverName?: string };
  /** Default node for the first request of every stream. */
  readonly node?: Node;
  /** Sent as `authorization: Bearer <token>` on every call (Kubernetes ServiceAccount token callers). */
  readonly bearerToken?: string;
}

export function decodeSecret(any: { type_url: string; value: Buffer }): DecodedSecret {
  if (any.type_url !== SECRET_TYPE_URL) throw new Error(`unexpected Any type ${any.type_url}`);
  return clientProtos().secret.deserialize(any.value) as DecodedSecret;
}

/** Async queue of stream messages with per-read timeouts. */
class Inbox<T> {
  private readonly items: T[] = [];
  private waiters: Array<(v: T) => void> = [];
  push(v: T): void {
    const w = this.waiters.shift();
    if (w) w(v);
    else this.items.push(v);
  }
  get pending(): number {
    return this.items.length;
  }
  next(timeoutMs: number, what: string): Promise<T> {
    const v = this.items.shift();
    if (v !== undefined) return Promise.resolve(v);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== done);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const done = (x: T): void => {
        clearTimeout(t);
        resolve(x);
      };
      this.waiters.push(done);
    });
  }
}

abstract class StreamBase<Res> {
  readonly inbox = new Inbox<Res>();
  readonly ended: Promise<EndStatus>;
  protected sentFirst = false;
  endStatus: EndStatus | undefined;

  constructor(protected readonly call: grpc.ClientDuplexStream<any, any>, protected readonly node: Node | undefined) {
    this.ended = new Promise((resolve) => {
      call.on('status', (s: grpc.StatusObject) => {
        this.endStatus = { code: s.code, details: s.details };
        resolve(this.endStatus);
      });
    });
    call.on('error', () => undefined);
  }

  /** Next response, or rejects after timeoutMs (default 5 s). */
  next(timeoutMs = 5000): Promise<Res> {
    return this.inbox.next(timeoutMs, 'an SDS response');
  }

  /** Resolves if no response arrives within ms; rejects with the unexpected response otherwise. */
  async expectSilence(ms: number): Promise<void> {
    try {
      const r = await this.inbox.next(ms, 'silence');
      throw Object.assign(new Error(`expected no response, got one: ${JSON.stringify(r).slice(0, 300)}`), { response: r });
    } catch (e) {
      if ((e as Error).message.startsWith('timed out')) return;
      throw e;
    }
  }

  /** Waits for the call to end (status), default 5 s. */
  async status(timeoutMs = 5000): Promise<EndStatus> {
    let t: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.ended,
        new Promise<EndStatus>((_, reject) => {
          t = setTimeout(() => reject(new Error(`stream did not end within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(t);
    }
  }

  cancel(): void {
    this.call.cancel();
  }

  /** Half-close (client done sending). */
  end(): void {
    this.call.end();
  }
}

export class SotwStream extends StreamBase<SotwResponse> {
  names: string[] = [];

  constructor(call: grpc.ClientDuplexStream<any, any>, node: Node | undefined) {
    super(call, node);
    call.on('data', (r: any) => {
      this.inbox.push({ ...r, secrets: r.resources.map(decodeSecret) });
    });
  }

  /** Sends a raw DiscoveryRequest; node is added on the first one (like Envoy). */
  send(req: { version_info?: string; resource_names?: string[]; type_url?: string; response_nonce?: string; error_detail?: { code: number; message: string }; node?: Node | null }): void {
    const msg: any = { type_url: SECRET_TYPE_URL, version_info: '', response_nonce: '', resource_names: [], ...req };
    if (!this.sentFirst && req.node === undefined && this.node) msg.node = this.node;
    if (req.node === null) delete msg.node;
    this.sentFirst = true;
    if (req.resource_names) this.names = req.resource_names;
    this.call.write(msg);
  }

  /** Subscribes to `names` (full set). */
  request(names: string[], lastVersion = '', nonce = ''): void {
    this.send({ resource_names: names, version_info: lastVersion, response_nonce: nonce });
  }

  ack(r: SotwResponse): void {
    this.send({ resource_names: this.names, version_info: r.version_info, response_nonce: r.nonce });
  }

  nack(r: SotwResponse, previousVersion: string, message = 'Unexpected SDS secrets length'): void {
    this.send({ resource_names: this.names, version_info: previousVersion, response_nonce: r.nonce, error_detail: { code: 13, message } });
  }
}

export class DeltaStream extends StreamBase<DeltaResponse> {
  constructor(call: grpc.ClientDuplexStream<any, any>, node: Node | undefined) {
    super(call, node);
    call.on('data', (r: any) => {
      this.inbox.push({ ...r, secrets: r.resources.filter((x: any) => x.resource).map((x: any) => decodeSecret(x.resource)) });
    });
  }

  send(req: {
    resource_names_subscribe?: string[];
    resource_names_unsubscribe?: string[];
    initial_resource_versions?: Record<string, string>;
    response_nonce?: string;
    error_detail?: { code: number; message: string };
    type_url?: string;
  }): void {
    const msg: any = { type_url: SECRET_TYPE_URL, ...req };
    if (!this.sentFirst && this.node) msg.node = this.node;
    this.sentFirst = true;
    this.call.write(msg);
  }

  ack(r: DeltaResponse): void {
    this.send({ response_nonce: r.nonce });
  }
}

export class SdsClient {
  readonly client: grpc.Client & Record<string, any>;

  constructor(readonly opts: SdsClientOptions) {
    const { Client } = clientProtos();
    const ssl = opts.tls
      ? grpc.credentials.createSsl(
          Buffer.from(opts.tls.caPem),
          opts.tls.keyPem ? Buffer.from(opts.tls.keyPem) : null,
          opts.tls.certPem ? Buffer.from(opts.tls.certPem) : null,
        )
      : grpc.credentials.createInsecure();
    const token = opts.bearerToken;
    const creds =
      token && opts.tls
        ? grpc.credentials.combineChannelCredentials(
            ssl,
            grpc.credentials.createFromMetadataGenerator((_ctx, cb) => {
              const md = new grpc.Metadata();
              md.set('authorization', `Bearer ${token}`);
              cb(null, md);
            }),
          )
        : ssl;
    const serverName = opts.tls?.serverName ?? 'localhost';
    this.client = new Client(opts.target, creds, {
      'grpc.use_local_subchannel_pool': 1,
      'grpc.enable_channelz': 0,
      ...(opts.tls ? { 'grpc.ssl_target_name_override': serverName, 'grpc.default_authority': serverName } : {}),
    }) as grpc.Client & Record<string, any>;
  }

  streamSecrets(node: Node | undefined = this.opts.node): SotwStream {
    return new SotwStream(this.client.StreamSecrets(), node);
  }

  deltaSecrets(node: Node | undefined = this.opts.node): DeltaStream {
    return new DeltaStream(this.client.DeltaSecrets(), node);
  }

  /** envoy.service.discovery.v3.AggregatedDiscoveryService (ADS) streams, on the same channel. */
  aggregatedResources(node: Node | undefined = this.opts.node): SotwStream {
    const p = clientProtos();
    return new SotwStream(this.adsCall('StreamAggregatedResources', p.discoveryRequest, p.discoveryResponse), node);
  }

  deltaAggregatedResources(node: Node | undefined = this.opts.node): DeltaStream {
    const p = clientProtos();
    return new DeltaStream(this.adsCall('DeltaAggregatedResources', p.deltaRequest, p.deltaResponse), node);
  }

  private adsCall(method: string, req: Codec, res: Codec): grpc.ClientDuplexStream<any, any> {
    return this.client.makeBidiStreamRequest(
      `/envoy.service.discovery.v3.AggregatedDiscoveryService/${method}`,
      (v: object) => req.serialize(v) as Buffer,
      (b: Buffer) => res.deserialize(b),
    );
  }

  fetchSecrets(names: string[], node: Node | undefined = this.opts.node, typeUrl = SECRET_TYPE_URL, timeoutMs = 10_000): Promise<SotwResponse> {
    return new Promise((resolve, reject) => {
      this.client.FetchSecrets(
        { node, resource_names: names, type_url: typeUrl },
        { deadline: Date.now() + timeoutMs },
        (err: grpc.ServiceError | null, r: any) => {
          if (err) reject(err);
          else resolve({ ...r, secrets: r.resources.map(decodeSecret) });
        },
      );
    });
  }

  /** Waits until the channel is connected (TLS handshake done) or rejects. */
  waitReady(timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => this.client.waitForReady(Date.now() + timeoutMs, (e) => (e ? reject(e) : resolve())));
  }

  close(): void {
    this.client.close();
  }
}
