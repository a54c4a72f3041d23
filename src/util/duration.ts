import { invalidArgument } from './errors.js';

const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

/**
 * Parses a duration string like Go's time.ParseDuration subset we document: "20s", "5m", "1h", "1h30m", "24h",
 * "500ms", "7d". A bare number is seconds. Returns seconds (may be fractional for ms).
 */
export function parseDurationSeconds(input: string | number, what = 'duration'): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) throw invalidArgument(`${what}: ${input} is not a non-negative number of seconds`);
    return input;
  }
  const s = input.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNIT_SECONDS[m[2]!]!;
    matched = re.lastIndex;
  }
  if (s.length === 0 || matched !== s.length) {
    throw invalidArgument(`${what}: "${input}" is not a duration (use forms like 20s, 5m, 1h, 1h30m, 24h)`);
  }
  return total;
}

/** Formats seconds as the shortest of h/m/s, e.g. 5400 -> "1h30m". */
export function formatDuration(seconds: number): string {
  let s = Math.round(seconds);
  if (s === 0) return '0s';
  const sign = s < 0 ? '-' : '';
  s = Math.abs(s);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return sign + (h ? `${h}h` : '') + (m ? `${m}m` : '') + (sec ? `${sec}s` : '');
}

/**
 * A protobuf int64 seconds field as @grpc/proto-loader hands it over (`longs: String`, so a decimal string; a number
 * from in-process callers), clamped to [`min`, `max`] without losing precision on values beyond 2^53: a client may
 * send any int64, and "honoured up to the maximum" must hold for all of them. `what` names the field in the error
 * for a value that is not an integer at all.
 */
export function clampInt64Seconds(v: string | number | undefined, min: number, max: number, what: string): number {
  let n: bigint;
  try {
    if (typeof v === 'number' && !Number.isInteger(v)) throw new RangeError('not an integer');
    n = BigInt(v ?? 0);
  } catch {
    throw invalidArgument(`${what} ${String(v)} is not an integer number of seconds`);
  }
  if (n < BigInt(min)) return min;
  if (n > BigInt(max)) return max;
  return Number(n);
}
