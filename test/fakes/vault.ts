import 'reflect-metadata';
import { createHash, createPublicKey, randomBytes, randomUUID, webcrypto, X509Certificate } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as x509 from '@peculiar/x509';

/**
 * A strict fake of the parts of HashiCorp Vault's HTTP API that meshca calls, served on 127.0.0.1:0.
 *
 * Wire facts follow Vault (paths under /v1/, X-Vault-Token / Authorization: Bearer, X-Vault-Namespace, the
 * response envelope {request_id, lease_id, lease_duration, renewable, data, wrap_info, warnings, auth}, errors as
 * {"errors":[...]} with Vault's status codes and, where known, Vault's error texts). The PKI engine holds a real
 * self-signed root made here with @peculiar/x509 and WebCrypto, independent of meshca's own x509 code, so the
 * certificates it returns are an independent check of what meshca does with them.
 *
 * Simplifications (documented, deliberate): a token is valid only in the namespace that created it, except root
 * tokens made by the fake in the root namespace, which work everywhere; ACL paths match the most specific rule
 * (exact, then the longest "*"/"+" pattern); a "standby" node answers 429 instead of forwarding.
 */

const subtle = webcrypto.subtle;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type Algorithm = webcrypto.Algorithm;
/** WebCrypto as @peculiar/x509 wants it (its Crypto type comes from the DOM lib, which this project does not load). */
const wc = webcrypto as unknown as Parameters<typeof x509.X509CertificateGenerator.create>[1];

export interface FakeVaultOptions {
  /** Time source for token expiry and certificate validity (pass a ManualClock's nowMs). Default Date.now. */
  readonly now?: () => number;
  /** Root token of the root namespace. Default "root-token". */
  readonly rootToken?: string;
  /** Namespaces besides the root one ("" ). Each has its own mounts, tokens, policies and auth methods. */
  readonly namespaces?: readonly string[];
  /** PKI mounts to create at start in the root namespace, each with a fresh root. Default ["pki"]. */
  readonly pkiMounts?: readonly string[];
  /** Key type of generated roots. Default "ec". */
  readonly rootKeyType?: 'ec' | 'rsa';
  /** Added latency for every request, ms. Can be changed later with fake.latencyMs. */
  readonly latencyMs?: number;
  /** Serve HTTPS with a generated CA (fake.tls.caPem); the server cert covers serverName, localhost and 127.0.0.1. */
  readonly tls?: { readonly serverName?: string; readonly requireClientCert?: boolean };
  /**
   * Answer like a Vault Agent / Vault Proxy listener with `require_request_header = true`: any request without
   * `X-Vault-Request: true` gets 412 {"errors":["missing \"X-Vault-Request\" header"]}. The Vault server itself does
   * not require the header; every official client sends it.
   */
  readonly requireRequestHeader?: boolean;
}

export interface PkiMountOptions {
  readonly namespace?: string;
  /** Sign this mount's CA with another mount's issuer (an intermediate mount), instead of a self-signed root. */
  readonly parent?: string;
  /** Mount max lease TTL, seconds. Default 87600h (what `vault secrets tune -max-lease-ttl=87600h` sets). */
  readonly maxLeaseTtlSeconds?: number;
  /** Mount default lease TTL, seconds. Default 768h, Vault's system default. */
  readonly defaultLeaseTtlSeconds?: number;
  /** Lifetime of the generated CA certificate, seconds. Default 10 years. */
  readonly caTtlSeconds?: number;
  readonly keyType?: 'ec' | 'rsa';
  /** issuer_name of the mount's (only, default) issuer; "default" refers to it too. Default "" (unnamed). */
  readonly issuerName?: string;
}

export interface TokenOptions {
  readonly namespace?: string;
  /** Policies; "default" is added unless noDefaultPolicy or the token is a root token. */
  readonly policies?: readonly string[];
  readonly noDefaultPolicy?: boolean;
  /** 0 = never expires (root-like). Default 3600. */
  readonly ttlSeconds?: number;
  readonly explicitMaxTtlSeconds?: number;
  readonly renewable?: boolean;
  readonly type?: 'service' | 'batch';
  readonly displayName?: string;
  /** Fixed token value; default random "hvs.*". */
  readonly id?: string;
}

export interface AppRoleOptions {
  readonly namespace?: string;
  readonly mount?: string;
  readonly roleId?: string;
  readonly secretId?: string;
  /** false = role_id alone logs in (bind_secret_id=false). Default true. */
  readonly bindSecretId?: boolean;
  readonly policies?: readonly string[];
  readonly tokenTtlSeconds?: number;
  readonly tokenMaxTtlSeconds?: number;
  readonly tokenType?: 'service' | 'batch';
}

export interface KubernetesRoleOptions {
  readonly namespace?: string;
  readonly mount?: string;
  /** Service-account JWTs this fake's "TokenReview" accepts, with the identity each stands for. */
  readonly jwts: Readonly<Record<string, { readonly serviceAccountName: string; readonly serviceAccountNamespace: string }>>;
  readonly boundServiceAccountNames: readonly string[];
  readonly boundServiceAccountNamespaces: readonly string[];
  readonly policies?: readonly string[];
  readonly tokenTtlSeconds?: number;
  readonly tokenMaxTtlSeconds?: number;
}

export interface LoggedRequest {
  readonly method: string;
  /** Path after /v1/, without the query. */
  readonly path: string;
  readonly query: string;
  /** Normalised namespace ("" = root) taken from X-Vault-Namespace. */
  readonly namespace: string;
  /** Lower-cased request headers as received. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: unknown;
  status: number;
}

export interface FailureKnob {
  readonly count: number;
  readonly status: number;
  readonly errors?: readonly string[];
  /** Only requests whose path starts with this prefix count and fail. */
  readonly pathPrefix?: string;
}

export interface FakeVault {
  readonly url: string;
  readonly rootToken: string;
  /** Present when started with tls. */
  readonly tls?: { readonly caPem: string; readonly serverName: string; readonly clientCertPem?: string; readonly clientKeyPem?: string };
  readonly requests: LoggedRequest[];
  latencyMs: number;
  close(): Promise<void>;
  seal(): void;
  unseal(): void;
  setStandby(standby: boolean): void;
  /**
   * false = an uninitialised Vault: sys/health answers 501 with initialized:false, sealed:true (uninitcode
   * overrides it); every other request 503 "Vault is sealed".
   */
  setInitialized(initialized: boolean): void;
  /**
   * Replication role as sys/health reports it: "dr-secondary" answers 472 (drsecondarycode) with
   * replication_dr_mode "secondary"; "perf-standby" answers 473 (performancestandbycode; perfstandbyok=true gives
   * the active code) with performance_standby:true and standby:true. Only sys/health changes: a performance
   * standby serves the API (it forwards writes); a DR secondary's API refusals are not modelled.
   */
  setReplication(role: 'none' | 'dr-secondary' | 'perf-standby'): void;
  /** The next `count` requests (optionally only under pathPrefix; never sys/health) fail with `status`. */
  failNext(knob: FailureKnob): void;
  /** The next `count` requests get no answer until the fake closes (client timeouts). */
  hangNext(count: number, pathPrefix?: string): void;
  createToken(opts?: TokenOptions): string;
  /** Makes a token expire now (its next use gets 403 permission denied). */
  expireToken(token: string): void;
  /** Sets a policy from HCL: path "x" { capabilities = [...] } blocks. */
  setPolicy(name: string, hcl: string, namespace?: string): void;
  mountPki(path: string, opts?: PkiMountOptions): Promise<void>;
  setRole(mount: string, name: string, settings: Record<string, unknown>, namespace?: string): void;
  addAppRole(name: string, opts?: AppRoleOptions): { roleId: string; secretId: string };
  addKubernetesRole(name: string, opts: KubernetesRoleOptions): void;
  enableAuth(type: 'approle' | 'kubernetes', mount: string, namespace?: string): void;
  /** The mount's issuing CA certificate (PEM). */
  caPem(mount: string, namespace?: string): string;
  /** The mount's self-signed root (PEM). */
  rootPem(mount: string, namespace?: string): string;
  /** Number of certificates issued by a mount (sign and sign-intermediate). */
  issuedCount(mount: string, namespace?: string): number;
  /** Tokens currently known (ids), for assertions. */
  tokenCount(namespace?: string): number;
}

// ---------------------------------------------------------------------------------------------------------------
// Internal model

class VaultHttpError extends Error {
  constructor(
    readonly status: number,
    readonly errors: string[],
  ) {
    super(errors.join('; '));
  }
}
const fail = (status: number, ...errors: string[]): never => {
  throw new VaultHttpError(status, errors);
};
const userError = (msg: string): never => fail(400, msg);

interface Token {
  id: string;
  accessor: string;
  namespace: string;
  policies: string[];
  creationTtl: number;
  issuedAtMs: number;
  expireAtMs: number; // 0 = never
  explicitMaxTtl: number;
  renewable: boolean;
  type: 'service' | 'batch';
  displayName: string;
  path: string;
  meta: Record<string, string> | null;
}

