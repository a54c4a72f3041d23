import { readFile } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import type { AuthorityBackend, BackendContext, BackendHealth, IntermediateRequest, LeafRequest, UpstreamChain } from '../types.js';
import type { CertManagerConfig } from './config.js';
import { CaError, errorMessage } from '../../src/util/errors.js';
import { connectKube, type Kube, type KubeConfig } from '../../src/kube/client.js';
import { isNotFound, isRetryableKubeError, kubeCaError, kubeErrorInfo } from '../../src/kube/errors.js';
import { watchNamedUntil, type KubeObject } from '../../src/kube/list-watch.js';
import { leftoverNames } from '../../src/kube/cleanup.js';
import { checkAnchors, dedupeDers, parseCertificates, verifyUpstreamChain } from '../../src/kube/chain.js';
import { goDuration, requestUsages } from '../../src/kube/usages.js';
import { labelSelector, TRUST_DOMAIN_LABEL, trustDomainLabelValue } from '../../src/kube/names.js';

const NAME = 'cert-manager';
const GROUP = 'cert-manager.io';
const VERSION = 'v1';
const PLURAL = 'certificaterequests';
const KEY = 'authority.certManager';

interface Condition {
  type?: string;
  status?: string;
  reason?: string;
  message?: string;
}

export interface CertificateRequest extends KubeObject {
  metadata?: KubeObject['metadata'] & { creationTimestamp?: string };
  spec?: Record<string, unknown>;
  status?: { conditions?: Condition[]; certificate?: string; ca?: string; failureTime?: string };
}

export interface CertManagerDeps {
  /** A ready KubeConfig (tests); otherwise `kubeconfig` from the config, or in-cluster. */
  readonly kubeConfig?: KubeConfig;
}

const cond = (cr: CertificateRequest | undefined, type: string): Condition | undefined =>
  cr?.status?.conditions?.find((c) => c.type === type);

/** True once cert-manager will never change the request again (issued, denied, failed or invalid). */
export function isFinished(cr: CertificateRequest): boolean {
  const ready = cond(cr, 'Ready');
  return (
    cond(cr, 'Denied')?.status === 'True' ||
    cond(cr, 'InvalidRequest')?.status === 'True' ||
    (ready?.status === 'True' && Boolean(cr.status?.certificate)) ||
    (ready?.status === 'False' && (ready.reason === 'Failed' || ready.reason === 'Denied'))
  );
}

/**
 * Signs through cert-manager: one CertificateRequest per signing CA (mode intermediate) or per leaf (mode leaf),
 * watched until it is issued, denied or failed, and always deleted afterwards (kept CertificateRequests fill etcd
 * and slow cert-manager down; istio-csr#73). Leftovers carrying our trust-domain label are swept after every
 * request and at start. Every returned chain is verified against the trust anchors, which come from caFile (static,
 * preferred) or from status.ca.
 */
export class CertManagerBackend implements AuthorityBackend {
  readonly name = NAME;
  readonly mode: 'intermediate' | 'leaf';
  private kube: Kube | undefined;
  private anchors: Buffer[] = [];
  private readonly staticAnchors: boolean;
  private readonly listeners = new Set<(roots: Buffer[]) => void>();
  private readonly inFlight = new Set<string>();
  private readonly undeleted = new Set<string>();
  private lastFailure: string | undefined;
  private closed = false;
  private readonly tdLabel: string;

  constructor(
    private readonly cfg: CertManagerConfig,
    private readonly ctx: BackendContext,
    private readonly deps: CertManagerDeps = {},
  ) {
    this.mode = cfg.mode;
    this.staticAnchors = cfg.caFile !== '';
    this.tdLabel = trustDomainLabelValue(ctx.trustDomain);
  }

