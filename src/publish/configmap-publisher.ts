import type { Logger } from 'pino';
import type { TrustBundle } from '../authority/types.js';
import { CaError } from '../util/errors.js';
import type { Kube } from '../kube/client.js';
import { isConflict, isNotFound, kubeCaError } from '../kube/errors.js';
import { labelSelector, TRUST_DOMAIN_LABEL, trustDomainLabelValue } from '../kube/names.js';
import type { KubernetesPublishersConfig } from './config.js';

const NAME = 'publish(configmap)';
const MAX_CONFLICT_RETRIES = 5;

type ConfigMapConfig = NonNullable<KubernetesPublishersConfig['configMaps']>;

/**
 * Keeps a ConfigMap `<name>` with data key `<key>` = meshca's trust bundle (PEM) in every selected namespace: the
 * listed ones plus, with namespaceSelector, every namespace whose labels match (re-evaluated on each publish and
 * resync). Other keys of the ConfigMap are left alone. ConfigMaps in namespaces that stop matching are kept (never
 * deleted: a workload may still read them). One failing namespace does not stop the others; the error lists them.
 */
export class ConfigMapPublisher {
  constructor(
    private readonly kube: Kube,
    private readonly cfg: ConfigMapConfig,
    private readonly trustDomain: string,
    private readonly log: Logger,
  ) {}

  /** The namespaces to write now. */
  async namespaces(): Promise<string[]> {
    const out = new Set(this.cfg.namespaces);
    if (this.cfg.namespaceSelector) {
      try {
        const l = await this.kube.core().listNamespace({ labelSelector: labelSelector(this.cfg.namespaceSelector) });
        for (const ns of l.items) if (ns.metadata?.name && ns.status?.phase !== 'Terminating') out.add(ns.metadata.name);
      } catch (e) {
        throw kubeCaError(NAME, `list namespaces matching ${labelSelector(this.cfg.namespaceSelector)}`, e);
      }
    }
    return [...out].sort();
  }

  async publish(bundle: TrustBundle): Promise<void> {
    const namespaces = await this.namespaces();
    const failures: Array<{ ns: string; err: CaError }> = [];
    for (const ns of namespaces) {
      try {
        await this.publishOne(ns, bundle);
      } catch (e) {
        failures.push({ ns, err: e instanceof CaError ? e : kubeCaError(NAME, `write ConfigMap ${ns}/${this.cfg.name}`, e) });
      }
    }
    if (failures.length > 0) {
      const retryable = failures.every((f) => f.err.retryable);
      const first = failures[0]!.err;
      throw new CaError(first.code, `${NAME}: ${failures.length} of ${namespaces.length} namespaces not updated: ${failures.map((f) => f.err.message).join('; ')}`, { retryable });
    }
  }

  private async publishOne(ns: string, bundle: TrustBundle): Promise<void> {
    const core = this.kube.core();
    const name = this.cfg.name;
    const labels = { ...this.cfg.labels, [TRUST_DOMAIN_LABEL]: trustDomainLabelValue(this.trustDomain), 'app.kubernetes.io/managed-by': 'meshca' };
    for (let attempt = 1; ; attempt++) {
      try {
        let cur;
        try {
          cur = await core.readNamespacedConfigMap({ name, namespace: ns });
        } catch (e) {
          if (!isNotFound(e)) throw e;
        }
        if (!cur) {
          await core.createNamespacedConfigMap({
            namespace: ns,
            body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: ns, labels }, data: { [this.cfg.key]: bundle.pem } },
          });
          this.log.info({ configMap: `${ns}/${name}`, roots: bundle.rootsDer.length, sequence: bundle.sequence }, 'published trust bundle: created ConfigMap');
          return;
        }
        if (cur.data?.[this.cfg.key] === bundle.pem) return;
        if (cur.immutable) throw new CaError('FAILED_PRECONDITION', `${NAME}: ConfigMap ${ns}/${name} is immutable; delete it so meshca can recreate it`, { retryable: false });
        cur.data = { ...cur.data, [this.cfg.key]: bundle.pem };
        cur.metadata = { ...cur.metadata, labels: { ...cur.metadata?.labels, ...labels } };
        await core.replaceNamespacedConfigMap({ name, namespace: ns, body: cur });
        this.log.info({ configMap: `${ns}/${name}`, roots: bundle.rootsDer.length, sequence: bundle.sequence }, 'published trust bundle: updated ConfigMap');
        return;
      } catch (e) {
        if (isConflict(e) && attempt < MAX_CONFLICT_RETRIES) continue;
        throw kubeCaError(NAME, `write ConfigMap ${ns}/${name}`, e);
      }
    }
  }
}
