import type { KeyObject } from 'node:crypto';
import type { AuthorityBackend, BackendContext, BackendHealth, IntermediateRequest, LeafRequest, UpstreamChain } from '../types.js';
import { MAX_EXPIRATION_SECONDS, type ClusterTrustBundleConfig } from './config.js';
import { CaError, errorMessage } from '../../src/util/errors.js';
import { connectKube, type Kube, type KubeConfig } from '../../src/kube/client.js';
import { isConflict, isNotFound, isRetryableKubeError, kubeCaError, kubeErrorInfo } from '../../src/kube/errors.js';
import { ListWatch, watchNamedUntil, type KubeObject } from '../../src/kube/list-watch.js';
import { leftoverNames } from '../../src/kube/cleanup.js';
import { parseCertificates, verifyUpstreamChain } from '../../src/kube/chain.js';
import { requestUsages } from '../../src/kube/usages.js';
import { labelSelector, TRUST_DOMAIN_LABEL, trustDomainLabelValue } from '../../src/kube/names.js';
import { anchorsFromBundles, ctbCollectionPath, detectCtbVersion, listCtbs, sameDers, type ClusterTrustBundle, type CtbVersion } from '../../src/kube/ctb.js';

const NAME = 'cluster-trust-bundle';
const KEY = 'authority.clusterTrustBundle';
const CSR_GROUP = 'certificates.k8s.io';
const CSR_VERSION = 'v1';
const CSR_PLURAL = 'certificatesigningrequests';
/** The API's minimum for spec.expirationSeconds. */
const MIN_EXPIRATION_SECONDS = 600;

interface Condition {
  type?: string;
  status?: string;
  reason?: string;
  message?: string;
}

export interface CertificateSigningRequest extends KubeObject {
  metadata?: KubeObject['metadata'] & { creationTimestamp?: string };
  spec?: { signerName?: string; [k: string]: unknown };
  status?: { conditions?: Condition[]; certificate?: string };
}

export interface ClusterTrustBundleDeps {
  readonly kubeConfig?: KubeConfig;
}

const cond = (o: CertificateSigningRequest | undefined, type: string): Condition | undefined =>
  o?.status?.conditions?.find((c) => c.type === type && c.status === 'True');

export function isCsrFinished(o: CertificateSigningRequest): boolean {
  return Boolean(o.status?.certificate) || Boolean(cond(o, 'Denied')) || Boolean(cond(o, 'Failed'));
}

/**
 * Signs through the Kubernetes certificates API: a CertificateSigningRequest to `signerName` per signing CA (mode
 * intermediate) or per leaf (mode leaf), optionally self-approved, watched until issued, denied or failed, and
 * always deleted (the controller-manager keeps them for an hour otherwise; kubernetes#132947). Trust anchors are the
 * merged, deduplicated contents of the ClusterTrustBundles linked to the signer (`spec.signerName`, plus label
 * selection), watched so that a change reaches every SDS stream. While the API server is unreachable the last good
 * anchors are kept and the watch retries with backoff; an empty set of bundles never replaces good anchors.
 */
export class ClusterTrustBundleBackend implements AuthorityBackend {
  readonly name = NAME;
  readonly mode: 'intermediate' | 'leaf';
  private kube: Kube | undefined;
  private version: CtbVersion | undefined;
  private anchors: Buffer[] = [];
  private anchorProblem: string | undefined;
  private signFailure: string | undefined;
  private readonly listeners = new Set<(roots: Buffer[]) => void>();
  private readonly inFlight = new Set<string>();
  private readonly undeleted = new Set<string>();
  private lw: ListWatch<ClusterTrustBundle> | undefined;
  private synced: Promise<void>;
  private markSynced!: () => void;
  private closed = false;
  private restartTimer: { cancel(): void } | undefined;
  private readonly tdLabel: string;

  constructor(
    private readonly cfg: ClusterTrustBundleConfig,
    private readonly ctx: BackendContext,
    private readonly deps: ClusterTrustBundleDeps = {},
  ) {
    this.mode = cfg.mode;
    this.tdLabel = trustDomainLabelValue(ctx.trustDomain);
    this.synced = new Promise((r) => (this.markSynced = r));
  }

  /** The ClusterTrustBundle API version in use (after init; undefined while the API server was unreachable). */
  ctbVersion(): CtbVersion | undefined {
    return this.version;
  }

