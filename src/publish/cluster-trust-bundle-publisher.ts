import type { Logger } from 'pino';
import type { TrustBundle } from '../authority/types.js';
import { CaError } from '../util/errors.js';
import type { Kube } from '../kube/client.js';
import { isConflict, isNotFound, kubeCaError } from '../kube/errors.js';
import { CTB_GROUP, CTB_PLURAL, detectCtbVersion, sameDers, signerLinkedName, trustBundleText, type ClusterTrustBundle, type CtbVersion } from '../kube/ctb.js';
import { pemToDers } from '../x509/pem.js';
import { TRUST_DOMAIN_LABEL, trustDomainLabelValue } from '../kube/names.js';
import type { KubernetesPublishersConfig } from './config.js';

const NAME = 'publish(cluster-trust-bundle)';
const KEY = 'bundlePublishers.kubernetes.clusterTrustBundle';
const MAX_CONFLICT_RETRIES = 5;

type CtbConfig = NonNullable<KubernetesPublishersConfig['clusterTrustBundle']>;

/**
 * Keeps one signer-linked ClusterTrustBundle (`<signerName with / → :>:<nameSuffix>`) equal to meshca's trust
 * bundle. Creates it when missing, updates it with its resourceVersion (re-reading on 409 Conflict), and leaves it
 * alone when it already holds exactly these roots. Writing needs `attest` on `signers` for the signerName.
 */
export class ClusterTrustBundlePublisher {
  readonly name: string;
  private version: CtbVersion | undefined;

  constructor(
    private readonly kube: Kube,
    private readonly cfg: CtbConfig,
    private readonly trustDomain: string,
    private readonly log: Logger,
  ) {
    this.name = signerLinkedName(cfg.signerName, cfg.nameSuffix);
  }

  async publish(bundle: TrustBundle): Promise<void> {
    const text = trustBundleText(bundle.rootsDer);
    this.version ??= await detectCtbVersion(this.kube, this.cfg.apiVersion, NAME, `${KEY}.apiVersion`);
    const v = this.version;
    const api = this.kube.custom();
    const ref = { group: CTB_GROUP, version: v, plural: CTB_PLURAL, name: this.name };
    for (let attempt = 1; ; attempt++) {
      try {
        let cur: ClusterTrustBundle | undefined;
        try {
          cur = (await api.getClusterCustomObject(ref)) as ClusterTrustBundle;
        } catch (e) {
          if (!isNotFound(e)) throw e;
        }
        const labels = { ...this.cfg.labels, [TRUST_DOMAIN_LABEL]: trustDomainLabelValue(this.trustDomain), 'app.kubernetes.io/managed-by': 'meshca' };
        if (!cur) {
          await api.createClusterCustomObject({
            group: CTB_GROUP,
            version: v,
            plural: CTB_PLURAL,
            body: { apiVersion: `${CTB_GROUP}/${v}`, kind: 'ClusterTrustBundle', metadata: { name: this.name, labels }, spec: { signerName: this.cfg.signerName, trustBundle: text } },
          });
          this.log.info({ clusterTrustBundle: this.name, roots: bundle.rootsDer.length, sequence: bundle.sequence }, 'published trust bundle: created ClusterTrustBundle');
          return;
        }
        if (cur.spec?.signerName !== this.cfg.signerName) {
          throw new CaError('FAILED_PRECONDITION', `${NAME}: ClusterTrustBundle ${this.name} exists with signerName "${cur.spec?.signerName ?? ''}", not "${this.cfg.signerName}"`, { retryable: false });
        }
        if (sameRoots(cur.spec?.trustBundle, bundle.rootsDer) && Object.entries(labels).every(([k, val]) => cur.metadata?.labels?.[k] === val)) return;
        await api.replaceClusterCustomObject({
          ...ref,
          body: { ...cur, metadata: { ...cur.metadata, labels: { ...cur.metadata?.labels, ...labels } }, spec: { ...cur.spec, trustBundle: text } },
        });
        this.log.info({ clusterTrustBundle: this.name, roots: bundle.rootsDer.length, sequence: bundle.sequence }, 'published trust bundle: updated ClusterTrustBundle');
        return;
      } catch (e) {
        if (isConflict(e) && attempt < MAX_CONFLICT_RETRIES) continue;
        if (isNotFound(e)) this.version = undefined; // the served version may have changed; detect again next time
        const err = kubeCaError(NAME, `write ClusterTrustBundle ${this.name} (${v})`, e);
        if (err.code === 'PERMISSION_DENIED') {
          throw new CaError(
            'PERMISSION_DENIED',
            `${err.message}. Publishing needs create/get/update on clustertrustbundles and "attest" on signers "${this.cfg.signerName}"`,
            { retryable: false, cause: e },
          );
        }
        throw err;
      }
    }
  }
}

function sameRoots(pem: string | undefined, roots: readonly Buffer[]): boolean {
  try {
    const have = pemToDers(pem ?? '');
    return have.length === new Set(roots.map((r) => r.toString('hex'))).size && sameDers(have, roots);
  } catch {
    return false;
  }
}