  async init(): Promise<void> {
    if (this.cfg.caFile) {
      let pem: string;
      try {
        pem = await readFile(this.cfg.caFile, 'utf8');
      } catch (e) {
        throw new CaError('FAILED_PRECONDITION', `${NAME}: ${KEY}.caFile: cannot read ${this.cfg.caFile}: ${(e as Error).message}`);
      }
      this.anchors = checkAnchors(NAME, `${KEY}.caFile ${this.cfg.caFile}`, parseCertificates(NAME, `${KEY}.caFile ${this.cfg.caFile}`, pem));
    }
    this.kube = await connectKube({
      component: NAME,
      configKey: `${KEY}.kubeconfig`,
      ...(this.cfg.kubeconfig ? { kubeconfig: this.cfg.kubeconfig } : {}),
      ...(this.deps.kubeConfig ? { kubeConfig: this.deps.kubeConfig } : {}),
    });
    // Leftovers of an earlier run; an unreachable API server must not stop meshca from serving what it holds.
    await this.sweep();
  }

  async mintIntermediate(req: IntermediateRequest): Promise<UpstreamChain> {
    if (this.mode !== 'intermediate') throw new CaError('UNIMPLEMENTED', `${NAME}: mode is leaf; meshca does not mint an intermediate`);
    return this.sign({ csrDer: req.csrDer, csrPem: req.csrPem, publicKey: req.publicKey, ttlSeconds: req.ttlSeconds || this.cfg.signingCaTtl, isCA: true, signal: req.signal });
  }

  async signLeaf(req: LeafRequest): Promise<UpstreamChain> {
    if (this.mode !== 'leaf') throw new CaError('UNIMPLEMENTED', `${NAME}: mode is intermediate; leaves are signed by meshca's signing CA`);
    return this.sign({ csrDer: req.csrDer, csrPem: req.csrPem, publicKey: req.publicKey, ttlSeconds: req.ttlSeconds, isCA: false, signal: req.signal, spiffeId: req.spiffeId });
  }

  async trustAnchors(): Promise<Buffer[]> {
    return [...this.anchors];
  }

  /** Fires when status.ca of an issued request brings anchors that differ from the ones we had. */
  watchTrustAnchors(onChange: (roots: Buffer[]) => void): () => void {
    this.listeners.add(onChange);
    return () => this.listeners.delete(onChange);
  }

  health(): BackendHealth {
    return this.lastFailure ? { ok: false, reason: this.lastFailure } : { ok: true };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
  }

  private client(): Kube {
    if (!this.kube) throw new CaError('FAILED_PRECONDITION', `${NAME}: used before init()`);
    if (this.closed) throw new CaError('UNAVAILABLE', `${NAME}: closed`);
    return this.kube;
  }

  private issuerText(): string {
    const r = this.cfg.issuerRef;
    // Cluster-scoped issuers carry "Cluster" in their kind (ClusterIssuer, AWSPCAClusterIssuer, GoogleCASClusterIssuer).
    const namespaced = !r.kind.includes('Cluster');
    return `${r.kind} ${namespaced ? `${this.cfg.namespace}/` : ''}${r.name}${r.group === GROUP ? '' : ` (${r.group})`}`;
  }