  async init(): Promise<void> {
    this.kube = await connectKube({
      component: NAME,
      configKey: `${KEY}.kubeconfig`,
      ...(this.cfg.kubeconfig ? { kubeconfig: this.cfg.kubeconfig } : {}),
      ...(this.deps.kubeConfig ? { kubeConfig: this.deps.kubeConfig } : {}),
    });
    try {
      this.version = await detectCtbVersion(this.kube, this.cfg.trustBundle.apiVersion, NAME, `${KEY}.trustBundle.apiVersion`);
    } catch (e) {
      // Not served / forbidden is a configuration error; an unreachable API server must not stop meshca serving
      // what it holds: the anchor watch keeps trying in the background.
      if (!(e instanceof CaError) || !e.retryable) throw e;
      this.anchorProblem = e.message;
      this.ctx.log.warn({ err: e.message }, 'cluster-trust-bundle: API server unreachable at start; serving cached state and retrying');
    }
    this.startAnchorWatch();
    if (this.version) {
      // Wait briefly for the first list so that trustAnchors() is useful right after init.
      let t: { cancel(): void } | undefined;
      await Promise.race([this.synced, new Promise<void>((r) => (t = this.ctx.clock.setTimer(r, Math.min(10_000, this.cfg.requestTimeout * 1000))))]);
      t?.cancel();
    }
    await this.sweep();
  }

  private startAnchorWatch(): void {
    if (this.closed || !this.kube) return;
    const kube = this.kube;
    if (!this.version) {
      // Detection failed for a retryable reason: try again with backoff (on the Clock).
      let attempt = 0;
      const retry = (): void => {
        this.restartTimer = this.ctx.clock.setTimer(() => {
          void detectCtbVersion(kube, this.cfg.trustBundle.apiVersion, NAME, `${KEY}.trustBundle.apiVersion`).then(
            (v) => {
              this.version = v;
              this.startAnchorWatch();
            },
            (e: unknown) => {
              this.anchorProblem = errorMessage(e);
              if (!this.closed) retry();
            },
          );
        }, Math.min(30_000, 500 * 2 ** Math.min(attempt++, 10)));
      };
      retry();
      return;
    }
    const v = this.version;
    const fieldSelector = `spec.signerName=${this.cfg.signerName}`;
    const sel = labelSelector(this.cfg.trustBundle.labels);
    this.lw = new ListWatch<ClusterTrustBundle>({
      kube,
      path: ctbCollectionPath(v),
      fieldSelector,
      ...(sel ? { labelSelector: sel } : {}),
      list: () => listCtbs(kube, v, { fieldSelector, ...(sel ? { labelSelector: sel } : {}) }),
      clock: this.ctx.clock,
      log: this.ctx.log,
      onChange: (items) => this.onBundles(items.values()),
      onError: (e, attempt) => {
        const err = kubeCaError(NAME, `watch ClusterTrustBundles of signer ${this.cfg.signerName} (${v})`, e);
        this.anchorProblem = err.message;
        this.ctx.log.warn({ err: err.message, attempt }, 'cluster-trust-bundle: anchor watch failed; keeping the last good anchors');
        if (isNotFound(e)) {
          // The served version changed (e.g. an upgrade to v1 with v1beta1 turned off): detect again.
          this.lw?.stop();
          this.version = undefined;
          this.startAnchorWatch();
        }
      },
    });
    this.lw.start();
  }

  private onBundles(items: Iterable<ClusterTrustBundle>): void {
    const next = anchorsFromBundles(items, (name, why) => this.ctx.log.warn({ clusterTrustBundle: name, err: why }, 'cluster-trust-bundle: ignoring a bundle that does not parse'));
    this.markSynced();
    if (next.length === 0) {
      this.anchorProblem = `${NAME}: no ClusterTrustBundle with spec.signerName=${this.cfg.signerName}${this.labelText()} holds an anchor`;
      if (this.anchors.length > 0) this.ctx.log.warn({ signerName: this.cfg.signerName }, 'cluster-trust-bundle: no anchors published any more; keeping the last good ones');
      return;
    }
    this.anchorProblem = undefined;
    if (sameDers(next, this.anchors)) return;
    this.anchors = next;
    this.ctx.log.info({ signerName: this.cfg.signerName, anchors: next.length }, 'cluster-trust-bundle: trust anchors changed');
    for (const l of this.listeners) {
      try {
        l([...next]);
      } catch (e) {
        this.ctx.log.error({ err: errorMessage(e) }, 'cluster-trust-bundle: trust anchor listener failed');
      }
    }
  }

