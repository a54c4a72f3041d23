/**
 * JSON.parse that rejects duplicate object keys (RFC 8259 leaves them undefined; JSON.parse keeps the last one,
 * which would let a bundle map name one trust domain twice and have the second silently win). Otherwise the same
 * grammar and values as JSON.parse. Throws an Error whose message names the duplicate key and its position.
 */
export function parseJsonNoDuplicates(text: string): unknown {
  const p = new Parser(text);
  p.ws();
  const v = p.value('$');
  p.ws();
  if (p.i !== text.length) p.fail('unexpected data after the JSON value');
  return v;
}

const MAX_DEPTH = 64;

class Parser {
  i = 0;
  private depth = 0;
  constructor(private readonly s: string) {}

  fail(msg: string): never {
    throw new Error(`invalid JSON at offset ${this.i}: ${msg}`);
  }

  ws(): void {
    while (this.i < this.s.length) {
      const c = this.s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.i++;
      else break;
    }
  }

  value(path: string): unknown {
    const c = this.s[this.i];
    if (c === '{') return this.object(path);
    if (c === '[') return this.array(path);
    if (c === '"') return this.string();
    return this.literal();
  }

  private enter(): void {
    if (++this.depth > MAX_DEPTH) this.fail(`nested deeper than ${MAX_DEPTH} levels`);
  }

  private object(path: string): Record<string, unknown> {
    this.enter();
    this.i++;
    const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
    const seen = new Set<string>();
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      this.depth--;
      return { ...out };
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('expected a string key');
      const key = this.string();
      if (seen.has(key)) this.fail(`duplicate key "${key}" in ${path}`);
      seen.add(key);
      this.ws();
      if (this.s[this.i] !== ':') this.fail('expected ":"');
      this.i++;
      this.ws();
      out[key] = this.value(`${path}.${key}`);
      this.ws();
      const c = this.s[this.i];
      if (c === ',') {
        this.i++;
        continue;
      }
      if (c === '}') {
        this.i++;
        break;
      }
      this.fail('expected "," or "}"');
    }
    this.depth--;
    // Spread defines own data properties, so a "__proto__" key stays an ordinary key.
    return { ...out };
  }

  private array(path: string): unknown[] {
    this.enter();
    this.i++;
    const out: unknown[] = [];
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      this.depth--;
      return out;
    }
    for (;;) {
      this.ws();
      out.push(this.value(`${path}[${out.length}]`));
      this.ws();
      const c = this.s[this.i];
      if (c === ',') {
        this.i++;
        continue;
      }
      if (c === ']') {
        this.i++;
        break;
      }
      this.fail('expected "," or "]"');
    }
    this.depth--;
    return out;
  }

  private string(): string {
    const start = this.i;
    this.i++;
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (c === '\\') this.i += 2;
      else if (c === '"') {
        this.i++;
        try {
          return JSON.parse(this.s.slice(start, this.i)) as string;
        } catch (e) {
          this.i = start;
          this.fail(`bad string: ${(e as Error).message}`);
        }
      } else this.i++;
    }
    return this.fail('unterminated string');
  }

  private literal(): unknown {
    const m = /^(?:true|false|null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(this.s.slice(this.i, this.i + 400));
    if (!m) this.fail('expected a JSON value');
    this.i += m[0].length;
    return JSON.parse(m[0]);
  }
}
