/**
 * A fake Kubernetes CSR signer (the controller behind a custom `signerName`) that runs inside tests against the
 * fake kube-apiserver's in-memory API, as a user with only the signer's RBAC (so approve/sign/attest admission is
 * exercised, not bypassed).
 *
 * Modelled: optionally approves pending CSRs for its signerName through `/approval` (reason `AutoApproved`), then
 * signs approved ones through `/status`: CSR signature checked, validity notBefore = now - backdate, notAfter =
 * now + spec.expirationSeconds (default `defaultExpirationSeconds`, capped at `maxExpirationSeconds` and at the CA's
 * notAfter), key usages/EKUs from spec.usages (`cert sign` makes a CA), SANs copied from the CSR. Publishes its CA
 * into a signer-linked ClusterTrustBundle `<signerName with / → :>:<suffix>` at v1beta1 or v1 (needs `attest`).
 * Knobs: deny (Denied condition; needs approve), fail (Failed condition), delay, rotateCa (new CA signs from then on;
 * the bundle keeps the old root too unless told to drop it).
 * Not modelled: kubernetes.io/* signers (refused at start), CSR garbage collection, signer-specific usage policy.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import type { FakeKube, Obj, WatchHandle } from './kube-apiserver.js';
import { KubeStatusError } from './kube-apiserver.js';
import { createCa, parseAndVerifyCsr, signCsr, type CertificateAuthority } from './kube/pki.js';
import { ctbNamePrefix } from './kube/resources.js';

export type CsrSignerMode = 'sign' | 'deny' | 'fail' | 'ignore';

export interface CsrSignerBehaviour {
  mode: CsrSignerMode;
  /** Approve pending CSRs for this signer (like an auto-approver). Default false: someone else approves. */
  autoApprove: boolean;
  /** Wait this long before signing. Default 0. */
  delayMs: number;
}

export interface FakeCsrSignerOptions {
  signerName: string;
  ca?: CertificateAuthority;
  behaviour?: Partial<CsrSignerBehaviour>;
  /** Used when a CSR has no expirationSeconds. Default 86400. */
  defaultExpirationSeconds?: number;
  /** Upper bound on any certificate's lifetime. Default 365 days. */
  maxExpirationSeconds?: number;
  /** Seconds notBefore is set before now. Default 30. */
  backdateSeconds?: number;
  /** Publish the CA into a signer-linked ClusterTrustBundle. */
  trustBundle?: { version: 'v1beta1' | 'v1'; suffix?: string; labels?: Record<string, string> };
  now?: () => Date;
}

export interface FakeCsrSigner {
  readonly signerName: string;
  /** Current signing CA. */
  readonly ca: CertificateAuthority;
  /** Name of the published ClusterTrustBundle, if any. */
  readonly trustBundleName: string | undefined;
  /** Roots currently published (PEM, concatenated). */
  bundlePem(): string;
  setBehaviour(b: Partial<CsrSignerBehaviour>): void;
  /** Generates a new CA that signs from now on and republishes the bundle (old root kept unless dropOld). */
  rotateCa(opts?: { dropOld?: boolean }): Promise<CertificateAuthority>;
  readonly handled: Array<{ name: string; outcome: 'Issued' | 'Denied' | 'Failed' }>;
  idle(): Promise<void>;
  close(): void;
}