  private labelText(): string {
    const s = labelSelector(this.cfg.trustBundle.labels);
    return s ? ` and labels ${s}` : '';
  }

  async mintIntermediate(req: IntermediateRequest): Promise<UpstreamChain> {
    if (this.mode !== 'intermediate') throw new CaError('UNIMPLEMENTED', `${NAME}: mode is leaf; meshca does not mint an intermediate`);
    return this.sign({ ...req, ttlSeconds: req.ttlSeconds || this.cfg.signingCaTtl, isCA: true });
  }

  async signLeaf(req: LeafRequest): Promise<UpstreamChain> {
    if (this.mode !== 'leaf') throw new CaError('UNIMPLEMENTED', `${NAME}: mode is intermediate; leaves are signed by meshca's signing CA`);
    return this.sign({ ...req, isCA: false });
  }

  async trustAnchors(): Promise<Buffer[]> {
    return [...this.anchors];
  }

  watchTrustAnchors(onChange: (roots: Buffer[]) => void): () => void {
    this.listeners.add(onChange);
    return () => this.listeners.delete(onChange);
  }

  health(): BackendHealth {
    const reason = this.signFailure ?? (this.anchors.length === 0 ? this.anchorProblem : undefined);
    return reason ? { ok: false, reason } : { ok: true };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.lw?.stop();
    this.restartTimer?.cancel();
    this.listeners.clear();
  }

  private client(): Kube {
    if (!this.kube) throw new CaError('FAILED_PRECONDITION', `${NAME}: used before init()`);
    if (this.closed) throw new CaError('UNAVAILABLE', `${NAME}: closed`);
    return this.kube;
  }

  private async sign(r: { csrDer: Buffer; csrPem: string; publicKey: KeyObject; ttlSeconds: number; isCA: boolean; signal?: AbortSignal; spiffeId?: string }): Promise<UpstreamChain> {
    const kube = this.client();
    const expirationSeconds = Math.min(MAX_EXPIRATION_SECONDS, Math.max(MIN_EXPIRATION_SECONDS, Math.round(r.ttlSeconds)));
    const body: CertificateSigningRequest = {
      apiVersion: `${CSR_GROUP}/${CSR_VERSION}`,
      kind: 'CertificateSigningRequest',
      metadata: {
        generateName: 'meshca-',
        labels: { ...this.cfg.labels, [TRUST_DOMAIN_LABEL]: this.tdLabel },
        annotations: { 'meshca.io/purpose': r.isCA ? 'signing-ca' : 'leaf', ...(r.spiffeId ? { 'meshca.io/spiffe-id': r.spiffeId } : {}) },
      },
      spec: {
        request: Buffer.from(r.csrPem, 'utf8').toString('base64'),
        signerName: this.cfg.signerName,
        expirationSeconds,
        usages: requestUsages(r.csrDer, r.isCA ? 'intermediate' : 'leaf'),
      },
    };
    let name: string;
    try {
      const created = (await kube.custom().createClusterCustomObject({ group: CSR_GROUP, version: CSR_VERSION, plural: CSR_PLURAL, body })) as CertificateSigningRequest;
      name = String(created.metadata?.name);
    } catch (e) {
      throw this.noteFailure(kubeCaError(NAME, `create CertificateSigningRequest for signer ${this.cfg.signerName}`, e));
    }
    this.inFlight.add(name);
    const started = this.ctx.clock.nowMs();
    this.ctx.log.info({ csr: name, signerName: this.cfg.signerName, isCA: r.isCA, expirationSeconds }, 'cluster-trust-bundle: created CertificateSigningRequest');
    let csr: CertificateSigningRequest;
    try {
      if (this.cfg.approve) await this.approve(kube, name);
      csr = await this.waitIssued(kube, name, r.signal);
    } catch (e) {
      throw this.noteFailure(e instanceof CaError ? e : kubeCaError(NAME, `wait for CertificateSigningRequest ${name}`, e));
    } finally {
      this.inFlight.delete(name);
      await this.deleteCsr(name);
      await this.sweep();
    }
    const out = await this.verify(name, csr, r.publicKey, r.isCA);
    this.signFailure = undefined;
    this.ctx.log.info({ csr: name, ms: this.ctx.clock.nowMs() - started }, 'cluster-trust-bundle: CertificateSigningRequest issued');
    return out;
  }

