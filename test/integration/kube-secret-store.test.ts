import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { startFakeKubeApiServer, type FakeKube } from '../fakes/kube-apiserver.js';
import { KubeSecretStore, STATE_ANNOTATION, openKubeSecretStore } from '../../src/store/kube-secret-store.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectKube } from '../../src/kube/client.js';
import { kubernetesStateSchema, stateSchema } from '../../src/store/config.js';
import { CaError } from '../../src/util/errors.js';

const log = pino({ level: 'silent' });
const NS = 'meshca';
let kube: FakeKube;
let n = 0;

/** RBAC of meshca's service account for the state Secret (see the README). */
function stateRules(name: string) {
  return [
    // list/watch are restricted by name too: the watch sends fieldSelector metadata.name=<name>, which the API
    // server (and the fake) authorise as a request for that name.
    { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'update', 'list', 'watch'], resourceNames: [name], namespaces: [NS] },
    { apiGroups: [''], resources: ['secrets'], verbs: ['create'], namespaces: [NS] },
  ];
}

before(async () => {
  kube = await startFakeKubeApiServer({
    users: {
      meshca: { rules: [...stateRules('state-rbac')] },
      readonly: { rules: [{ apiGroups: [''], resources: ['secrets'], verbs: ['get', 'list', 'watch'], namespaces: [NS] }] },
    },
  });
});

after(async () => {
  await kube.close();
});

async function open(name: string, user = 'admin'): Promise<KubeSecretStore> {
  const k = await connectKube({ component: 'test', kubeConfig: kube.kubeConfig(user) });
  return KubeSecretStore.open({ kube: k, namespace: NS, name, log });
}

const fresh = (): string => `state-${++n}`;

