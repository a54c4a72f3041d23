// Pure helpers of src/kube: error classification from every shape the client produces, usage words, names.
import 'reflect-metadata';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { isConflict, isNotFound, isRetryableKubeError, kubeCaError, kubeErrorInfo } from '../../../src/kube/errors.js';
import { LEAF_USAGES, csrUsages, goDuration, requestUsages } from '../../../src/kube/usages.js';
import { labelSelector, trustDomainLabelValue } from '../../../src/kube/names.js';
import { signerLinkedName } from '../../../src/kube/ctb.js';
import { intermediateCsr, leafCsr } from './csr-helpers.js';

/** A CSR with only an extendedKeyUsage extension listing `oids`. */
async function ekuCsr(oids: string[]): Promise<Buffer> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  type X509Crypto = NonNullable<Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[1]>;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { keys, signingAlgorithm: alg, extensions: [new x509.ExtendedKeyUsageExtension(oids, false)] },
    webcrypto as unknown as X509Crypto,
  );
  return Buffer.from(csr.rawData);
}

describe('kube helpers', () => {
  it('reads ApiException (body as a JSON string), watch errors, Status objects and transport errors', () => {
    const api = Object.assign(new Error('HTTP-Code: 404\nMessage: ...'), { code: 404, body: JSON.stringify({ kind: 'Status', reason: 'NotFound', message: 'x "a" not found' }) });
    assert.deepEqual(kubeErrorInfo(api), { code: 404, reason: 'NotFound', message: 'x "a" not found' });
    assert.ok(isNotFound(api));
    assert.deepEqual(kubeErrorInfo(Object.assign(new Error('Forbidden'), { statusCode: 403 })), { code: 403, reason: undefined, message: 'Forbidden' });
    assert.equal(kubeErrorInfo({ kind: 'Status', code: 410, status: 'Failure', reason: 'Expired', message: 'too old' }).code, 410);
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    assert.equal(kubeErrorInfo(refused).code, undefined);
    assert.ok(isRetryableKubeError(refused));
    assert.ok(isConflict({ kind: 'Status', code: 409, status: 'Failure', reason: 'Conflict', message: '' }));
  });

  it('maps statuses to CaError codes with the component and action in the message', () => {
    const e403 = kubeCaError('x', 'create thing', { kind: 'Status', code: 403, status: 'Failure', reason: 'Forbidden', message: 'no' });
    assert.equal(e403.code, 'PERMISSION_DENIED');
    assert.equal(e403.retryable, false);
    assert.match(e403.message, /^x: create thing: 403 Forbidden: no \(grant it in the RBAC/);
    assert.equal(kubeCaError('x', 'y', { kind: 'Status', code: 503, status: 'Failure', reason: 'ServiceUnavailable', message: '' }).retryable, true);
    assert.equal(kubeCaError('x', 'y', { kind: 'Status', code: 422, status: 'Failure', reason: 'Invalid', message: '' }).code, 'FAILED_PRECONDITION');
    assert.match(kubeCaError('x', 'y', new Error('socket hang up')).message, /API server unreachable: socket hang up/);
  });

  it('formats Go durations and picks usages from the CSR or the profile', async () => {
    assert.equal(goDuration(172800), '48h0m0s');
    assert.equal(goDuration(5400), '1h30m0s');
    assert.equal(goDuration(59), '0h0m59s');
    assert.deepEqual(requestUsages((await intermediateCsr('td')).csrDer, 'intermediate'), ['cert sign', 'crl sign']);
    assert.deepEqual(requestUsages((await leafCsr('spiffe://td/x')).csrDer, 'leaf'), ['digital signature', 'key encipherment', 'server auth', 'client auth']);
    // meshca's own leaf CSR carries exactly those usages in its keyUsage / extKeyUsage (signers' webhooks compare the
    // CSR with spec.usages: backends.md §2.1), so the request's usages are the CSR's own, not a fallback.
    assert.deepEqual(csrUsages((await leafCsr('spiffe://td/x')).csrDer).usages, [...LEAF_USAGES]);
    // Extended key usages are translated to the APIs' words; one without a word is refused, naming its OID.
    assert.deepEqual(requestUsages(await ekuCsr(['1.3.6.1.5.5.7.3.2', '1.3.6.1.5.5.7.3.7']), 'leaf'), ['client auth', 'ipsec user']);
    const odd = await ekuCsr(['1.3.6.1.5.5.7.3.1', '1.2.3.4.5']);
    assert.throws(
      () => requestUsages(odd, 'leaf'),
      (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /extended key usage 1\.2\.3\.4\.5\b/.test(e.message),
    );
  });

  it('names: trust-domain label values, selectors, signer-linked bundle names', () => {
    assert.equal(trustDomainLabelValue('cluster.local'), 'cluster.local');
    const long = trustDomainLabelValue(`${'a'.repeat(70)}.example`);
    assert.match(long, /^td-[0-9a-f]{40}$/);
    assert.equal(labelSelector({ a: 'b', c: 'd' }), 'a=b,c=d');
    assert.equal(signerLinkedName('example.com/team/meshca', 'live'), 'example.com:team:meshca:live');
  });
});