function ts(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function has(o: Obj, type: string): boolean {
  return (o.status?.conditions ?? []).some((c: any) => c.type === type && c.status === 'True');
}

export async function startFakeCsrSigner(fake: FakeKube, opts: FakeCsrSignerOptions): Promise<FakeCsrSigner> {
  if (opts.signerName.startsWith('kubernetes.io/')) throw new Error(`fake csr signer: ${opts.signerName} is a built-in signer; choose your own domain`);
  const now = opts.now ?? (() => new Date());
  const behaviour: CsrSignerBehaviour = { mode: 'sign', autoApprove: false, delayMs: 0, ...opts.behaviour };
  const newCa = (): Promise<CertificateAuthority> =>
    createCa({ commonName: `fake signer ${opts.signerName} ${Date.now()}`, notBefore: new Date(now().getTime() - 3600_000), notAfter: new Date(now().getTime() + 2 * 365 * 86400_000) });
  let ca = opts.ca ?? (await newCa());
  let roots = [ca.rootPem];
  const user = `system:serviceaccount:signers:${opts.signerName.replace(/[^a-z0-9]/g, '-')}`;
  fake.addUser(user, {
    uid: `uid-${user}`,
    groups: ['system:serviceaccounts'],
    rules: [
      { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests/status', 'certificatesigningrequests/approval'], verbs: ['update'] },
      { apiGroups: ['certificates.k8s.io'], resources: ['signers'], verbs: ['sign', 'approve', 'attest'], resourceNames: [opts.signerName] },
      { apiGroups: ['certificates.k8s.io'], resources: ['clustertrustbundles'], verbs: ['get', 'list', 'watch', 'create', 'update'] },
    ],
  });
  const ctbName = opts.trustBundle ? `${ctbNamePrefix(opts.signerName)}${opts.trustBundle.suffix ?? 'live'}` : undefined;
  const handled: FakeCsrSigner['handled'] = [];
  const inFlight = new Set<string>();
  const work = new Set<Promise<void>>();
  let closed = false;

  async function publish(): Promise<void> {
    if (!opts.trustBundle || !ctbName) return;
    const version = opts.trustBundle.version;
    const trustBundle = roots.join('');
    try {
      const cur = await fake.api.get('clustertrustbundles', ctbName, { as: user, version });
      await fake.api.update('clustertrustbundles', { ...cur, spec: { ...cur.spec, trustBundle } }, { as: user, version });
    } catch (e) {
      if (!(e instanceof KubeStatusError && e.code === 404)) throw e;
      await fake.api.create(
        'clustertrustbundles',
        { metadata: { name: ctbName, labels: opts.trustBundle.labels }, spec: { signerName: opts.signerName, trustBundle } },
        { as: user, version },
      );
    }
  }

  function withCondition(o: Obj, type: string, reason: string, message: string): Obj {
    const next = JSON.parse(JSON.stringify(o));
    next.status = next.status ?? {};
    next.status.conditions = [...(next.status.conditions ?? []), { type, status: 'True', reason, message, lastUpdateTime: ts(now()) }];
    return next;
  }

  async function reconcile(o: Obj): Promise<void> {
    if (closed || o.spec?.signerName !== opts.signerName || behaviour.mode === 'ignore') return;
    const name = o.metadata.name as string;
    if (inFlight.has(name) || has(o, 'Denied') || has(o, 'Failed') || o.status?.certificate) return;
    inFlight.add(name);
    try {
      if (!has(o, 'Approved')) {
        if (behaviour.mode === 'deny') {
          await fake.api.update('certificatesigningrequests', withCondition(o, 'Denied', 'SignerPolicy', 'denied by the fake signer'), { subresource: 'approval', as: user });
          handled.push({ name, outcome: 'Denied' });
          return;
        }
        if (!behaviour.autoApprove) return;
        o = await fake.api.update('certificatesigningrequests', withCondition(o, 'Approved', 'AutoApproved', 'approved by the fake signer'), { subresource: 'approval', as: user });
      }
      if (behaviour.delayMs > 0) await new Promise((r) => setTimeout(r, behaviour.delayMs));
      if (closed) return;
      o = await fake.api.get('certificatesigningrequests', name, { as: user });
      if (behaviour.mode === 'fail') {
        await fake.api.update('certificatesigningrequests', withCondition(o, 'Failed', 'SignerFailure', 'injected signer failure'), { subresource: 'status', as: user });
        handled.push({ name, outcome: 'Failed' });
        return;
      }
      let csr;
      try {
        csr = await parseAndVerifyCsr(Buffer.from(o.spec.request, 'base64').toString('utf8'));
      } catch (e) {
        await fake.api.update('certificatesigningrequests', withCondition(o, 'Failed', 'InvalidRequest', (e as Error).message), { subresource: 'status', as: user });
        handled.push({ name, outcome: 'Failed' });
        return;
      }
      const usages: string[] = o.spec.usages ?? [];
      const isCA = usages.includes('cert sign');
      const requested = o.spec.expirationSeconds ?? opts.defaultExpirationSeconds ?? 86400;
      const seconds = Math.min(requested, opts.maxExpirationSeconds ?? 365 * 86400);
      const t = now();
      const pem = await signCsr({
        ca,
        csr,
        isCA,
        usages: usages.filter((u) => u !== 'cert sign'),
        notBefore: new Date(t.getTime() - (opts.backdateSeconds ?? 30) * 1000),
        notAfter: new Date(t.getTime() + seconds * 1000),
      });
      const next = JSON.parse(JSON.stringify(o));
      next.status.certificate = Buffer.from(pem + ca.chainPem).toString('base64');
      await fake.api.update('certificatesigningrequests', next, { subresource: 'status', as: user });
      handled.push({ name, outcome: 'Issued' });
    } catch (e) {
      if (!(e instanceof KubeStatusError && (e.code === 404 || e.code === 409))) throw e;
    } finally {
      inFlight.delete(name);
    }
  }

  function kick(o: Obj): void {
    const p = reconcile(o).catch((e) => process.emitWarning(`fake csr signer: ${(e as Error).message}`));
    work.add(p);
    void p.finally(() => work.delete(p));
  }

  await publish();
  const handle: WatchHandle = fake.api.watch('certificatesigningrequests', (type, o) => {
    if (type !== 'DELETED') kick(o);
  }, { as: user });
  for (const o of (await fake.api.list('certificatesigningrequests', { as: user, fieldSelector: `spec.signerName=${opts.signerName}` })).items) kick(o);

  return {
    signerName: opts.signerName,
    get ca() {
      return ca;
    },
    trustBundleName: ctbName,
    bundlePem: () => roots.join(''),
    setBehaviour(b) {
      Object.assign(behaviour, b);
    },
    async rotateCa(o = {}) {
      ca = await newCa();
      roots = o.dropOld ? [ca.rootPem] : [...roots, ca.rootPem];
      await publish();
      return ca;
    },
    handled,
    async idle() {
      while (work.size > 0) await Promise.all([...work]);
    },
    close() {
      closed = true;
      handle.stop();
    },
  };
}