  private noteFailure(e: unknown): unknown {
    if (e instanceof CaError && e.retryable) this.signFailure = e.message;
    return e;
  }

  /** Adds Approved=True through /approval, re-reading and retrying on 409 (a signer may write at the same time). */
  private async approve(kube: Kube, name: string): Promise<void> {
    const api = kube.certificates();
    for (let attempt = 1; ; attempt++) {
      try {
        const cur = await api.readCertificateSigningRequest({ name });
        const conds = cur.status?.conditions ?? [];
        if (conds.some((c) => (c.type === 'Approved' || c.type === 'Denied') && c.status === 'True')) return;
        cur.status = {
          ...cur.status,
          conditions: [
            ...conds,
            { type: 'Approved', status: 'True', reason: 'MeshcaApproved', message: `approved by meshca for trust domain ${this.ctx.trustDomain}`, lastUpdateTime: this.ctx.clock.now() },
          ],
        };
        await api.replaceCertificateSigningRequestApproval({ name, body: cur });
        return;
      } catch (e) {
        if (isConflict(e) && attempt < 5) continue;
        const err = kubeCaError(NAME, `approve CertificateSigningRequest ${name}`, e);
        if (err.code === 'PERMISSION_DENIED') {
          throw new CaError(
            'PERMISSION_DENIED',
            `${err.message}. ${KEY}.approve needs "update" on certificatesigningrequests/approval and "approve" on signers "${this.cfg.signerName}"; or set approve: false and let an approver do it`,
            { retryable: false, cause: e },
          );
        }
        throw err;
      }
    }
  }

  private waitIssued(kube: Kube, name: string, signal: AbortSignal | undefined): Promise<CertificateSigningRequest> {
    const full = `CertificateSigningRequest ${name}`;
    return watchNamedUntil<CertificateSigningRequest, CertificateSigningRequest>({
      kube,
      path: `/apis/${CSR_GROUP}/${CSR_VERSION}/${CSR_PLURAL}`,
      name,
      what: full,
      listBySelector: async (fieldSelector) =>
        (await kube.custom().listClusterCustomObject({ group: CSR_GROUP, version: CSR_VERSION, plural: CSR_PLURAL, fieldSelector })) as {
          items?: CertificateSigningRequest[];
          metadata?: { resourceVersion?: string };
        },
      clock: this.ctx.clock,
      log: this.ctx.log,
      timeoutMs: this.cfg.requestTimeout * 1000,
      ...(signal ? { signal } : {}),
      component: NAME,
      outcome: (o) => {
        const denied = cond(o, 'Denied');
        if (denied) {
          throw new CaError('PERMISSION_DENIED', `${NAME}: ${full} to signer ${this.cfg.signerName} denied (${denied.reason || 'Denied'}): ${denied.message || 'no message'}`, { retryable: false });
        }
        const failed = cond(o, 'Failed');
        if (failed) {
          throw new CaError('FAILED_PRECONDITION', `${NAME}: ${full} failed at signer ${this.cfg.signerName} (${failed.reason || 'Failed'}): ${failed.message || 'no message'}`, { retryable: false });
        }
        return cond(o, 'Approved') && o.status?.certificate ? o : undefined;
      },
      onTimeout: (last, lastError) => {
        const state = cond(last, 'Approved')
          ? `; it was approved but signer ${this.cfg.signerName} issued nothing (is the signer running?)`
          : `; it was never approved (${this.cfg.approve ? 'approval did not take' : `set ${KEY}.approve: true or run an approver for ${this.cfg.signerName}`})`;
        const err = lastError !== undefined ? `; last API error: ${kubeErrorInfo(lastError).message}` : '';
        return new CaError('UNAVAILABLE', `${NAME}: ${full} was not issued within ${this.cfg.requestTimeout}s${state}${err}`, { retryable: true });
      },
    });
  }

