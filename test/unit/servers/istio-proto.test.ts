import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadApiProtos, ISTIO_CA_SERVICE } from '../../../src/servers/controller/proto.js';

/**
 * proto/istio/v1/auth/ca.proto against protocols.md §5 (verified against istio/api security/v1alpha1/ca.proto):
 * numbers, types and labels. A mismatch would silently break unchanged istio-agents.
 */
interface Field {
  name: string;
  number: number;
  label: string;
  type: string;
  typeName: string;
}

const SPEC: Record<string, Record<string, { number: number; type: string; label?: string; typeName?: string }>> = {
  'istio.v1.auth.IstioCertificateRequest': {
    csr: { number: 1, type: 'TYPE_STRING' },
    validity_duration: { number: 3, type: 'TYPE_INT64' },
    metadata: { number: 4, type: 'TYPE_MESSAGE', typeName: 'google.protobuf.Struct' },
  },
  'istio.v1.auth.IstioCertificateResponse': {
    cert_chain: { number: 1, type: 'TYPE_STRING', label: 'LABEL_REPEATED' },
  },
};

describe('proto/istio/v1/auth/ca.proto matches protocols.md §5', () => {
  const def = loadApiProtos() as unknown as Record<string, { type?: { field: Field[] } }>;

  for (const [msg, fields] of Object.entries(SPEC)) {
    it(msg, () => {
      const actual = def[msg]?.type?.field;
      assert.ok(actual, `${msg} is defined`);
      assert.deepEqual(actual.map((f) => f.name).sort(), Object.keys(fields).sort(), `${msg} declares exactly the spec's fields`);
      for (const f of actual) {
        const want = fields[f.name]!;
        assert.equal(f.number, want.number, `${msg}.${f.name} number`);
        assert.equal(f.type, want.type, `${msg}.${f.name} type`);
        assert.equal(f.label, want.label ?? 'LABEL_OPTIONAL', `${msg}.${f.name} label`);
        if (want.typeName) assert.equal(f.typeName.replace(/^\./, ''), want.typeName, `${msg}.${f.name} message type`);
      }
      // Field 2 (subject_id in old istio/api versions) is never reused.
      assert.ok(!actual.some((f) => f.number === 2), `${msg} does not use field 2`);
    });
  }

  it('CreateCertificate is unary at the upstream path', () => {
    const svc = def[ISTIO_CA_SERVICE] as unknown as Record<string, { path: string; requestStream: boolean; responseStream: boolean }>;
    assert.deepEqual(Object.keys(svc), ['CreateCertificate']);
    assert.equal(svc.CreateCertificate!.path, '/istio.v1.auth.IstioCertificateService/CreateCertificate');
    assert.equal(svc.CreateCertificate!.requestStream, false);
    assert.equal(svc.CreateCertificate!.responseStream, false);
  });
});