interface PolicyRule {
  path: string;
  capabilities: Set<string>;
}

interface Issuer {
  id: string;
  name: string;
  cert: x509.X509Certificate;
  der: Buffer;
  pem: string;
  key: CryptoKey;
  /** Issuer first, then its parents up to and including the root. PEM. */
  chainPem: string[];
  leafNotAfterBehavior: 'err' | 'truncate' | 'permit';
  maxPathLen: number; // -1 = none
}

interface Role {
  settings: Record<string, unknown>;
}

interface PkiMount {
  path: string;
  issuer: Issuer;
  roles: Map<string, Role>;
  maxLeaseTtl: number;
  defaultLeaseTtl: number;
  issued: number;
}

interface AuthMount {
  type: 'approle' | 'kubernetes';
  path: string;
  approles: Map<string, { name: string } & Required<Omit<AppRoleOptions, 'namespace' | 'mount'>>>;
  k8sRoles: Map<string, KubernetesRoleOptions>;
}

interface Namespace {
  tokens: Map<string, Token>;
  policies: Map<string, PolicyRule[]>;
  pki: Map<string, PkiMount>;
  auth: Map<string, AuthMount>;
}

const DEFAULT_POLICY: PolicyRule[] = [
  { path: 'auth/token/lookup-self', capabilities: new Set(['read']) },
  { path: 'auth/token/renew-self', capabilities: new Set(['update']) },
  { path: 'auth/token/revoke-self', capabilities: new Set(['update']) },
  { path: 'sys/capabilities-self', capabilities: new Set(['update']) },
];

/** Vault's role defaults for the settings this fake enforces. */
const ROLE_DEFAULTS: Record<string, unknown> = {
  ttl: 0,
  max_ttl: 0,
  allow_localhost: true,
  allowed_domains: [],
  allow_bare_domains: false,
  allow_subdomains: false,
  allow_glob_domains: false,
  allow_any_name: false,
  enforce_hostnames: true,
  allow_ip_sans: true,
  allowed_uri_sans: [],
  server_flag: true,
  client_flag: true,
  key_type: 'rsa',
  key_bits: 0,
  key_usage: ['DigitalSignature', 'KeyAgreement', 'KeyEncipherment'],
  use_csr_common_name: true,
  use_csr_sans: true,
  require_cn: true,
  basic_constraints_valid_for_non_ca: false,
  not_before_duration: 30,
  no_store: false,
  generate_lease: false,
  issuer_ref: 'default',
  organization: [],
  ou: [],
  country: [],
};
const ROLE_LIST_KEYS = new Set(['allowed_domains', 'allowed_uri_sans', 'key_usage', 'organization', 'ou', 'country']);
const ROLE_BOOL_KEYS = new Set(Object.entries(ROLE_DEFAULTS).filter(([, v]) => typeof v === 'boolean').map(([k]) => k));
const ROLE_DURATION_KEYS = new Set(['ttl', 'max_ttl', 'not_before_duration']);

const SIGN_FIELDS = new Set([
  'csr', 'common_name', 'alt_names', 'ip_sans', 'uri_sans', 'other_sans', 'ttl', 'format', 'exclude_cn_from_sans',
  'not_after', 'remove_roots_from_chain', 'private_key_format', 'serial_number', 'user_ids', 'cert_metadata',
]);
const SIGN_INTERMEDIATE_FIELDS = new Set([
  ...SIGN_FIELDS, 'use_csr_values', 'max_path_length', 'permitted_dns_domains', 'not_before_duration', 'ou',
  'organization', 'country', 'locality', 'province', 'street_address', 'postal_code', 'signature_bits', 'use_pss',
  'skid', 'key_usage', 'ext_key_usage', 'issuer_ref',
]);

/** Vault's parseutil.ParseDurationSecond: "1h", "90m", "1h30m", "300s", "300", 300, "2d". */
export function parseVaultDuration(v: unknown, field: string): number {
  if (v === undefined || v === null || v === '') return 0;
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) userError(`error converting input ${v} for field "${field}"`);
    return Math.floor(v);
  }
  if (typeof v !== 'string') return userError(`error converting input for field "${field}": expected a string or number`);
  if (/^\d+$/.test(v)) return Number(v);
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)/gy;
  const unit: Record<string, number> = { ns: 1e-9, us: 1e-6, µs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600, d: 86400 };
  let total = 0;
  let end = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(v)) !== null) {
    total += Number(m[1]) * unit[m[2]!]!;
    end = re.lastIndex;
  }
  if (end !== v.length) userError(`error converting input ${v} for field "${field}": time: invalid duration "${v}"`);
  return Math.floor(total);
}

/** ryanuber/go-glob: "*" matches any run of characters, including "/". */
export function vaultGlob(pattern: string, subject: string): boolean {
  if (pattern === '*') return true;
  const parts = pattern.split('*');
  if (parts.length === 1) return pattern === subject;
  const first = parts[0]!;
  const last = parts[parts.length - 1]!;
  if (!subject.startsWith(first)) return false;
  let pos = first.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const idx = subject.indexOf(parts[i]!, pos);
    if (idx < 0) return false;
    pos = idx + parts[i]!.length;
  }
  return subject.length - last.length >= pos && subject.endsWith(last);
}

function parsePolicyHcl(hcl: string): PolicyRule[] {
  const rules: PolicyRule[] = [];
  const noComments = hcl.replace(/(^|\s)#.*$/gm, '$1').replace(/\/\/.*$/gm, '');
  const re = /path\s+"([^"]+)"\s*\{([^}]*)\}/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(noComments)) !== null) {
    const caps = /capabilities\s*=\s*\[([^\]]*)\]/.exec(m[2]!);
    if (!caps) throw new Error(`policy path "${m[1]}" has no capabilities`);
    const list = [...caps[1]!.matchAll(/"([^"]+)"/g)].map((c) => c[1]!);
    const known = new Set(['create', 'read', 'update', 'patch', 'delete', 'list', 'sudo', 'deny']);
    for (const c of list) if (!known.has(c)) throw new Error(`policy path "${m[1]}": unknown capability "${c}"`);
    rules.push({ path: m[1]!, capabilities: new Set(list) });
  }
  if (rules.length === 0 && hcl.trim().length > 0) throw new Error('policy has no path blocks');
  return rules;
}

function policyPathMatches(pattern: string, path: string): boolean {
  const glob = pattern.endsWith('*');
  const base = glob ? pattern.slice(0, -1) : pattern;
  const pSegs = base.split('/');
  const sSegs = path.split('/');
  if (!glob && pSegs.length !== sSegs.length) return false;
  for (let i = 0; i < pSegs.length; i++) {
    const p = pSegs[i]!;
    const s = sSegs[i];
    if (s === undefined) return false;
    if (p === '+') continue;
    if (i === pSegs.length - 1 && glob) return s.startsWith(p);
    if (p !== s) return false;
  }
  return true;
}

function normNs(raw: string | string[] | undefined): string {
  const v = Array.isArray(raw) ? raw[0] : raw;
  return (v ?? '').trim().replace(/^\/+|\/+$/g, '');
}