  private async verify(name: string, csr: CertificateSigningRequest, publicKey: KeyObject, isCA: boolean): Promise<UpstreamChain> {
    const full = `CertificateSigningRequest ${name}`;
    const pem = Buffer.from(String(csr.status?.certificate ?? ''), 'base64').toString('utf8');
    const chainDer = parseCertificates(NAME, `${full} status.certificate`, pem);
    const check = (): Buffer[] =>
      verifyUpstreamChain({ component: NAME, source: full, chainDer, anchorsDer: this.anchors, publicKey, nowMs: this.ctx.clock.nowMs(), expectCa: isCA });
    let chain: Buffer[];
    try {
      if (this.anchors.length === 0) throw new CaError('FAILED_PRECONDITION', `${NAME}: no anchors yet`);
      chain = check();
    } catch (first) {
      // The signer may have rotated its CA and the bundle update not reached our watch yet: read the bundles now.
      await this.refreshAnchors();
      if (this.anchors.length === 0) {
        throw new CaError(
          'FAILED_PRECONDITION',
          `${NAME}: ${full}: no trust anchors: no ClusterTrustBundle with spec.signerName=${this.cfg.signerName}${this.labelText()} (the signer must publish its CA in one)${this.anchorProblem ? `; ${this.anchorProblem}` : ''}`,
          { retryable: true, cause: first },
        );
      }
      chain = check();
    }
    return { chain, roots: [...this.anchors] };
  }

  private async refreshAnchors(): Promise<void> {
    if (!this.kube || !this.version) return;
    const sel = labelSelector(this.cfg.trustBundle.labels);
    try {
      const l = await listCtbs(this.kube, this.version, { fieldSelector: `spec.signerName=${this.cfg.signerName}`, ...(sel ? { labelSelector: sel } : {}) });
      this.onBundles(l.items);
    } catch (e) {
      this.ctx.log.warn({ err: kubeErrorInfo(e).message }, 'cluster-trust-bundle: cannot list ClusterTrustBundles');
    }
  }

  private async deleteCsr(name: string): Promise<void> {
    try {
      await this.client().custom().deleteClusterCustomObject({ group: CSR_GROUP, version: CSR_VERSION, plural: CSR_PLURAL, name, propagationPolicy: 'Background' });
      this.undeleted.delete(name);
    } catch (e) {
      if (isNotFound(e)) {
        this.undeleted.delete(name);
        return;
      }
      this.undeleted.add(name);
      this.ctx.log.warn({ csr: name, err: kubeErrorInfo(e).message }, 'cluster-trust-bundle: could not delete CertificateSigningRequest; will retry');
    }
  }

  /**
   * Deletes CertificateSigningRequests with our trust-domain label and signer that are finished, or older than
   * twice the request timeout. Requests still being waited for (here or, being young, by another replica) are kept.
   */
  async sweep(): Promise<void> {
    if (!this.kube || this.closed) return;
    let items: CertificateSigningRequest[];
    try {
      const l = (await this.kube.custom().listClusterCustomObject({
        group: CSR_GROUP,
        version: CSR_VERSION,
        plural: CSR_PLURAL,
        labelSelector: labelSelector({ [TRUST_DOMAIN_LABEL]: this.tdLabel }),
        fieldSelector: `spec.signerName=${this.cfg.signerName}`,
      })) as { items?: CertificateSigningRequest[] };
      items = l.items ?? [];
    } catch (e) {
      this.ctx.log[isRetryableKubeError(e) ? 'warn' : 'error']({ err: kubeErrorInfo(e).message }, 'cluster-trust-bundle: cannot list CertificateSigningRequests to sweep leftovers');
      return;
    }
    const leftovers = leftoverNames(items, {
      inFlight: this.inFlight,
      undeleted: this.undeleted,
      nowMs: this.ctx.clock.nowMs(),
      maxAgeMs: 2 * this.cfg.requestTimeout * 1000,
      isFinished: isCsrFinished,
    });
    for (const name of leftovers) await this.deleteCsr(name);
  }
}

export function createClusterTrustBundleBackend(cfg: ClusterTrustBundleConfig, ctx: BackendContext, deps: ClusterTrustBundleDeps = {}): ClusterTrustBundleBackend {
  return new ClusterTrustBundleBackend(cfg, ctx, deps);
}