async function eventually(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function expectError(p: Promise<unknown>, code: string, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof CaError, `expected CaError, got ${e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    return true;
  });
}

test('a missing Secret is created on first open (annotated, Opaque) and reused after', async () => {
  const name = fresh();
  const s = await open(name);
  const obj = await kube.api.get('secrets', name, { namespace: NS });
  assert.equal(obj.type, 'Opaque');
  assert.equal(obj.metadata.annotations[STATE_ANNOTATION], 'v1');
  assert.equal(obj.metadata.labels['app.kubernetes.io/managed-by'], 'meshca');
  assert.deepEqual(await s.list(), []);
  assert.equal(await s.read('authority'), undefined);
  const rv = obj.metadata.resourceVersion;
  await open(name);
  assert.equal((await kube.api.get('secrets', name, { namespace: NS })).metadata.resourceVersion, rv, 'second open did not rewrite it');
  assert.equal(s.location, `Secret ${NS}/${name}`);
});

test('keys are <key>.json entries; values round-trip byte for byte', async () => {
  const name = fresh();
  const s = await open(name);
  const bin = Buffer.from([0, 1, 2, 255, 10, 13]);
  await s.write('authority', Buffer.from('{"a":1}\n'));
  await s.write('internal-root', bin);
  assert.deepEqual((await s.read('internal-root'))!, bin);
  assert.equal((await s.read('authority'))!.toString(), '{"a":1}\n');
  assert.deepEqual((await s.list()).sort(), ['authority', 'internal-root']);
  const obj = await kube.api.get('secrets', name, { namespace: NS });
  assert.deepEqual(Object.keys(obj.data).sort(), ['authority.json', 'internal-root.json']);
  await assert.rejects(s.write('../x', Buffer.from('x')), /invalid state key/);
});

test('two stores on one Secret: concurrent read-modify-writes lose no update (409 path)', async () => {
  const name = fresh();
  const a = await open(name);
  const b = await open(name);
  const conflictsBefore = kube.requests.filter((r) => r.resource === 'secrets' && r.status === 409).length;
  const bump = (s: KubeSecretStore, key: string) =>
    s.withLock(async () => {
      const cur = Number((await s.read(key))?.toString() ?? '0');
      await new Promise((r) => setTimeout(r, 2)); // widen the race window
      await s.write(key, Buffer.from(String(cur + 1)));
      await s.write(`${key}-last`, Buffer.from(String(cur + 1)));
    });
  const runs: Promise<void>[] = [];
  for (let i = 0; i < 15; i++) runs.push(bump(a, 'counter'), bump(b, 'counter'));
  await Promise.all(runs);
  assert.equal((await a.read('counter'))!.toString(), '30');
  assert.equal((await b.read('counter-last'))!.toString(), '30', 'both keys of one transaction were committed together');
  const conflicts = kube.requests.filter((r) => r.resource === 'secrets' && r.status === 409).length - conflictsBefore;
  assert.ok(conflicts > 0, 'the two stores did conflict and retried');
});

test('withLock: nested calls join the transaction, reads see own writes, a throwing fn writes nothing', async () => {
  const name = fresh();
  const s = await open(name);
  await s.withLock(async () => {
    await s.write('one', Buffer.from('1'));
    assert.equal((await s.read('one'))!.toString(), '1', 'read-your-writes inside the transaction');
    await s.withLock(async () => s.write('two', Buffer.from('2')));
    assert.deepEqual((await s.list()).sort(), ['one', 'two']);
  });
  assert.deepEqual((await s.list()).sort(), ['one', 'two']);
  const rv = (await kube.api.get('secrets', name, { namespace: NS })).metadata.resourceVersion;
  await assert.rejects(
    s.withLock(async () => {
      await s.write('one', Buffer.from('changed'));
      throw new Error('decided against it');
    }),
    /decided against it/,
  );
  assert.equal((await s.read('one'))!.toString(), '1');
  assert.equal((await kube.api.get('secrets', name, { namespace: NS })).metadata.resourceVersion, rv, 'no write reached the API server');
});

/**
 * Drops the watch and compacts history past its resourceVersion (an unrelated write moves the compaction point: a
 * watch from exactly that point is still valid), then expects `seen` to get the write made meanwhile (a re-list) and
 * one made after the watch re-opened.
 */
async function expectRelistAfterExpiredWatch(name: string, writer: { write(k: string, v: Buffer): Promise<void> }, seen: string[]): Promise<void> {
  await kube.api.create('configmaps', { metadata: { name: `${name}-unrelated`, namespace: NS }, data: {} });
  kube.compactHistory();
  kube.dropWatches('destroy');
  await writer.write('authority', Buffer.from('v2'));
  await eventually(() => seen.filter((k) => k === 'authority').length === 2, 'the change made while the watch was down');
  await eventually(() => kube.openWatches() > 0, 'the watch to re-open');
  await writer.write('authority', Buffer.from('v3'));
  await eventually(() => seen.filter((k) => k === 'authority').length === 3, 'a change after the re-list');
}

test('watch reports keys another writer changed, and keeps working after the watch is dropped and history compacted (410)', async () => {
  const name = fresh();
  const a = await open(name);
  const b = await open(name);
  const seen: string[] = [];
  const unsub = a.watch((k) => seen.push(k));
  try {
    await eventually(() => kube.openWatches() > 0, 'the watch to open');
    await b.write('authority', Buffer.from('v1'));
    await eventually(() => seen.includes('authority'), 'the change to be seen');
    await b.withLock(async () => b.write('internal-root', Buffer.from('r1')));
    await eventually(() => seen.includes('internal-root'), 'the second change');
    assert.equal(seen.filter((k) => k === 'authority').length, 1, 'an unchanged key is not reported again');

    // Make the resumed watch too old: the store must re-list, then see later writes.
    await expectRelistAfterExpiredWatch(name, b, seen);
  } finally {
    unsub();
    await a.close();
  }
  await eventually(() => kube.openWatches() === 0, 'the watch to close after unsubscribe');
});

test('watch re-lists when the API server answers a resumed watch with HTTP 410 Gone (not a 410 ERROR event)', async () => {
  const name = fresh();
  const a = await open(name);
  const b = await open(name);
  const seen: string[] = [];
  const unsub = a.watch((k) => seen.push(k));
  kube.setExpiredWatchResponse('status');
  try {
    await eventually(() => kube.openWatches() > 0, 'the watch to open');
    await b.write('authority', Buffer.from('v1'));
    await eventually(() => seen.includes('authority'), 'the change to be seen');

    // The resumed watch's resourceVersion is now too old and the server refuses it with a 410 response: re-list.
    await expectRelistAfterExpiredWatch(name, b, seen);
  } finally {
    kube.setExpiredWatchResponse('event');
    unsub();
    await a.close();
  }
  await eventually(() => kube.openWatches() === 0, 'the watch to close after unsubscribe');
});

test('a foreign Secret is refused, never overwritten', async () => {
  await kube.api.create('secrets', { metadata: { name: 'someone-elses', namespace: NS }, data: { 'tls.crt': Buffer.from('x').toString('base64') } });
  await expectError(open('someone-elses'), 'FAILED_PRECONDITION', /Secret meshca\/someone-elses exists but is not meshca CA state \(no meshca\.io\/state annotation\)/);
  await kube.api.create('secrets', { metadata: { name: 'tls-typed', namespace: NS, annotations: { [STATE_ANNOTATION]: 'v1' } }, type: 'kubernetes.io/tls', data: { 'tls.crt': '', 'tls.key': '' } });
  await expectError(open('tls-typed'), 'FAILED_PRECONDITION', /type "kubernetes\.io\/tls"/);
  await kube.api.create('secrets', { metadata: { name: 'future', namespace: NS, annotations: { [STATE_ANNOTATION]: 'v9' } } });
  await expectError(open('future'), 'FAILED_PRECONDITION', /format "v9"/);
});

test('a corrupt Secret (unexpected entry) is refused naming the entry', async () => {
  const name = fresh();
  const s = await open(name);
  await s.write('authority', Buffer.from('{}'));
  const obj = await kube.api.get('secrets', name, { namespace: NS });
  obj.data['notes.txt'] = Buffer.from('hi').toString('base64');
  await kube.api.update('secrets', obj, { namespace: NS });
  await expectError(s.read('authority'), 'FAILED_PRECONDITION', /is corrupt: unexpected entry "notes\.txt"/);
  await expectError(open(name), 'FAILED_PRECONDITION', /unexpected entry "notes\.txt"/);
});

test('a Secret deleted while running gives a clear error', async () => {
  const name = fresh();
  const s = await open(name);
  await kube.api.delete('secrets', name, { namespace: NS });
  await expectError(s.withLock(async () => s.write('authority', Buffer.from('x'))), 'NOT_FOUND', /does not exist .*restore it from backup/);
});

test('least-privilege RBAC is enough; a missing permission is named', async () => {
  const s = await open('state-rbac', 'meshca');
  await s.write('authority', Buffer.from('ok'));
  assert.equal((await s.read('authority'))!.toString(), 'ok');
  const seen: string[] = [];
  const unsub = s.watch((k) => seen.push(k));
  const other = await open('state-rbac');
  await eventually(() => kube.openWatches() > 0, 'watch');
  await other.write('authority', Buffer.from('changed'));
  await eventually(() => seen.includes('authority'), 'watch under RBAC');
  unsub();
  const ro = await open('state-rbac', 'readonly');
  await expectError(ro.write('authority', Buffer.from('no')), 'PERMISSION_DENIED', /Secret meshca\/state-rbac: update: 403 Forbidden: .*cannot update resource "secrets"/);
  await expectError(open('state-missing', 'readonly'), 'PERMISSION_DENIED', /create: 403 Forbidden/);
});

test('API server errors are UNAVAILABLE and retryable', async () => {
  const name = fresh();
  const s = await open(name);
  kube.failNext(1, { code: 503, match: (r) => r.resource === 'secrets' });
  await assert.rejects(s.read('authority'), (e: unknown) => e instanceof CaError && e.code === 'UNAVAILABLE' && e.retryable && /Secret meshca\/state-\d+: get: 503/.test(e.message));
});

test('openKubeSecretStore opens the configured Secret through a kubeconfig file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'meshca-state-'));
  try {
    const file = join(dir, 'kubeconfig');
    await writeFile(file, kube.kubeconfigYaml('meshca'), { mode: 0o600 });
    const cfg = kubernetesStateSchema.parse({ secret: { namespace: NS, name: 'state-rbac' }, kubeconfig: file });
    const s = await openKubeSecretStore(cfg, { log });
    assert.equal(s.location, 'Secret meshca/state-rbac');
    assert.ok(Array.isArray(await s.list()));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('config: state.kubernetes defaults and checks', () => {
  assert.equal(stateSchema.parse(undefined).kubernetes, undefined);
  const c = kubernetesStateSchema.parse({ secret: { namespace: 'mesh' } });
  assert.deepEqual(c, {
    secret: { namespace: 'mesh', name: 'meshca-ca-state' },
    kubeconfig: '',
    lease: { name: 'meshca-ca-state-rotation', namespace: 'mesh', duration: 15, identity: '' },
  });
  assert.equal(kubernetesStateSchema.parse({ secret: { namespace: 'm', name: 's' }, lease: { name: 'l', namespace: 'o', duration: '30s' } }).lease.duration, 30);
  assert.throws(() => kubernetesStateSchema.parse({ secret: {} }), /namespace/);
  assert.throws(() => kubernetesStateSchema.parse({ secret: { namespace: 'Bad_NS' } }), /namespace name/);
  assert.throws(() => kubernetesStateSchema.parse({ secret: { namespace: 'm' }, lease: { duration: '1s' } }), /minimum/);
  assert.throws(() => kubernetesStateSchema.parse({ secret: { namespace: 'm' }, extra: 1 }), /extra/);
});