const pemOf = (der: Buffer | ArrayBuffer, label: string): string => {
  const b64 = Buffer.from(der as ArrayBuffer).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----`;
};

const serialColonHex = (hex: string): string => hex.toLowerCase().match(/.{2}/g)!.join(':');

function signingAlgorithm(key: CryptoKey): Algorithm & Record<string, unknown> {
  const alg = key.algorithm as Algorithm & { namedCurve?: string };
  if (alg.name === 'ECDSA') return { name: 'ECDSA', hash: alg.namedCurve === 'P-384' ? 'SHA-384' : 'SHA-256' };
  return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
}

async function generateCaKey(type: 'ec' | 'rsa'): Promise<CryptoKeyPair> {
  if (type === 'rsa') {
    return subtle.generateKey(
      { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
      true,
      ['sign', 'verify'],
    ) as Promise<CryptoKeyPair>;
  }
  return subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
}

/** Random positive serial of 20 bytes (Vault uses 159 random bits). */
function newSerialHex(): string {
  const b = randomBytes(20);
  b[0] = b[0]! & 0x7f;
  if (b[0] === 0) b[0] = 1;
  return b.toString('hex');
}

function skiOf(spkiDer: ArrayBuffer | Buffer): string {
  return createHash('sha1').update(Buffer.from(spkiDer as ArrayBuffer)).digest('hex');
}

const ISO = (ms: number): string => new Date(ms).toISOString();

// ---------------------------------------------------------------------------------------------------------------

export async function startFakeVault(opts: FakeVaultOptions = {}): Promise<FakeVault> {
  const now = opts.now ?? Date.now;
  const rootToken = opts.rootToken ?? 'root-token';
  const namespaces = new Map<string, Namespace>();
  const newNs = (): Namespace => ({ tokens: new Map(), policies: new Map(), pki: new Map(), auth: new Map() });
  namespaces.set('', newNs());
  for (const ns of opts.namespaces ?? []) namespaces.set(normNs(ns), newNs());

  let sealed = false;
  let standby = false;
  let initialized = true;
  let replication: 'none' | 'dr-secondary' | 'perf-standby' = 'none';
  const failures: Array<{ left: number; status: number; errors: string[]; pathPrefix?: string }> = [];
  const hangs: Array<{ left: number; pathPrefix?: string }> = [];
  const hung = new Set<http.ServerResponse>();
  const requests: LoggedRequest[] = [];
  const clusterId = randomUUID();

  const nsOf = (name: string): Namespace => {
    const ns = namespaces.get(normNs(name));
    if (!ns) throw new Error(`fake vault: no namespace "${name}" (pass it in opts.namespaces)`);
    return ns;
  };

  function createToken(o: TokenOptions = {}): string {
    const ns = nsOf(o.namespace ?? '');
    const id = o.id ?? `hvs.${randomBytes(18).toString('base64url')}`;
    const ttl = o.ttlSeconds ?? 3600;
    const t: Token = {
      id,
      accessor: randomBytes(12).toString('hex'),
      namespace: normNs(o.namespace ?? ''),
      policies: (() => {
        const p = [...(o.policies ?? [])];
        if (!p.includes('root') && !o.noDefaultPolicy && !p.includes('default')) p.unshift('default');
        return p;
      })(),
      creationTtl: ttl,
      issuedAtMs: now(),
      expireAtMs: ttl > 0 ? now() + ttl * 1000 : 0,
      explicitMaxTtl: o.explicitMaxTtlSeconds ?? 0,
      renewable: o.type === 'batch' ? false : (o.renewable ?? ttl > 0),
      type: o.type ?? 'service',
      displayName: o.displayName ?? 'token',
      path: 'auth/token/create',
      meta: null,
    };
    ns.tokens.set(id, t);
    return id;
  }
  createToken({ id: rootToken, policies: ['root'], ttlSeconds: 0, displayName: 'root', renewable: false });

  async function makeIssuer(name: string, keyType: 'ec' | 'rsa', ttl: number, parent?: Issuer, issuerName = ''): Promise<Issuer> {
    const keys = await generateCaKey(keyType);
    const spki = await subtle.exportKey('spki', keys.publicKey);
    const nb = new Date(now() - 30_000);
    let na = new Date(now() + ttl * 1000);
    if (parent && na > parent.cert.notAfter) na = parent.cert.notAfter;
    const serial = newSerialHex();
    const subject = `CN=${name}`;
    const exts: x509.Extension[] = [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      new x509.SubjectKeyIdentifierExtension(skiOf(spki)),
    ];
    if (parent) {
      exts.push(new x509.AuthorityKeyIdentifierExtension(skiOf(parent.cert.publicKey.rawData)));
    }
    const cert = await x509.X509CertificateGenerator.create(
      {
        serialNumber: serial,
        subject,
        issuer: parent ? parent.cert.subject : subject,
        notBefore: nb,
        notAfter: na,
        publicKey: keys.publicKey,
        signingKey: parent ? parent.key : keys.privateKey,
        signingAlgorithm: signingAlgorithm(parent ? parent.key : keys.privateKey),
        extensions: exts,
      },
      wc,
    );
    const der = Buffer.from(cert.rawData);
    const pem = pemOf(der, 'CERTIFICATE');
    return {
      id: randomUUID(),
      name: issuerName,
      cert,
      der,
      pem,
      key: keys.privateKey,
      chainPem: [pem, ...(parent ? parent.chainPem : [])],
      leafNotAfterBehavior: 'err',
      maxPathLen: -1,
    };
  }

  async function mountPki(path: string, o: PkiMountOptions = {}): Promise<void> {
    const ns = nsOf(o.namespace ?? '');
    const parent = o.parent ? ns.pki.get(o.parent) : undefined;
    if (o.parent && !parent) throw new Error(`fake vault: parent mount "${o.parent}" does not exist`);
    const label = parent ? `fake vault intermediate (${path})` : `fake vault root (${path})`;
    const issuer = await makeIssuer(label, o.keyType ?? opts.rootKeyType ?? 'ec', o.caTtlSeconds ?? 10 * 365 * 86400, parent?.issuer, o.issuerName ?? '');
    if (parent) parent.issued++;
    ns.pki.set(path, {
      path,
      issuer,
      roles: new Map(),
      maxLeaseTtl: o.maxLeaseTtlSeconds ?? 87600 * 3600,
      defaultLeaseTtl: o.defaultLeaseTtlSeconds ?? 768 * 3600,
      issued: 0,
    });
  }
  for (const m of opts.pkiMounts ?? ['pki']) await mountPki(m);

  function normaliseRole(body: Record<string, unknown>): Role {
    const settings: Record<string, unknown> = { ...ROLE_DEFAULTS };
    for (const [k, v] of Object.entries(body)) {
      if (ROLE_LIST_KEYS.has(k)) {
        settings[k] = Array.isArray(v) ? v.map(String) : typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : userError(`field "${k}" must be a list or comma-separated string`);
      } else if (ROLE_BOOL_KEYS.has(k)) {
        if (typeof v === 'boolean') settings[k] = v;
        else if (v === 'true' || v === 'false') settings[k] = v === 'true';
        else userError(`error converting input ${String(v)} for field "${k}": cannot parse '' as bool`);
      } else if (ROLE_DURATION_KEYS.has(k)) {
        settings[k] = parseVaultDuration(v, k);
      } else {
        settings[k] = v;
      }
    }
    const kt = settings.key_type;
    if (kt !== 'rsa' && kt !== 'ec' && kt !== 'ed25519' && kt !== 'any') userError(`unknown key type ${String(kt)}`);
    if (Number(settings.key_bits) === 0) settings.key_bits = kt === 'rsa' ? 2048 : kt === 'ec' ? 256 : 0;
    if (Number(settings.max_ttl) > 0 && Number(settings.ttl) > Number(settings.max_ttl)) {
      userError('"ttl" value must be less than "max_ttl" value');
    }
    return { settings };
  }

  function setRole(mount: string, name: string, settings: Record<string, unknown>, namespace = ''): void {
    const m = nsOf(namespace).pki.get(mount);
    if (!m) throw new Error(`fake vault: no PKI mount "${mount}"`);
    m.roles.set(name, normaliseRole(settings));
  }

  function addAuthMount(type: 'approle' | 'kubernetes', mount: string, namespace = ''): AuthMount {
    const ns = nsOf(namespace);
    let a = ns.auth.get(mount);
    if (!a) {
      a = { type, path: mount, approles: new Map(), k8sRoles: new Map() };
      ns.auth.set(mount, a);
    }
    if (a.type !== type) throw new Error(`fake vault: auth mount ${mount} is ${a.type}, not ${type}`);
    return a;
  }

  // ------------------------------------------------------------------------------------------------------------
  // Token handling and ACL

  function liveToken(ns: Namespace, nsName: string, id: string | undefined): Token | undefined {
    if (!id) return undefined;
    let t = ns.tokens.get(id);
    if (!t && nsName !== '') {
      const rootT = namespaces.get('')!.tokens.get(id);
      if (rootT && rootT.policies.includes('root')) t = rootT;
    }
    if (!t) return undefined;
    if (t.expireAtMs !== 0 && now() >= t.expireAtMs) {
      ns.tokens.delete(id);
      return undefined;
    }
    return t;
  }

  function allowed(ns: Namespace, t: Token, path: string, caps: readonly string[]): boolean {
    if (t.policies.includes('root')) return true;
    const rules: PolicyRule[] = [];
    for (const p of t.policies) {
      if (p === 'default') rules.push(...DEFAULT_POLICY);
      rules.push(...(ns.policies.get(p) ?? []));
    }
    const matching = rules.filter((r) => policyPathMatches(r.path, path));
    if (matching.length === 0) return false;
    const exact = matching.filter((r) => !r.path.endsWith('*') && !r.path.includes('+'));
    const chosen = exact.length > 0 ? exact : (() => {
      const best = Math.max(...matching.map((r) => r.path.length));
      return matching.filter((r) => r.path.length === best);
    })();
    const union = new Set<string>();
    for (const r of chosen) for (const c of r.capabilities) union.add(c);
    if (union.has('deny')) return false;
    return caps.some((c) => union.has(c));
  }

  function tokenAuthBlock(t: Token, ns: string): Record<string, unknown> {
    return {
      client_token: t.id,
      accessor: t.accessor,
      policies: t.policies,
      token_policies: t.policies,
      identity_policies: null,
      metadata: t.meta,
      lease_duration: t.expireAtMs === 0 ? 0 : Math.max(0, Math.round((t.expireAtMs - now()) / 1000)),
      renewable: t.renewable,
      entity_id: '',
      token_type: t.type,
      orphan: true,
      mfa_requirement: null,
      num_uses: 0,
      ...(ns ? { namespace_path: `${ns}/` } : {}),
    };
  }

  function loginToken(nsName: string, o: { policies: readonly string[]; ttl: number; maxTtl: number; type?: 'service' | 'batch'; path: string; meta: Record<string, string> }): Token {
    const id = createToken({
      namespace: nsName,
      policies: ['default', ...o.policies.filter((p) => p !== 'default')],
      ttlSeconds: o.ttl,
      explicitMaxTtlSeconds: o.maxTtl,
      renewable: o.type !== 'batch',
      type: o.type ?? 'service',
      displayName: o.path.split('/')[1] ?? 'login',
    });
    const t = nsOf(nsName).tokens.get(id)!;
    t.path = o.path;
    t.meta = o.meta;
    return t;
  }

  // ------------------------------------------------------------------------------------------------------------
  // PKI

  interface ParsedCsr {
    csr: x509.Pkcs10CertificateRequest;
    cn: string;
    uris: string[];
    dns: string[];
    ips: string[];
    keyType: string;
    keyBits: number;
    subject: x509.Name;
  }

  async function parseCsr(raw: unknown): Promise<ParsedCsr> {
    if (typeof raw !== 'string' || raw.trim() === '') return userError('certificate request could not be parsed: "csr" is empty');
    let csr: x509.Pkcs10CertificateRequest;
    try {
      if (!raw.includes('-----BEGIN CERTIFICATE REQUEST-----') && !raw.includes('-----BEGIN NEW CERTIFICATE REQUEST-----')) throw new Error('no PEM block');
      csr = new x509.Pkcs10CertificateRequest(raw.replace('NEW CERTIFICATE REQUEST', 'CERTIFICATE REQUEST').replace('NEW CERTIFICATE REQUEST', 'CERTIFICATE REQUEST'));
    } catch {
      return userError('certificate request could not be parsed');
    }
    let ok = false;
    try {
      ok = await csr.verify(wc);
    } catch {
      ok = false;
    }
    if (!ok) userError('request signature invalid');
    const pub = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
    const kt = pub.asymmetricKeyType ?? 'unknown';
    const d = pub.asymmetricKeyDetails ?? {};
    const keyBits = kt === 'rsa' ? (d.modulusLength ?? 0) : kt === 'ec' ? ({ prime256v1: 256, secp384r1: 384, secp521r1: 521 } as Record<string, number>)[d.namedCurve ?? ''] ?? 0 : 0;
    const san = csr.extensions.find((e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension);
    const items = san ? san.names.items : [];
    return {
      csr,
      cn: csr.subjectName.getField('CN')[0] ?? '',
      uris: items.filter((n) => n.type === 'url').map((n) => n.value),
      dns: items.filter((n) => n.type === 'dns').map((n) => n.value),
      ips: items.filter((n) => n.type === 'ip').map((n) => n.value),
      keyType: kt,
      keyBits,
      subject: csr.subjectName,
    };
  }

  function listField(v: unknown): string[] {
    if (v === undefined || v === null || v === '') return [];
    if (Array.isArray(v)) return v.map(String).filter(Boolean);
    return String(v).split(',').map((s) => s.trim()).filter(Boolean);
  }

  function nameAllowed(role: Record<string, unknown>, name: string): boolean {
    if (role.allow_any_name) return true;
    if (role.allow_localhost && name === 'localhost') return true;
    for (const d of role.allowed_domains as string[]) {
      if (role.allow_bare_domains && name === d) return true;
      if (role.allow_subdomains && name.endsWith(`.${d}`)) return true;
      if (role.allow_glob_domains && d.includes('*') && vaultGlob(d, name)) return true;
    }
    return false;
  }

  function formatOut(format: unknown, issued: { der: Buffer; pem: string }, issuer: Issuer, removeRoots: boolean): Record<string, unknown> {
    const f = format ?? 'pem';
    if (f !== 'pem' && f !== 'der' && f !== 'pem_bundle') userError(`unknown format for the certificate: ${String(f)}`);
    let chain = issuer.chainPem;
    if (removeRoots) chain = chain.filter((p) => { const c = new X509Certificate(p); return !(c.subject === c.issuer && c.verify(c.publicKey)); });
    const toDer = (p: string): string => new X509Certificate(p).raw.toString('base64');
    if (f === 'der') {
      return { certificate: issued.der.toString('base64'), issuing_ca: toDer(issuer.pem), ca_chain: chain.map(toDer) };
    }
    return {
      certificate: f === 'pem_bundle' ? [issued.pem, ...chain].join('\n') : issued.pem,
      issuing_ca: issuer.pem,
      ca_chain: chain,
    };
  }

  async function issue(
    mount: PkiMount,
    csr: ParsedCsr,
    p: {
      subject: string;
      uris: string[];
      dns: string[];
      ips: string[];
      notAfterMs: number;
      notBeforeDuration: number;
      ca: boolean;
      maxPathLen?: number;
      keyUsage: number;
      eku: string[];
      bcForNonCa: boolean;
      permittedDns?: string[];
    },
  ): Promise<{ der: Buffer; pem: string; serial: string; notAfterMs: number }> {
    const issuer = mount.issuer;
    const exts: x509.Extension[] = [];
    if (p.ca) exts.push(new x509.BasicConstraintsExtension(true, p.maxPathLen !== undefined && p.maxPathLen >= 0 ? p.maxPathLen : undefined, true));
    else if (p.bcForNonCa) exts.push(new x509.BasicConstraintsExtension(false, undefined, true));
    if (p.keyUsage) exts.push(new x509.KeyUsagesExtension(p.keyUsage, true));
    if (p.eku.length) exts.push(new x509.ExtendedKeyUsageExtension(p.eku, false));
    exts.push(new x509.SubjectKeyIdentifierExtension(skiOf(csr.csr.publicKey.rawData)));
    exts.push(new x509.AuthorityKeyIdentifierExtension(skiOf(issuer.cert.publicKey.rawData)));
    const names: x509.JsonGeneralName[] = [
      ...p.dns.map((v) => ({ type: 'dns' as const, value: v })),
      ...p.ips.map((v) => ({ type: 'ip' as const, value: v })),
      ...p.uris.map((v) => ({ type: 'url' as const, value: v })),
    ];
    if (names.length) exts.push(new x509.SubjectAlternativeNameExtension(names, p.subject === ''));
    if (p.permittedDns?.length) {
      exts.push(new x509.Extension('2.5.29.30', true, encodeNameConstraintsDns(p.permittedDns)));
    }
    const serial = newSerialHex();
    const cert = await x509.X509CertificateGenerator.create(
      {
        serialNumber: serial,
        ...(p.subject ? { subject: p.subject } : {}),
        issuer: issuer.cert.subject,
        notBefore: new Date(now() - p.notBeforeDuration * 1000),
        notAfter: new Date(p.notAfterMs),
        publicKey: csr.csr.publicKey,
        signingKey: issuer.key,
        signingAlgorithm: signingAlgorithm(issuer.key),
        extensions: exts,
      },
      wc,
    );
    mount.issued++;
    const der = Buffer.from(cert.rawData);
    return { der, pem: pemOf(der, 'CERTIFICATE'), serial, notAfterMs: p.notAfterMs };
  }

  function unknownParamWarnings(body: Record<string, unknown>, known: Set<string>): string[] {
    const unknown = Object.keys(body).filter((k) => !known.has(k));
    return unknown.length ? [`Endpoint ignored these unrecognized parameters: [${unknown.join(' ')}]`] : [];
  }

  async function pkiSign(mount: PkiMount, roleName: string, body: Record<string, unknown>): Promise<Resp> {
    const role = mount.roles.get(roleName);
    if (!role) return userError(`unknown role: ${roleName}`);
    const r = role.settings;
    const warnings = unknownParamWarnings(body, SIGN_FIELDS);
    const csr = await parseCsr(body.csr);
    // key type
    const kt = r.key_type as string;
    if (kt !== 'any') {
      if (csr.keyType !== kt) userError(`role requires keys of type ${kt}`);
      if (kt === 'rsa' && csr.keyBits < Number(r.key_bits)) userError(`RSA key not strong enough; role requires at least ${String(r.key_bits)} bits`);
      if (kt === 'ec' && csr.keyBits !== Number(r.key_bits)) userError(`provided key is not of the expected bit size; role requires ${String(r.key_bits)} bits`);
    } else if (csr.keyType === 'rsa' && csr.keyBits < 2048) {
      userError('RSA keys < 2048 bits are unsafe and not supported');
    }
    // common name
    let cn = r.use_csr_common_name ? csr.cn : '';
    if (cn === '') {
      cn = typeof body.common_name === 'string' ? body.common_name : '';
      if (cn === '' && r.require_cn) {
        userError('the common_name field is required, or must be provided in a CSR with "use_csr_common_name" set to true, unless "require_cn" is set to false');
      }
    }
    let dns: string[] = r.use_csr_sans ? [...csr.dns] : [];
    if (cn && !body.exclude_cn_from_sans && /^(\*\.)?([a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+\.?$/.test(cn)) dns.push(cn);
    if (!r.use_csr_sans) dns.push(...listField(body.alt_names));
    if (cn && !nameAllowed(r, cn)) userError(`common name ${cn} not allowed by this role`);
    for (const d of dns) if (!nameAllowed(r, d)) userError(`subject alternate name ${d} not allowed by this role`);
    dns = [...new Set(dns)];
    // IP SANs
    let ips: string[] = [];
    if (r.use_csr_sans) {
      if (csr.ips.length && !r.allow_ip_sans) userError('IP Subject Alternative Names are not allowed in this role, but was provided some via CSR');
      ips = csr.ips;
    } else {
      ips = listField(body.ip_sans);
      if (ips.length && !r.allow_ip_sans) userError(`IP Subject Alternative Names are not allowed in this role, but was provided ${ips.join(',')}`);
    }
    // URI SANs
    const allowedUris = r.allowed_uri_sans as string[];
    let uris: string[] = [];
    if (r.use_csr_sans) {
      if (csr.uris.length) {
        if (allowedUris.length === 0) userError('URI Subject Alternative Names are not allowed in this role, but were provided via CSR');
        for (const u of csr.uris) if (!allowedUris.some((a) => vaultGlob(a, u))) userError('URI Subject Alternative Names were provided via CSR which are not valid for this role');
        uris = csr.uris;
      }
    } else {
      const api = listField(body.uri_sans);
      if (api.length) {
        if (allowedUris.length === 0) userError('URI Subject Alternative Names are not allowed in this role, but were provided via the API');
        for (const u of api) {
          if (!allowedUris.some((a) => vaultGlob(a, u))) userError('URI Subject Alternative Names were provided via the API which are not valid for this role');
          try {
            new URL(u);
          } catch {
            userError(`the provided URI Subject Alternative Name "${u}" is not a valid URI`);
          }
        }
        uris = api;
      }
    }
    // TTL
    const { notAfterMs, ttlWarnings } = notAfterFor(mount, r, body, false);
    warnings.push(...ttlWarnings);
    let ku = 0;
    const kuMap: Record<string, number> = {
      digitalsignature: x509.KeyUsageFlags.digitalSignature,
      keyagreement: x509.KeyUsageFlags.keyAgreement,
      keyencipherment: x509.KeyUsageFlags.keyEncipherment,
      contentcommitment: x509.KeyUsageFlags.nonRepudiation,
      dataencipherment: x509.KeyUsageFlags.dataEncipherment,
    };
    for (const k of r.key_usage as string[]) ku |= kuMap[k.toLowerCase().replace(/^keyusage/, '')] ?? 0;
    const eku: string[] = [];
    if (r.server_flag) eku.push('1.3.6.1.5.5.7.3.1');
    if (r.client_flag) eku.push('1.3.6.1.5.5.7.3.2');
    const subjectParts = [
      ...(r.country as string[]).map((v) => `C=${v}`),
      ...(r.organization as string[]).map((v) => `O=${v}`),
      ...(r.ou as string[]).map((v) => `OU=${v}`),
      ...(cn ? [`CN=${cn}`] : []),
    ];
    const out = await issue(mount, csr, {
      subject: subjectParts.join(', '),
      uris,
      dns,
      ips,
      notAfterMs,
      notBeforeDuration: Number(r.not_before_duration),
      ca: false,
      keyUsage: ku,
      eku,
      bcForNonCa: Boolean(r.basic_constraints_valid_for_non_ca),
    });
    return {
      data: {
        ...formatOut(body.format, out, mount.issuer, Boolean(body.remove_roots_from_chain)),
        serial_number: serialColonHex(out.serial),
        expiration: Math.floor(out.notAfterMs / 1000),
      },
      warnings,
    };
  }

  function notAfterFor(mount: PkiMount, r: Record<string, unknown>, body: Record<string, unknown>, truncate: boolean): { notAfterMs: number; ttlWarnings: string[] } {
    const ttlWarnings: string[] = [];
    let ttl = parseVaultDuration(body.ttl, 'ttl');
    if (ttl > 0 && body.not_after) userError('Either ttl or not_after should be provided. Both should not be provided in the same request.');
    if (ttl === 0 && Number(r.ttl) > 0) ttl = Number(r.ttl);
    let maxTtl = Number(r.max_ttl) > 0 ? Number(r.max_ttl) : 0;
    if (ttl === 0) ttl = mount.defaultLeaseTtl;
    if (maxTtl === 0) maxTtl = mount.maxLeaseTtl;
    if (ttl > maxTtl) {
      ttlWarnings.push(`TTL "${goDuration(ttl)}" is longer than permitted maxTTL "${goDuration(maxTtl)}", so maxTTL is being used`);
      ttl = maxTtl;
    }
    let notAfterMs: number;
    if (typeof body.not_after === 'string' && body.not_after) {
      notAfterMs = Date.parse(body.not_after);
      if (!Number.isFinite(notAfterMs)) userError(`parsing time "${body.not_after}" as "2006-01-02T15:04:05Z07:00": cannot parse`);
    } else {
      notAfterMs = now() + ttl * 1000;
    }
    const caNa = mount.issuer.cert.notAfter.getTime();
    if (notAfterMs > caNa) {
      const behavior = truncate ? 'truncate' : mount.issuer.leafNotAfterBehavior;
      if (behavior === 'truncate') notAfterMs = caNa;
      else if (behavior === 'err') {
        userError(`cannot satisfy request, as TTL would result in notAfter of ${ISO(notAfterMs)} that is beyond the expiration of the CA certificate at ${ISO(caNa)}`);
      }
    }
    return { notAfterMs, ttlWarnings };
  }

  async function pkiSignIntermediate(mount: PkiMount, body: Record<string, unknown>): Promise<Resp> {
    const warnings = unknownParamWarnings(body, SIGN_INTERMEDIATE_FIELDS);
    const csr = await parseCsr(body.csr);
    const useCsr = body.use_csr_values === true || body.use_csr_values === 'true';
    let subject: string;
    let dns: string[] = [];
    let ips: string[] = [];
    let uris: string[] = listField(body.uri_sans);
    if (useCsr) {
      subject = csr.subject.toString();
      dns = csr.dns;
      ips = csr.ips;
      uris = csr.uris;
    } else {
      const cn = typeof body.common_name === 'string' && body.common_name ? body.common_name : csr.cn;
      const parts = [
        ...listField(body.country).map((v) => `C=${v}`),
        ...listField(body.organization).map((v) => `O=${v}`),
        ...listField(body.ou).map((v) => `OU=${v}`),
        ...(cn ? [`CN=${cn}`] : []),
      ];
      subject = parts.join(', ');
      dns = listField(body.alt_names);
      ips = listField(body.ip_sans);
    }
    // Vault's shared creation bundle: a hostname-like CN also becomes a DNS SAN unless exclude_cn_from_sans.
    const subjectCn = /(?:^|, )CN=([^,]+)/.exec(subject)?.[1] ?? '';
    const excludeCn = body.exclude_cn_from_sans === true || body.exclude_cn_from_sans === 'true';
    if (subjectCn && !excludeCn && /^(\*\.)?([a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+\.?$/.test(subjectCn) && !dns.includes(subjectCn)) dns = [...dns, subjectCn];
    for (const u of uris) {
      try {
        new URL(u);
      } catch {
        userError(`the provided URI Subject Alternative Name "${u}" is not a valid URI`);
      }
    }
    const { notAfterMs, ttlWarnings } = notAfterFor(mount, {}, body, true);
    warnings.push(...ttlWarnings);
    let maxPathLen = body.max_path_length === undefined ? -1 : Number(body.max_path_length);
    if (!Number.isInteger(maxPathLen)) userError('error converting input for field "max_path_length"');
    if (body.max_path_length === undefined && mount.issuer.maxPathLen >= 0) maxPathLen = mount.issuer.maxPathLen - 1;
    if (mount.issuer.maxPathLen === 0) userError('signing certificate has a max path length of zero, and cannot issue further CA certificates');
    const out = await issue(mount, csr, {
      subject,
      uris,
      dns,
      ips,
      notAfterMs,
      notBeforeDuration: parseVaultDuration(body.not_before_duration ?? 30, 'not_before_duration'),
      ca: true,
      maxPathLen,
      keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
      eku: [],
      bcForNonCa: false,
      permittedDns: listField(body.permitted_dns_domains),
    });
    if (notAfterMs === mount.issuer.cert.notAfter.getTime() && parseVaultDuration(body.ttl, 'ttl') > 0) {
      warnings.push(`The expiration time for the signed certificate is after the CA's expiration time. If the issuer's leaf_not_after_behavior is set to 'err', this request will fail when the signed certificate is used by a subordinate CA.`);
    }
    return {
      data: {
        ...formatOut(body.format, out, mount.issuer, Boolean(body.remove_roots_from_chain)),
        serial_number: serialColonHex(out.serial),
        expiration: Math.floor(out.notAfterMs / 1000),
      },
      warnings,
    };
  }

  // ------------------------------------------------------------------------------------------------------------
  // HTTP

  interface Resp {
    status?: number;
    data?: unknown;
    auth?: unknown;
    warnings?: string[];
    /** Raw body instead of the JSON envelope. */
    raw?: { contentType: string; body: string | Buffer };
    /** Bare JSON (sys/health). */
    bare?: unknown;
    mountType?: string;
  }

  const UNAUTH_PKI = [/^ca(\/pem)?$/, /^ca_chain$/, /^cert\/[^/]+(\/raw(\/pem)?)?$/, /^issuer\/[^/]+\/(json|pem|der)$/, /^crl(\/pem)?$/];

  function findPkiMount(ns: Namespace, path: string): { mount: PkiMount; rest: string } | undefined {
    let best: PkiMount | undefined;
    for (const m of ns.pki.values()) {
      if ((path === m.path || path.startsWith(`${m.path}/`)) && (!best || m.path.length > best.path.length)) best = m;
    }
    return best ? { mount: best, rest: path.slice(best.path.length + 1) } : undefined;
  }

  function healthResponse(query: URLSearchParams): Resp {
    const code = (name: string, dflt: number): number => {
      const v = query.get(name);
      return v !== null && /^\d+$/.test(v) ? Number(v) : dflt;
    };
    const flag = (name: string): boolean => query.get(name) === 'true' || query.get(name) === '';
    const perfStandby = replication === 'perf-standby';
    let status: number;
    // Vault's order (sys_health.go): uninitialised, sealed, DR secondary, performance standby, standby.
    if (!initialized) status = code('uninitcode', 501);
    else if (sealed) status = code('sealedcode', 503);
    else if (replication === 'dr-secondary') status = code('drsecondarycode', 472);
    else if (perfStandby) status = flag('perfstandbyok') ? code('activecode', 200) : code('performancestandbycode', 473);
    else if (standby) status = flag('standbyok') ? code('activecode', 200) : code('standbycode', 429);
    else status = code('activecode', 200);
    return {
      status,
      bare: {
        initialized,
        sealed: sealed || !initialized,
        standby: standby || perfStandby,
        performance_standby: perfStandby,
        replication_performance_mode: 'disabled',
        replication_dr_mode: replication === 'dr-secondary' ? 'secondary' : 'disabled',
        server_time_utc: Math.floor(now() / 1000),
        version: '1.17.0+fake',
        enterprise: namespaces.size > 1,
        cluster_name: 'vault-cluster-fake',
        cluster_id: clusterId,
        echo_duration_ms: 0,
        clock_skew_ms: 0,
      },
    };
  }

  const isLoginPath = (ns: Namespace, path: string): AuthMount | undefined => {
    const m = /^auth\/(.+)\/login$/.exec(path);
    return m ? ns.auth.get(m[1]!) : undefined;
  };

  async function route(method: string, path: string, query: URLSearchParams, nsName: string, token: string | undefined, body: Record<string, unknown>): Promise<Resp> {
    if (path === 'sys/health') {
      if (method !== 'GET' && method !== 'HEAD') fail(405, '1 error occurred:\n\t* unsupported operation\n\n');
      return healthResponse(query);
    }
    if (path === 'sys/seal-status' && method === 'GET') {
      return { bare: { type: 'shamir', initialized, sealed: sealed || !initialized, t: 1, n: 1, progress: 0, version: '1.17.0+fake', cluster_name: 'vault-cluster-fake', cluster_id: clusterId } };
    }
    if (sealed || !initialized) fail(503, 'Vault is sealed');
    if (standby) fail(429, 'Vault is in standby mode and this node cannot forward requests');
    const ns = namespaces.get(nsName);
    if (!ns) fail(404, `no handler for route "${path}". route entry not found.`);

    // Unauthenticated: logins and public PKI reads.
    const loginMount = isLoginPath(ns!, path);
    if (loginMount) {
      if (method !== 'POST' && method !== 'PUT') fail(405, '1 error occurred:\n\t* unsupported operation\n\n');
      return login(loginMount, nsName, body);
    }
    const pki = findPkiMount(ns!, path);
    if (pki && UNAUTH_PKI.some((re) => re.test(pki.rest))) {
      // Unauthenticated paths are read-only: Vault answers other operations 405 before any token check.
      if (method !== 'GET' && method !== 'HEAD') fail(405, '1 error occurred:\n\t* unsupported operation\n\n');
      return pkiPublicRead(pki.mount, pki.rest);
    }

    // Everything else needs a live token.
    if (!token) fail(403, 'missing client token');
    const t = liveToken(ns!, nsName, token);
    if (!t) fail(403, 'permission denied');
    const needed = method === 'GET' ? ['read'] : method === 'LIST' ? ['list'] : method === 'DELETE' ? ['delete'] : method === 'PATCH' ? ['patch'] : ['update', 'create'];
    if (!allowed(ns!, t!, path, needed)) fail(403, '1 error occurred:\n\t* permission denied\n\n');

    if (path === 'auth/token/lookup-self') {
      if (method !== 'GET' && method !== 'POST') fail(405, '1 error occurred:\n\t* unsupported operation\n\n');
      return { data: lookupData(t!) };
    }
    if (path === 'auth/token/renew-self') {
      if (method !== 'POST' && method !== 'PUT') fail(405, '1 error occurred:\n\t* unsupported operation\n\n');
      return renewSelf(t!, nsName, body);
    }
    if (path === 'auth/token/revoke-self') {
      if (method !== 'POST' && method !== 'PUT') fail(405, '1 error occurred:\n\t* unsupported operation\n\n');
      ns!.tokens.delete(t!.id);
      return { status: 204 };
    }
    if (!pki) fail(404, `no handler for route "${path}". route entry not found.`);
    return pkiRoute(pki!.mount, pki!.rest, method, body);
  }

  function lookupData(t: Token): Record<string, unknown> {
    const ttl = t.expireAtMs === 0 ? 0 : Math.max(0, Math.round((t.expireAtMs - now()) / 1000));
    return {
      accessor: t.accessor,
      creation_time: Math.floor(t.issuedAtMs / 1000),
      creation_ttl: t.creationTtl,
      display_name: t.displayName,
      entity_id: '',
      expire_time: t.expireAtMs === 0 ? null : ISO(t.expireAtMs),
      explicit_max_ttl: t.explicitMaxTtl,
      id: t.id,
      issue_time: ISO(t.issuedAtMs),
      meta: t.meta,
      num_uses: 0,
      orphan: true,
      path: t.path,
      policies: t.policies,
      renewable: t.renewable,
      ttl,
      type: t.type,
    };
  }

  function renewSelf(t: Token, nsName: string, body: Record<string, unknown>): Resp {
    if (t.type === 'batch') userError('batch tokens cannot be renewed');
    if (!t.renewable || t.expireAtMs === 0) userError('lease is not renewable');
    const warnings: string[] = [];
    let inc = parseVaultDuration(body.increment, 'increment');
    if (inc === 0) inc = t.creationTtl;
    let expire = now() + inc * 1000;
    if (t.explicitMaxTtl > 0) {
      const cap = t.issuedAtMs + t.explicitMaxTtl * 1000;
      if (expire > cap) {
        warnings.push(`TTL of "${goDuration(inc)}" exceeded the effective max_ttl of "${goDuration(Math.max(0, Math.round((cap - now()) / 1000)))}"; TTL value is capped accordingly`);
        expire = cap;
      }
    }
    t.expireAtMs = expire;
    return { auth: tokenAuthBlock(t, nsName), warnings };
  }

  function login(m: AuthMount, nsName: string, body: Record<string, unknown>): Resp {
    if (m.type === 'approle') {
      const roleId = body.role_id;
      if (typeof roleId !== 'string' || roleId === '') userError('missing role_id');
      const role = [...m.approles.values()].find((r) => r.roleId === roleId);
      if (!role) userError('invalid role or secret ID');
      if (role!.bindSecretId) {
        if (typeof body.secret_id !== 'string' || body.secret_id === '') userError('missing secret_id');
        if (body.secret_id !== role!.secretId) userError('invalid role or secret ID');
      }
      const t = loginToken(nsName, {
        policies: role!.policies,
        ttl: role!.tokenTtlSeconds,
        maxTtl: role!.tokenMaxTtlSeconds,
        type: role!.tokenType,
        path: `auth/${m.path}/login`,
        meta: { role_name: role!.name },
      });
      return { auth: tokenAuthBlock(t, nsName) };
    }
    const roleName = body.role;
    if (typeof roleName !== 'string' || roleName === '') userError('missing role');
    const jwt = body.jwt;
    if (typeof jwt !== 'string' || jwt === '') userError('missing jwt');
    const role = m.k8sRoles.get(roleName as string);
    if (!role) userError(`invalid role name "${String(roleName)}"`);
    const who = role!.jwts[jwt as string];
    if (!who) fail(403, 'permission denied');
    if (!role!.boundServiceAccountNames.some((n) => n === '*' || n === who!.serviceAccountName)) fail(403, 'service account name not authorized');
    if (!role!.boundServiceAccountNamespaces.some((n) => n === '*' || n === who!.serviceAccountNamespace)) fail(403, 'namespace not authorized');
    const t = loginToken(nsName, {
      policies: role!.policies ?? [],
      ttl: role!.tokenTtlSeconds ?? 3600,
      maxTtl: role!.tokenMaxTtlSeconds ?? 0,
      path: `auth/${m.path}/login`,
      meta: { role: roleName as string, service_account_name: who!.serviceAccountName, service_account_namespace: who!.serviceAccountNamespace },
    });
    return { auth: tokenAuthBlock(t, nsName) };
  }

  function findIssuer(mount: PkiMount, ref: string): Issuer {
    if (ref === 'default' || ref === mount.issuer.id || (mount.issuer.name !== '' && ref === mount.issuer.name)) return mount.issuer;
    return userError(`unable to find PKI issuer for reference: ${ref}`);
  }

  function pkiPublicRead(mount: PkiMount, rest: string): Resp {
    const chain = mount.issuer.chainPem;
    if (rest === 'ca_chain') return { raw: { contentType: 'application/pem-file', body: chain.join('\n') + '\n' } };
    if (rest === 'ca/pem') return { raw: { contentType: 'application/pem-file', body: mount.issuer.pem + '\n' } };
    if (rest === 'ca') return { raw: { contentType: 'application/pkix-cert', body: mount.issuer.der } };
    if (rest === 'cert/ca_chain') {
      return { data: { certificate: chain.join('\n') + '\n', ca_chain: chain.join('\n') + '\n', revocation_time: 0, revocation_time_rfc3339: '' }, mountType: 'pki' };
    }
    if (rest === 'cert/ca') return { data: { certificate: mount.issuer.pem + '\n', revocation_time: 0, revocation_time_rfc3339: '' }, mountType: 'pki' };
    const im = /^issuer\/([^/]+)\/(json|pem|der)$/.exec(rest);
    if (im) {
      const iss = findIssuer(mount, im[1]!);
      if (im[2] === 'pem') return { raw: { contentType: 'application/pem-file', body: iss.pem + '\n' } };
      if (im[2] === 'der') return { raw: { contentType: 'application/pkix-cert', body: iss.der } };
      return {
        data: {
          certificate: iss.pem + '\n',
          ca_chain: iss.chainPem.map((p) => p + '\n'),
          issuer_id: iss.id,
          issuer_name: iss.name,
          key_id: randomUUID(),
          leaf_not_after_behavior: iss.leafNotAfterBehavior,
          manual_chain: null,
          usage: 'crl-signing,issuing-certificates,ocsp-signing,read-only',
          revocation_signature_algorithm: '',
          revoked: false,
        },
        mountType: 'pki',
      };
    }
    return fail(404, '1 error occurred:\n\t* unsupported path\n\n');
  }

  async function pkiRoute(mount: PkiMount, rest: string, method: string, body: Record<string, unknown>): Promise<Resp> {
    const unsupportedOp = (): never => fail(405, '1 error occurred:\n\t* unsupported operation\n\n');
    let m: RegExpExecArray | null;
    if ((m = /^roles\/([^/]+)$/.exec(rest))) {
      if (method === 'POST' || method === 'PUT') {
        mount.roles.set(m[1]!, normaliseRole(body));
        return { data: mount.roles.get(m[1]!)!.settings, mountType: 'pki' };
      }
      if (method === 'GET') {
        const role = mount.roles.get(m[1]!);
        if (!role) fail(404, '');
        return { data: role!.settings, mountType: 'pki' };
      }
      if (method === 'DELETE') {
        mount.roles.delete(m[1]!);
        return { status: 204 };
      }
      return unsupportedOp();
    }
    if ((m = /^(?:issuer\/([^/]+)\/)?sign\/([^/]+)$/.exec(rest))) {
      if (method !== 'POST' && method !== 'PUT') unsupportedOp();
      if (m[1]) findIssuer(mount, m[1]);
      return { ...(await pkiSign(mount, m[2]!, body)), mountType: 'pki' };
    }
    if (rest === 'root/sign-intermediate' || (m = /^issuer\/([^/]+)\/sign-intermediate$/.exec(rest))) {
      if (method !== 'POST' && method !== 'PUT') unsupportedOp();
      if (m?.[1]) findIssuer(mount, m[1]);
      return { ...(await pkiSignIntermediate(mount, body)), mountType: 'pki' };
    }
    if (rest === 'issuers' && (method === 'LIST' || method === 'GET')) {
      return { data: { keys: [mount.issuer.id], key_info: { [mount.issuer.id]: { issuer_name: mount.issuer.name, is_default: true } } }, mountType: 'pki' };
    }
    return fail(404, '1 error occurred:\n\t* unsupported path\n\n');
  }

  function send(res: http.ServerResponse, method: string, r: Resp): number {
    const status = r.status ?? 200;
    if (r.status === 204) {
      res.writeHead(204);
      res.end();
      return 204;
    }
    if (r.raw) {
      res.writeHead(status, { 'Content-Type': r.raw.contentType, 'Cache-Control': 'no-store' });
      res.end(method === 'HEAD' ? undefined : r.raw.body);
      return status;
    }
    const payload =
      r.bare !== undefined
        ? r.bare
        : {
            request_id: randomUUID(),
            lease_id: '',
            renewable: false,
            lease_duration: 0,
            data: r.data ?? null,
            wrap_info: null,
            warnings: r.warnings && r.warnings.length ? r.warnings : null,
            auth: r.auth ?? null,
            mount_type: r.mountType ?? (r.auth ? 'token' : ''),
          };
    const text = JSON.stringify(payload);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'Content-Length': Buffer.byteLength(text) });
    res.end(method === 'HEAD' ? undefined : text);
    return status;
  }

  function sendError(res: http.ServerResponse, e: VaultHttpError): number {
    const text = JSON.stringify({ errors: e.errors.filter((s) => s !== '') });
    res.writeHead(e.status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
    return e.status;
  }

  const MAX_BODY = 32 * 1024 * 1024;

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > MAX_BODY) tooBig = true;
      else chunks.push(c as Buffer);
    }
    const method = (req.method ?? 'GET').toUpperCase();
    const u = new URL(req.url ?? '/', 'http://fake');
    const nsName = normNs(req.headers['x-vault-namespace']);
    const auth = req.headers.authorization;
    const token = (req.headers['x-vault-token'] as string | undefined) || (typeof auth === 'string' && /^Bearer /i.test(auth) ? auth.slice(7).trim() : undefined);
    let body: Record<string, unknown> = {};
    let bodyError: string | undefined;
    const rawBody = Buffer.concat(chunks).toString('utf8');
    if (rawBody.trim() !== '') {
      try {
        const parsed = JSON.parse(rawBody) as unknown;
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) bodyError = 'error parsing JSON';
        else body = parsed as Record<string, unknown>;
      } catch {
        bodyError = 'error parsing JSON';
      }
    }
    const path = u.pathname.startsWith('/v1/') ? u.pathname.slice(4).replace(/\/+$/, '') : '';
    const listParam = u.searchParams.get('list');
    const effMethod = method === 'GET' && (listParam === 'true' || listParam === '1') ? 'LIST' : method;
    const entry: LoggedRequest = { method: effMethod, path, query: u.search, namespace: nsName, headers: { ...req.headers }, body, status: 0 };
    requests.push(entry);

    if (fake.latencyMs > 0) await new Promise((r) => setTimeout(r, fake.latencyMs));

    const hang = hangs.find((h) => h.left > 0 && (!h.pathPrefix || path.startsWith(h.pathPrefix)) && path !== 'sys/health');
    if (hang) {
      hang.left--;
      hung.add(res);
      return;
    }
    try {
      if (tooBig) fail(413, 'http: request body too large');
      if (opts.requireRequestHeader && req.headers['x-vault-request'] !== 'true') fail(412, 'missing "X-Vault-Request" header');
      if (!u.pathname.startsWith('/v1/')) fail(404, '');
      const f = failures.find((x) => x.left > 0 && (!x.pathPrefix || path.startsWith(x.pathPrefix)) && path !== 'sys/health');
      if (f) {
        f.left--;
        fail(f.status, ...f.errors);
      }
      if (bodyError) userError(bodyError);
      const r = await route(effMethod, path, u.searchParams, nsName, token || undefined, body);
      entry.status = send(res, method, r);
    } catch (e) {
      if (e instanceof VaultHttpError) entry.status = sendError(res, e);
      else {
        entry.status = sendError(res, new VaultHttpError(500, [`1 error occurred:\n\t* ${(e as Error).message}\n\n`]));
      }
    }
  }

  // ------------------------------------------------------------------------------------------------------------
  // Server

  let tlsInfo: FakeVault['tls'];
  let server: http.Server | https.Server;
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) sendError(res, new VaultHttpError(500, [String(e)]));
    });
  };
  if (opts.tls) {
    const serverName = opts.tls.serverName ?? 'vault.test';
    const ca = await makeTlsMaterial(serverName, Boolean(opts.tls.requireClientCert));
    tlsInfo = { caPem: ca.caPem, serverName, ...(ca.client ? { clientCertPem: ca.client.certPem, clientKeyPem: ca.client.keyPem } : {}) };
    server = https.createServer(
      {
        key: ca.serverKeyPem,
        cert: ca.serverCertPem,
        ...(opts.tls.requireClientCert ? { ca: ca.caPem, requestCert: true, rejectUnauthorized: true } : {}),
      },
      onRequest,
    );
  } else {
    server = http.createServer(onRequest);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  const fake: FakeVault = {
    url: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    rootToken,
    ...(tlsInfo ? { tls: tlsInfo } : {}),
    requests,
    latencyMs: opts.latencyMs ?? 0,
    async close() {
      for (const r of hung) r.destroy();
      hung.clear();
      server.closeAllConnections?.();
      await new Promise<void>((r) => server.close(() => r()));
    },
    seal: () => {
      sealed = true;
    },
    unseal: () => {
      sealed = false;
    },
    setStandby: (s) => {
      standby = s;
    },
    setInitialized: (i) => {
      initialized = i;
    },
    setReplication: (r) => {
      replication = r;
    },
    failNext: (k) => {
      failures.push({ left: k.count, status: k.status, errors: [...(k.errors ?? [`1 error occurred:\n\t* injected failure (status ${k.status})\n\n`])], ...(k.pathPrefix ? { pathPrefix: k.pathPrefix } : {}) });
    },
    hangNext: (count, pathPrefix) => {
      hangs.push({ left: count, ...(pathPrefix ? { pathPrefix } : {}) });
    },
    createToken,
    expireToken: (token) => {
      for (const ns of namespaces.values()) {
        const t = ns.tokens.get(token);
        if (t) t.expireAtMs = now() - 1;
      }
    },
    setPolicy: (name, hcl, namespace = '') => {
      nsOf(namespace).policies.set(name, parsePolicyHcl(hcl));
    },
    mountPki,
    setRole,
    addAppRole: (name, o = {}) => {
      const a = addAuthMount('approle', o.mount ?? 'approle', o.namespace ?? '');
      const entry = {
        name,
        roleId: o.roleId ?? randomUUID(),
        secretId: o.secretId ?? randomUUID(),
        bindSecretId: o.bindSecretId ?? true,
        policies: [...(o.policies ?? [])],
        tokenTtlSeconds: o.tokenTtlSeconds ?? 3600,
        tokenMaxTtlSeconds: o.tokenMaxTtlSeconds ?? 0,
        tokenType: o.tokenType ?? 'service',
      };
      a.approles.set(name, entry);
      return { roleId: entry.roleId, secretId: entry.secretId };
    },
    addKubernetesRole: (name, o) => {
      addAuthMount('kubernetes', o.mount ?? 'kubernetes', o.namespace ?? '').k8sRoles.set(name, o);
    },
    enableAuth: (type, mount, namespace = '') => {
      addAuthMount(type, mount, namespace);
    },
    caPem: (mount, namespace = '') => {
      const m = nsOf(namespace).pki.get(mount);
      if (!m) throw new Error(`fake vault: no PKI mount "${mount}"`);
      return m.issuer.pem;
    },
    rootPem: (mount, namespace = '') => {
      const m = nsOf(namespace).pki.get(mount);
      if (!m) throw new Error(`fake vault: no PKI mount "${mount}"`);
      return m.issuer.chainPem[m.issuer.chainPem.length - 1]!;
    },
    issuedCount: (mount, namespace = '') => nsOf(namespace).pki.get(mount)?.issued ?? 0,
    tokenCount: (namespace = '') => nsOf(namespace).tokens.size,
  };
  return fake;
}

/** Go's time.Duration String() for whole seconds, as Vault prints TTLs in warnings ("1h0m0s"). */
function goDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h) return `${h}h${m}m${s}s`;
  if (m) return `${m}m${s}s`;
  return `${s}s`;
}

/** NameConstraints with permitted dNSName subtrees, DER-encoded by hand (small and fixed shape). */
function encodeNameConstraintsDns(domains: readonly string[]): ArrayBuffer {
  const tlv = (tag: number, content: Buffer): Buffer => {
    const len = content.length;
    const lenBytes = len < 0x80 ? Buffer.from([len]) : len < 0x100 ? Buffer.from([0x81, len]) : Buffer.from([0x82, len >> 8, len & 0xff]);
    return Buffer.concat([Buffer.from([tag]), lenBytes, content]);
  };
  const subtrees = domains.map((d) => tlv(0x30, tlv(0x82, Buffer.from(d, 'ascii'))));
  const permitted = tlv(0xa0, Buffer.concat(subtrees));
  const der = tlv(0x30, permitted);
  return der.buffer.slice(der.byteOffset, der.byteOffset + der.length) as ArrayBuffer;
}

async function makeTlsMaterial(serverName: string, withClient: boolean): Promise<{
  caPem: string;
  serverCertPem: string;
  serverKeyPem: string;
  client?: { certPem: string; keyPem: string };
}> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const caKeys = (await subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const nb = new Date(Date.now() - 60_000);
  const na = new Date(Date.now() + 86400_000);
  const ca = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: newSerialHex(),
      name: 'CN=fake vault TLS CA',
      notBefore: nb,
      notAfter: na,
      keys: caKeys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
    },
    wc,
  );
  const leaf = async (cn: string, names: x509.JsonGeneralName[], eku: string): Promise<{ certPem: string; keyPem: string }> => {
    const keys = (await subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.create(
      {
        serialNumber: newSerialHex(),
        subject: `CN=${cn}`,
        issuer: ca.subject,
        notBefore: nb,
        notAfter: na,
        publicKey: keys.publicKey,
        signingKey: caKeys.privateKey,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        extensions: [new x509.SubjectAlternativeNameExtension(names), new x509.ExtendedKeyUsageExtension([eku])],
      },
      wc,
    );
    const pkcs8 = await subtle.exportKey('pkcs8', keys.privateKey);
    return { certPem: cert.toString('pem'), keyPem: pemOf(Buffer.from(pkcs8), 'PRIVATE KEY') };
  };
  const server = await leaf(serverName, [
    { type: 'dns', value: serverName },
    { type: 'dns', value: 'localhost' },
    { type: 'ip', value: '127.0.0.1' },
  ], '1.3.6.1.5.5.7.3.1');
  const client = withClient ? await leaf('meshca-client', [{ type: 'dns', value: 'meshca' }], '1.3.6.1.5.5.7.3.2') : undefined;
  return { caPem: ca.toString('pem'), serverCertPem: server.certPem, serverKeyPem: server.keyPem, ...(client ? { client } : {}) };
}

/**
 * Test helper: a PKCS#10 CSR made with @peculiar/x509 (not meshca's code) for a fresh key.
 * keyType "ec" = P-256, "rsa" = 2048 bits, "ed25519".
 */
export async function createTestCsr(o: {
  keyType?: 'ec' | 'rsa' | 'ed25519';
  uris?: readonly string[];
  dns?: readonly string[];
  cn?: string;
  /** Ask for CA:true (an intermediate CSR). */
  ca?: boolean;
}): Promise<{ pem: string; der: Buffer; privateKey: import('node:crypto').KeyObject; publicKey: import('node:crypto').KeyObject }> {
  const { generateKeyPairSync } = await import('node:crypto');
  const kt = o.keyType ?? 'ec';
  const kp =
    kt === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : kt === 'ed25519'
        ? generateKeyPairSync('ed25519')
        : generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const alg: Algorithm & Record<string, unknown> =
    kt === 'rsa'
      ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }
      : kt === 'ed25519'
        ? { name: 'Ed25519' }
        : { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const privateKey = await subtle.importKey('pkcs8', kp.privateKey.export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign']);
  const publicKey = await subtle.importKey('spki', kp.publicKey.export({ type: 'spki', format: 'der' }), alg, true, ['verify']);
  const names: x509.JsonGeneralName[] = [
    ...(o.uris ?? []).map((v) => ({ type: 'url' as const, value: v })),
    ...(o.dns ?? []).map((v) => ({ type: 'dns' as const, value: v })),
  ];
  const extensions: x509.Extension[] = [];
  if (names.length) extensions.push(new x509.SubjectAlternativeNameExtension(names));
  if (o.ca) {
    extensions.push(new x509.BasicConstraintsExtension(true, undefined, true));
    extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true));
  }
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { ...(o.cn ? { name: `CN=${o.cn}` } : {}), keys: { privateKey, publicKey }, signingAlgorithm: alg, extensions },
    wc,
  );
  const der = Buffer.from(csr.rawData);
  return { pem: pemOf(der, 'CERTIFICATE REQUEST'), der, privateKey: kp.privateKey, publicKey: kp.publicKey };
}
