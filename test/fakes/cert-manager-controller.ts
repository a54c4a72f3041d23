/**
 * A fake cert-manager controller (approver + CA issuer) that runs inside tests against the fake kube-apiserver's
 * in-memory API, so every write goes through the same validation, admission and watch events a client sees.
 *
 * Modelled: for CertificateRequests whose spec.issuerRef matches a configured issuer it (1) sets Approved=True with
 * reason `cert-manager.io` like the built-in approver (or Denied=True when told to deny), then (2) like the CA issuer
 * verifies the CSR signature, checks spec.isCA/spec.usages against the CSR's extensions (mismatch →
 * InvalidRequest=True + Ready=False reason Failed + failureTime), and writes status.certificate (leaf, then the
 * intermediates when the CA is an intermediate, base64 PEM as the CRD's `format: byte` wants), status.ca (the root;
 * omit with a knob) and Ready=True reason Issued. Knobs: deny (Denied + Ready False reason Denied + failureTime),
 * fail (Ready False reason Failed + failureTime), invalid (InvalidRequest), delay before signing, omit status.ca,
 * no auto-approval (then only CRs approved by someone else are signed).
 * Not modelled: Certificates/Secrets, Issuer objects and their Ready state, ACME/Vault issuers, renewal, backoff,
 * duration defaults other than 90 days (2160h), cert-manager's own garbage collection of CRs.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import type { FakeKube, Obj, WatchHandle } from './kube-apiserver.js';
import { KubeStatusError } from './kube-apiserver.js';
import { createCa, csrRequestedUsages, parseAndVerifyCsr, signCsr, type CertificateAuthority } from './kube/pki.js';
import { parseGoDuration } from './kube/resources.js';

export interface IssuerRef {
  name: string;
  /** Default `Issuer`; an external issuer's own kind for another group. */
  kind?: string;
  /** Default `cert-manager.io`. */
  group?: string;
}

export type CertManagerMode = 'issue' | 'deny' | 'fail' | 'invalid';

export interface CertManagerBehaviour {
  mode: CertManagerMode;
  /** Wait this long after approval before signing. Default 0. */
  delayMs: number;
  /** Leave status.ca empty (it is best effort in cert-manager). Default false. */
  omitCa: boolean;
  /**
   * Approve matching CRs as the built-in approver does (default true). Like the real one (backends.md §2.2) it only
   * approves for issuers of group cert-manager.io (Issuer, ClusterIssuer); an external issuer's CRs wait for an
   * approver such as approver-policy, i.e. for someone else to approve them.
   */
  autoApprove: boolean;
}

export interface FakeCertManagerOptions {
  issuerRef: IssuerRef;
  /** The signing CA; default: a generated root (or root + intermediate with `intermediate: true`). */
  ca?: CertificateAuthority;
  intermediate?: boolean;
  behaviour?: Partial<CertManagerBehaviour>;
  /** Time source for validity. Default system time. */
  now?: () => Date;
}

export interface FakeCertManager {
  /** The CA that signs (an intermediate when `intermediate: true`). */
  readonly ca: CertificateAuthority;
  /** PEM of the root (what status.ca carries). */
  readonly rootPem: string;
  setBehaviour(b: Partial<CertManagerBehaviour>): void;
  /** Names (`ns/name`) of CRs this controller issued, denied or failed, in order. */
  readonly handled: Array<{ key: string; outcome: 'Issued' | 'Denied' | 'Failed' | 'InvalidRequest' }>;
  /** Resolves when all work started so far has finished. */
  idle(): Promise<void>;
  close(): void;
}

const CONTROLLER_USER = 'system:serviceaccount:cert-manager:cert-manager';

