/**
 * JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386) applied to plain JSON values, as the API server does
 * before running the result through the normal update path. Failures throw PatchError (→ 422 / 400 upstream).
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
export class PatchError extends Error {}

type Json = any;

function clone<T>(v: T): T {
  return v === undefined ? v : JSON.parse(JSON.stringify(v));
}

export function applyMergePatch(target: Json, patch: Json): Json {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return clone(patch);
  const out: Json = target !== null && typeof target === 'object' && !Array.isArray(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = applyMergePatch(out[k], v);
  }
  return out;
}

function parsePointer(p: string): string[] {
  if (p === '') return [];
  if (!p.startsWith('/')) throw new PatchError(`invalid JSON pointer ${JSON.stringify(p)}`);
  return p
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function getAt(doc: Json, path: string[]): Json {
  let cur = doc;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object' || !(seg in cur)) return undefined;
    cur = cur[seg];
  }
  return cur;
}

function parentOf(doc: Json, path: string[], op: string, raw: string): { parent: Json; key: string } {
  if (path.length === 0) throw new PatchError(`${op} operation does not apply: doc is missing path: "${raw}"`);
  const parent = getAt(doc, path.slice(0, -1));
  if (parent === null || typeof parent !== 'object') {
    throw new PatchError(`${op} operation does not apply: doc is missing path: "${raw}"`);
  }
  return { parent, key: path[path.length - 1]! };
}

function addAt(doc: Json, raw: string, value: Json, op: string): Json {
  const path = parsePointer(raw);
  if (path.length === 0) return clone(value);
  const { parent, key } = parentOf(doc, path, op, raw);
  if (Array.isArray(parent)) {
    const idx = key === '-' ? parent.length : Number(key);
    if (!Number.isInteger(idx) || idx < 0 || idx > parent.length) throw new PatchError(`${op} operation does not apply: index out of range: ${raw}`);
    parent.splice(idx, 0, clone(value));
  } else parent[key] = clone(value);
  return doc;
}

function removeAt(doc: Json, raw: string, op: string): Json {
  const path = parsePointer(raw);
  const { parent, key } = parentOf(doc, path, op, raw);
  if (Array.isArray(parent)) {
    const idx = Number(key);
    if (!Number.isInteger(idx) || idx < 0 || idx >= parent.length) throw new PatchError(`${op} operation does not apply: doc is missing path: "${raw}"`);
    parent.splice(idx, 1);
  } else {
    if (!(key in parent)) throw new PatchError(`${op} operation does not apply: doc is missing path: "${raw}"`);
    delete parent[key];
  }
  return doc;
}

export function applyJsonPatch(target: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw new PatchError('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  let doc = clone(target);
  for (const o of ops) {
    if (o === null || typeof o !== 'object' || typeof o.op !== 'string' || typeof o.path !== 'string') {
      throw new PatchError('invalid JSON patch operation: each operation needs "op" and "path"');
    }
    switch (o.op) {
      case 'add':
        doc = addAt(doc, o.path, o.value, 'add');
        break;
      case 'remove':
        doc = removeAt(doc, o.path, 'remove');
        break;
      case 'replace':
        if (getAt(doc, parsePointer(o.path)) === undefined) throw new PatchError(`replace operation does not apply: doc is missing key: ${o.path}`);
        doc = removeAt(doc, o.path, 'replace');
        doc = addAt(doc, o.path, o.value, 'replace');
        break;
      case 'move': {
        const v = getAt(doc, parsePointer(o.from));
        if (v === undefined) throw new PatchError(`move operation does not apply: doc is missing from path: ${o.from}`);
        doc = removeAt(doc, o.from, 'move');
        doc = addAt(doc, o.path, v, 'move');
        break;
      }
      case 'copy': {
        const v = getAt(doc, parsePointer(o.from));
        if (v === undefined) throw new PatchError(`copy operation does not apply: doc is missing from path: ${o.from}`);
        doc = addAt(doc, o.path, v, 'copy');
        break;
      }
      case 'test':
        if (JSON.stringify(getAt(doc, parsePointer(o.path))) !== JSON.stringify(o.value)) {
          throw new PatchError(`testing value ${o.path} failed: test failed`);
        }
        break;
      default:
        throw new PatchError(`Unexpected kind: ${o.op}`);
    }
  }
  return doc;
}