  private async sign(r: {
    csrDer: Buffer;
    csrPem: string;
    publicKey: KeyObject;
    ttlSeconds: number;
    isCA: boolean;
    signal: AbortSignal | undefined;
    spiffeId?: string;
  }): Promise<UpstreamChain> {
    const kube = this.client();
    const ns = this.cfg.namespace;
    const body: CertificateRequest = {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: 'CertificateRequest',
      metadata: {
        generateName: 'meshca-',
        namespace: ns,
        labels: { ...this.cfg.labels, [TRUST_DOMAIN_LABEL]: this.tdLabel },
        annotations: {
          ...this.cfg.annotations,
          'meshca.io/purpose': r.isCA ? 'signing-ca' : 'leaf',
          ...(r.spiffeId ? { 'meshca.io/spiffe-id': r.spiffeId } : {}),
        },
      },
      spec: {
        request: Buffer.from(r.csrPem, 'utf8').toString('base64'),
        issuerRef: { name: this.cfg.issuerRef.name, kind: this.cfg.issuerRef.kind, group: this.cfg.issuerRef.group },
        duration: goDuration(r.ttlSeconds),
        isCA: r.isCA,
        usages: requestUsages(r.csrDer, r.isCA ? 'intermediate' : 'leaf'),
      },
    };
    let name: string;
    try {
      const created = (await kube.custom().createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, body })) as CertificateRequest;
      name = String(created.metadata?.name);
    } catch (e) {
      throw this.noteFailure(kubeCaError(NAME, `create CertificateRequest in namespace ${ns}`, e));
    }
    this.inFlight.add(name);
    const started = this.ctx.clock.nowMs();
    this.ctx.log.info({ certificateRequest: `${ns}/${name}`, issuer: this.issuerText(), isCA: r.isCA }, 'cert-manager: created CertificateRequest');
    let cr: CertificateRequest;
    try {
      cr = await this.waitIssued(kube, name, r.signal);
    } catch (e) {
      throw this.noteFailure(e instanceof CaError ? e : kubeCaError(NAME, `wait for CertificateRequest ${ns}/${name}`, e));
    } finally {
      this.inFlight.delete(name);
      await this.deleteRequest(name);
      await this.sweep();
    }
    const out = this.verify(name, cr, r.publicKey, r.isCA);
    this.lastFailure = undefined;
    this.ctx.log.info({ certificateRequest: `${ns}/${name}`, ms: this.ctx.clock.nowMs() - started }, 'cert-manager: CertificateRequest issued');
    return out;
  }

  /** Remembers a retryable failure for health(); returns the error for throwing. */
  private noteFailure(e: unknown): unknown {
    if (e instanceof CaError && e.retryable) this.lastFailure = e.message;
    return e;
  }

  private waitIssued(kube: Kube, name: string, signal: AbortSignal | undefined): Promise<CertificateRequest> {
    const ns = this.cfg.namespace;
    const full = `CertificateRequest ${ns}/${name}`;
    return watchNamedUntil<CertificateRequest, CertificateRequest>({
      kube,
      path: `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(ns)}/${PLURAL}`,
      name,
      what: full,
      listBySelector: async (fieldSelector) =>
        (await kube.custom().listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, fieldSelector })) as {
          items?: CertificateRequest[];
          metadata?: { resourceVersion?: string };
        },
      clock: this.ctx.clock,
      log: this.ctx.log,
      timeoutMs: this.cfg.requestTimeout * 1000,
      ...(signal ? { signal } : {}),
      component: NAME,
      outcome: (cr) => this.outcome(name, cr),
      onTimeout: (last, lastError) => {
        const ready = cond(last, 'Ready');
        const approved = cond(last, 'Approved') ? '' : '; it was never approved (is an approver running for this issuer?)';
        const state = ready ? `; last Ready=${ready.status} reason ${ready.reason ?? '-'}: ${ready.message ?? ''}` : '';
        const err = lastError !== undefined ? `; last API error: ${kubeErrorInfo(lastError).message}` : '';
        return new CaError('UNAVAILABLE', `${NAME}: ${full} for ${this.issuerText()} was not issued within ${this.cfg.requestTimeout}s${state}${approved}${err}`, { retryable: true });
      },
    });
  }

  /** The request's outcome: the object when issued, an error when terminal, undefined while pending. */
  private outcome(name: string, cr: CertificateRequest): CertificateRequest | undefined {
    const full = `CertificateRequest ${this.cfg.namespace}/${name}`;
    const denied = cond(cr, 'Denied');
    if (denied?.status === 'True') {
      throw new CaError('PERMISSION_DENIED', `${NAME}: ${full} denied by ${denied.reason || 'an approver'}: ${denied.message || 'no message'}`, { retryable: false });
    }
    const invalid = cond(cr, 'InvalidRequest');
    if (invalid?.status === 'True') {
      throw new CaError('FAILED_PRECONDITION', `${NAME}: ${full} rejected by ${this.issuerText()} as invalid (${invalid.reason || 'InvalidRequest'}): ${invalid.message || 'no message'}`, { retryable: false });
    }
    const ready = cond(cr, 'Ready');
    if (ready?.status === 'False' && (ready.reason === 'Failed' || ready.reason === 'Denied')) {
      throw new CaError('FAILED_PRECONDITION', `${NAME}: ${full} failed at ${this.issuerText()} (${ready.reason}): ${ready.message || 'no message'}`, { retryable: false });
    }
    if (ready?.status === 'True' && cr.status?.certificate) return cr;
    return undefined;
  }

  private verify(name: string, cr: CertificateRequest, publicKey: KeyObject, isCA: boolean): UpstreamChain {
    const full = `CertificateRequest ${this.cfg.namespace}/${name}`;
    const pem = Buffer.from(String(cr.status?.certificate ?? ''), 'base64').toString('utf8');
    const chainDer = parseCertificates(NAME, `${full} status.certificate`, pem);
    let anchors: Buffer[];
    if (this.staticAnchors) {
      anchors = this.anchors;
    } else {
      const caPem = Buffer.from(String(cr.status?.ca ?? ''), 'base64').toString('utf8');
      if (caPem.trim() === '') {
        throw new CaError(
          'FAILED_PRECONDITION',
          `${NAME}: ${full}: ${this.issuerText()} left status.ca empty (cert-manager fills it only best effort); set ${KEY}.caFile to the issuer's root certificate`,
          { retryable: false },
        );
      }
      anchors = checkAnchors(NAME, `${full} status.ca`, parseCertificates(NAME, `${full} status.ca`, caPem));
    }
    const chain = verifyUpstreamChain({ component: NAME, source: full, chainDer, anchorsDer: anchors, publicKey, nowMs: this.ctx.clock.nowMs(), expectCa: isCA });
    if (!this.staticAnchors) this.updateAnchors(anchors);
    return { chain, roots: [...anchors] };
  }

  private updateAnchors(next: Buffer[]): void {
    const merged = dedupeDers(next);
    const same = merged.length === this.anchors.length && merged.every((d) => this.anchors.some((a) => a.equals(d)));
    if (same) return;
    this.anchors = merged;
    for (const l of this.listeners) {
      try {
        l([...merged]);
      } catch (e) {
        this.ctx.log.error({ err: errorMessage(e) }, 'cert-manager: trust anchor listener failed');
      }
    }
  }

  private async deleteRequest(name: string): Promise<void> {
    const ns = this.cfg.namespace;
    try {
      await this.client().custom().deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name, propagationPolicy: 'Background' });
      this.undeleted.delete(name);
    } catch (e) {
      if (isNotFound(e)) {
        this.undeleted.delete(name);
        return;
      }
      this.undeleted.add(name);
      this.ctx.log.warn({ certificateRequest: `${ns}/${name}`, err: kubeErrorInfo(e).message }, 'cert-manager: could not delete CertificateRequest; will retry');
    }
  }

  /**
   * Deletes CertificateRequests with our trust-domain label that are finished, or older than twice the request
   * timeout (left by a process that died while waiting). Requests this process is still waiting for are kept;
   * another replica's pending ones are younger than the age limit, so they are kept too. Best effort.
   */
  async sweep(): Promise<void> {
    if (!this.kube || this.closed) return;
    const ns = this.cfg.namespace;
    let items: CertificateRequest[];
    try {
      const l = (await this.kube.custom().listNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: ns,
        plural: PLURAL,
        labelSelector: labelSelector({ [TRUST_DOMAIN_LABEL]: this.tdLabel }),
      })) as { items?: CertificateRequest[] };
      items = l.items ?? [];
    } catch (e) {
      const level = isRetryableKubeError(e) ? 'warn' : 'error';
      this.ctx.log[level]({ namespace: ns, err: kubeErrorInfo(e).message }, 'cert-manager: cannot list CertificateRequests to sweep leftovers');
      return;
    }
    const leftovers = leftoverNames(items, {
      inFlight: this.inFlight,
      undeleted: this.undeleted,
      nowMs: this.ctx.clock.nowMs(),
      maxAgeMs: 2 * this.cfg.requestTimeout * 1000,
      isFinished,
    });
    for (const name of leftovers) await this.deleteRequest(name);
  }
}

export function createCertManagerBackend(cfg: CertManagerConfig, ctx: BackendContext, deps: CertManagerDeps = {}): CertManagerBackend {
  return new CertManagerBackend(cfg, ctx, deps);
}
