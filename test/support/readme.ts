import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './cli.js';

/**
 * Reads the user-facing Markdown (README.md, providers/<name>/README.md) the way the tests that keep it true need:
 * sections by heading, pipe tables as rows of cells, fenced blocks by language.
 */

export function readRepoFile(rel: string): string {
  return readFileSync(join(REPO_ROOT, rel), 'utf8');
}

/**
 * The text under `## heading` (any level), up to the next heading of the same or a higher level. The heading may
 * go on after `heading` with a space ("Configuration (`authority.vault`)"). Lines inside fenced code blocks are
 * never headings (a commented-out `# key:` in a YAML block is not one).
 */
export function section(markdown: string, heading: string): string {
  const lines = markdown.split('\n');
  let fence: string | undefined;
  const levels = lines.map((l) => {
    const f = /^ *(```|~~~)/.exec(l);
    if (f) {
      if (fence === undefined) fence = f[1];
      else if (f[1] === fence) fence = undefined;
      return 0;
    }
    return fence === undefined ? (/^(#{1,6}) /.exec(l)?.[1]!.length ?? 0) : 0;
  });
  const start = lines.findIndex((l, i) => {
    const h = l.replace(/^#+ /, '').trim();
    return levels[i]! > 0 && (h === heading || h.startsWith(`${heading} `));
  });
  if (start < 0) throw new Error(`no heading "${heading}"`);
  const level = levels[start]!;
  let end = lines.length;
  for (let i = start + 1; i < lines.length; i++) {
    if (levels[i]! > 0 && levels[i]! <= level) {
      end = i;
      break;
    }
  }
  return lines.slice(start + 1, end).join('\n');
}

/** Splits one table row on unescaped `|` (README cells write `pem\|jwks`). */
function cells(line: string): string[] {
  const inner = line.trim().replace(/^\|/, '').replace(/\|$/, '');
  return inner.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
}

/** Every pipe table in `text`: header cells and body rows. */
export function tables(text: string): { header: string[]; rows: string[][] }[] {
  const out: { header: string[]; rows: string[][] }[] = [];
  const lines = text.split('\n');
  for (let i = 0; i + 1 < lines.length; i++) {
    if (!lines[i]!.trim().startsWith('|') || !/^\s*\|[-:| ]+\|\s*$/.test(lines[i + 1]!)) continue;
    const header = cells(lines[i]!);
    const rows: string[][] = [];
    let j = i + 2;
    for (; j < lines.length && lines[j]!.trim().startsWith('|'); j++) rows.push(cells(lines[j]!));
    out.push({ header, rows });
    i = j - 1;
  }
  return out;
}

/** Contents of the fenced code blocks of `text` whose info string is `lang` (a block indented in a list is dedented). */
export function fencedBlocks(text: string, lang: string): string[] {
  const out: string[] = [];
  const re = /^( *)```(\S*)\n([\s\S]*?)^\1```/gm;
  for (const m of text.matchAll(re)) {
    if (m[2] !== lang) continue;
    const indent = m[1]!.length;
    out.push(m[3]!.split('\n').map((l) => l.slice(Math.min(indent, l.length - l.trimStart().length))).join('\n'));
  }
  return out;
}

/** The `code` spans of a table cell. */
export function codeSpans(cell: string): string[] {
  return [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
}

export interface MetricRow {
  readonly name: string;
  readonly labels: string[];
  /** "always", or the config that registers it. */
  readonly when: string;
}

/** README.md "Metrics": one row per metric, `name{label,...}`. */
export function readmeMetrics(): MetricRow[] {
  const t = tables(section(readRepoFile('README.md'), 'Metrics'))[0];
  if (!t) throw new Error('README "Metrics" has no table');
  return t.rows.map((r) => {
    const m = /^`(meshca_[a-z0-9_]+)(?:\{([a-z_,]+)\})?`$/.exec(r[0]!);
    if (!m) throw new Error(`README metrics row "${r[0]}" is not \`name{labels}\``);
    return { name: m[1]!, labels: m[2] ? m[2].split(',') : [], when: r[1]!.replace(/`/g, '') };
  });
}
