import { test } from 'node:test';
import assert from 'node:assert/strict';
import { matchesIdPattern, parseSpiffeId, parseWorkloadId, validateTrustDomain } from '../../../src/identity/spiffe-id.js';

const valid: Record<string, [string, string]> = {
  'trust domain only': ['spiffe://example.org', ''],
  'simple path': ['spiffe://example.org/ns/default/sa/web', '/ns/default/sa/web'],
  'scheme is case-insensitive': ['SPIFFE://example.org/a', '/a'],
  'IPv4 trust domain': ['spiffe://10.0.0.1/x', '/x'],
  'all allowed path characters': ['spiffe://td/aZ09._-/x', '/aZ09._-/x'],
  'segments may contain dots': ['spiffe://td/a.b/..c', '/a.b/..c'],
  'path is case-sensitive and kept as given': ['spiffe://td/NS/Default', '/NS/Default'],
  'trust domain of exactly 255 bytes': [`spiffe://${'a'.repeat(255)}/x`, '/x'],
  'ID of exactly 2048 bytes': [`spiffe://td/${'a'.repeat(2048 - 'spiffe://td/'.length)}`, `/${'a'.repeat(2048 - 'spiffe://td/'.length)}`],
  'path segments of only dots beyond ".."': ['spiffe://td/.../....', '/.../....'],
};
for (const [name, [input, path]] of Object.entries(valid)) {
  test(`ok/${name}`, () => {
    const id = parseSpiffeId(input);
    assert.equal(id.path, path);
    assert.ok(id.uri.startsWith('spiffe://'));
  });
}

const invalid: Record<string, [string, RegExp]> = {
  empty: ['', /empty/],
  'wrong scheme': ['https://example.org/a', /scheme/],
  'no scheme separator': ['spiffe:example.org', /scheme/],
  'empty trust domain': ['spiffe:///path', /trust domain is empty/],
  'upper-case trust domain': ['spiffe://Example.org/a', /lower-case/],
  port: ['spiffe://example.org:8080/a', /port/],
  userinfo: ['spiffe://user@example.org/a', /userinfo/],
  query: ['spiffe://example.org/a?x=1', /query/],
  fragment: ['spiffe://example.org/a#f', /fragment/],
  'percent-encoding': ['spiffe://example.org/a%20b', /percent/],
  'trailing slash': ['spiffe://example.org/a/', /must not end with/],
  'empty segment': ['spiffe://example.org/a//b', /empty/],
  'dot segment': ['spiffe://example.org/a/./b', /"\." or "\.\."/],
  'dot-dot segment': ['spiffe://example.org/..', /"\." or "\.\."/],
  'bad path character': ['spiffe://example.org/a b', /path segment/],
  'bad trust domain character': ['spiffe://exa$mple.org/a', /may only contain/],
  'IPv6 trust domain': ['spiffe://[::1]/a', /IPv6/],
  'IPv6 trust domain without a path': ['spiffe://[2001:db8::1]', /IPv6/],
  'trailing slash after the trust domain': ['spiffe://example.org/', /must not end with/],
  'percent-encoded trust domain': ['spiffe://exa%6Dple.org/a', /percent/],
  'userinfo with password': ['spiffe://u:p@example.org/a', /userinfo/],
  'port without a number': ['spiffe://example.org:/a', /port/],
  'trailing slash on a longer path': ['spiffe://example.org/ns/default/', /must not end with/],
  'upper-case trust domain without a path': ['spiffe://EXAMPLE.ORG', /lower-case/],
  'query on a trust domain ID': ['spiffe://example.org?x', /query/],
  'fragment on a trust domain ID': ['spiffe://example.org#x', /fragment/],
  'non-ASCII path character': ['spiffe://example.org/caf\u00e9', /path segment/],
  'trust domain of 256 bytes': [`spiffe://${'a'.repeat(256)}/x`, /trust domain is longer than 255 bytes/],
  'ID of 2049 bytes': [`spiffe://td/${'a'.repeat(2049 - 'spiffe://td/'.length)}`, /longer than 2048 bytes/],
  'too long': [`spiffe://td/${'a'.repeat(2100)}`, /2048/],
};
for (const [name, [input, rule]] of Object.entries(invalid)) {
  test(`fail/${name}`, () => {
    assert.throws(() => parseSpiffeId(input), (e: Error) => {
      assert.match(e.message, /invalid SPIFFE ID/);
      assert.match(e.message, rule);
      return true;
    });
  });
}

test('the scheme is case-insensitive and the canonical form is lower-case "spiffe://"', () => {
  assert.equal(parseSpiffeId('SpIfFe://example.org/A/b').uri, 'spiffe://example.org/A/b');
  assert.equal(parseSpiffeId('SPIFFE://example.org').uri, 'spiffe://example.org');
});

test('a workload ID must be in our trust domain and have a path', () => {
  assert.equal(parseWorkloadId('spiffe://td/a', 'td').uri, 'spiffe://td/a');
  assert.throws(() => parseWorkloadId('spiffe://other/a', 'td'), /not this CA's trust domain "td"/);
  assert.throws(() => parseWorkloadId('spiffe://td', 'td'), /must have a path/);
});

test('trust domain names are validated on their own', () => {
  assert.equal(validateTrustDomain('cluster.local'), 'cluster.local');
  assert.throws(() => validateTrustDomain('Cluster.local'), /lower-case/);
  assert.throws(() => validateTrustDomain(''), /empty/);
  assert.throws(() => validateTrustDomain('[::1]'), /IPv6/);
  assert.throws(() => validateTrustDomain('example.org:443'), /no port/);
  assert.equal(validateTrustDomain('10.0.0.1'), '10.0.0.1');
  assert.equal(validateTrustDomain('a'.repeat(255)), 'a'.repeat(255));
  assert.throws(() => validateTrustDomain('a'.repeat(256)), /longer than 255 bytes/);
});

test('ID patterns match exact IDs and path prefixes on segment boundaries', () => {
  assert.ok(matchesIdPattern('spiffe://td/ns/a', 'spiffe://td/ns/a'));
  assert.ok(!matchesIdPattern('spiffe://td/ns/ab', 'spiffe://td/ns/a'));
  assert.ok(matchesIdPattern('spiffe://td/ns/a/sa/b', 'spiffe://td/ns/a/*'));
  assert.ok(!matchesIdPattern('spiffe://td/ns/ab/sa/b', 'spiffe://td/ns/a/*'));
  assert.ok(!matchesIdPattern('spiffe://td/ns/a', 'spiffe://td/ns/a/*'));
});