function ts(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function cond(o: Obj, type: string): any {
  return (o.status?.conditions ?? []).find((c: any) => c.type === type);
}

export async function startFakeCertManagerController(fake: FakeKube, opts: FakeCertManagerOptions): Promise<FakeCertManager> {
  const now = opts.now ?? (() => new Date());
  const behaviour: CertManagerBehaviour = { mode: 'issue', delayMs: 0, omitCa: false, autoApprove: true, ...opts.behaviour };
  let ca = opts.ca;
  if (!ca) {
    const nb = new Date(now().getTime() - 3600_000);
    const na = new Date(now().getTime() + 365 * 86400_000);
    const root = await createCa({ commonName: 'fake cert-manager root', notBefore: nb, notAfter: na });
    ca = opts.intermediate ? await createCa({ commonName: 'fake cert-manager intermediate', notBefore: nb, notAfter: na, parent: root }) : root;
  }
  const signer = ca;
  const ref = { kind: 'Issuer', group: 'cert-manager.io', ...opts.issuerRef };
  // The controller acts as cert-manager's service account, a superuser here (RBAC for it is not under test).
  fake.addUser(CONTROLLER_USER, { superuser: true, uid: 'cert-manager-uid', groups: ['system:serviceaccounts'] });
  const handled: FakeCertManager['handled'] = [];
  const inFlight = new Set<string>();
  const work = new Set<Promise<void>>();
  let closed = false;

  const matches = (o: Obj): boolean => {
    const r = o.spec?.issuerRef ?? {};
    return r.name === ref.name && (r.kind || 'Issuer') === ref.kind && (r.group || 'cert-manager.io') === ref.group;
  };

  async function writeStatus(o: Obj, mutate: (status: any) => void): Promise<Obj> {
    const next = JSON.parse(JSON.stringify(o));
    next.status = next.status ?? {};
    next.status.conditions = next.status.conditions ?? [];
    mutate(next.status);
    return fake.api.update('certificaterequests', next, { subresource: 'status', namespace: o.metadata.namespace, as: CONTROLLER_USER });
  }

  function setCond(status: any, type: string, s: string, reason: string, message: string): void {
    status.conditions = status.conditions.filter((c: any) => c.type !== type);
    status.conditions.push({ type, status: s, reason, message, lastTransitionTime: ts(now()) });
  }

  async function reconcile(o: Obj): Promise<void> {
    if (closed || !matches(o)) return;
    const key = `${o.metadata.namespace}/${o.metadata.name}`;
    if (inFlight.has(key)) return;
    const ready = cond(o, 'Ready');
    if (cond(o, 'Denied') || (ready && ready.status === 'True') || (ready && ['Failed', 'Denied'].includes(ready.reason)) || cond(o, 'InvalidRequest')) return;
    inFlight.add(key);
    try {
      if (!cond(o, 'Approved')) {
        const builtIn = ref.group === 'cert-manager.io';
        if ((!behaviour.autoApprove || !builtIn) && behaviour.mode !== 'deny') return;
        if (behaviour.mode === 'deny') {
          await writeStatus(o, (st) => {
            setCond(st, 'Denied', 'True', 'cert-manager.io', 'Certificate request has been denied by cert-manager.io');
            setCond(st, 'Ready', 'False', 'Denied', 'The CertificateRequest was denied by an approval controller');
            st.failureTime = ts(now());
          });
          handled.push({ key, outcome: 'Denied' });
          return;
        }
        o = await writeStatus(o, (st) => setCond(st, 'Approved', 'True', 'cert-manager.io', 'Certificate request has been approved by cert-manager.io'));
      }
      if (behaviour.delayMs > 0) await new Promise((r) => setTimeout(r, behaviour.delayMs));
      if (closed) return;
      o = await fake.api.get('certificaterequests', o.metadata.name, { namespace: o.metadata.namespace, as: CONTROLLER_USER });
      if (behaviour.mode === 'fail') {
        await writeStatus(o, (st) => {
          setCond(st, 'Ready', 'False', 'Failed', 'Failed to sign certificate: injected failure');
          st.failureTime = ts(now());
        });
        handled.push({ key, outcome: 'Failed' });
        return;
      }
      const problem = behaviour.mode === 'invalid' ? 'injected invalid request' : await checkRequest(o);
      if (problem) {
        await writeStatus(o, (st) => {
          setCond(st, 'InvalidRequest', 'True', 'RequestParsingError', problem);
          setCond(st, 'Ready', 'False', 'Failed', `The CertificateRequest is invalid: ${problem}`);
          st.failureTime = ts(now());
        });
        handled.push({ key, outcome: 'InvalidRequest' });
        return;
      }
      const csr = await parseAndVerifyCsr(Buffer.from(o.spec.request, 'base64').toString('utf8'));
      const isCA = Boolean(o.spec.isCA);
      const usages: string[] = o.spec.usages && o.spec.usages.length > 0 ? o.spec.usages : ['digital signature', 'key encipherment'];
      const seconds = o.spec.duration ? parseGoDuration(o.spec.duration)! : 2160 * 3600;
      const nb = now();
      const leaf = await signCsr({ ca: signer, csr, isCA, usages: isCA ? [...usages.filter((u) => u !== 'cert sign'), 'cert sign'] : usages, notBefore: nb, notAfter: new Date(nb.getTime() + seconds * 1000) });
      const chain = signer.rootPem === signer.certPem ? leaf : leaf + signer.certPem + signer.chainPem;
      await writeStatus(o, (st) => {
        st.certificate = Buffer.from(chain).toString('base64');
        if (!behaviour.omitCa) st.ca = Buffer.from(signer.rootPem).toString('base64');
        setCond(st, 'Ready', 'True', 'Issued', 'Certificate fetched from issuer successfully');
      });
      handled.push({ key, outcome: 'Issued' });
    } catch (e) {
      // A deleted CR or a lost race is normal for a controller; anything else is a bug in the fake or the test.
      if (!(e instanceof KubeStatusError && (e.code === 404 || e.code === 409))) throw e;
    } finally {
      inFlight.delete(key);
    }
  }

  /** cert-manager's CA issuer checks: CSR signature, isCA and usages consistent with the CSR's extensions. */
  async function checkRequest(o: Obj): Promise<string | undefined> {
    let csr;
    try {
      csr = await parseAndVerifyCsr(Buffer.from(o.spec.request, 'base64').toString('utf8'));
    } catch (e) {
      return `failed to decode CSR: ${(e as Error).message}`;
    }
    const want = csrRequestedUsages(csr);
    const isCA = Boolean(o.spec.isCA);
    if (want.isCA !== undefined && want.isCA !== isCA) return `CSR isCA=${want.isCA} does not match spec.isCA=${isCA}`;
    if (want.usages && o.spec.usages) {
      const norm = (u: string[]): string => [...new Set(u.map((x) => (x === 'signing' ? 'digital signature' : x)))].filter((x) => !(isCA && x === 'cert sign')).sort().join(',');
      if (norm(want.usages) !== norm(o.spec.usages)) {
        return `csr key usages do not match specified usages, these should match if both are set: [${want.usages.join(' ')}] vs [${o.spec.usages.join(' ')}]`;
      }
    }
    return undefined;
  }

  function kick(o: Obj): void {
    const p = reconcile(o).catch((e) => {
      // Surface unexpected errors loudly: the test should fail rather than hang.
      process.emitWarning(`fake cert-manager controller: ${(e as Error).message}`);
    });
    work.add(p);
    void p.finally(() => work.delete(p));
  }

  const handle: WatchHandle = fake.api.watch(
    'certificaterequests',
    (type, o) => {
      if (type !== 'DELETED') kick(o);
    },
    { as: CONTROLLER_USER },
  );
  for (const o of (await fake.api.list('certificaterequests', { as: CONTROLLER_USER })).items) kick({ ...o });

  return {
    ca: signer,
    rootPem: signer.rootPem,
    handled,
    setBehaviour(b) {
      Object.assign(behaviour, b);
    },
    async idle() {
      while (work.size > 0) await Promise.all([...work]);
    },
    close() {
      closed = true;
      handle.stop();
    },
  };
}
