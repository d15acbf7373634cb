// The native string paths that QuickJS takes (btoa/atob and Uint8Array's ES2025 base64
// methods, which Node 20 lacks): polyfilled here, then the same vectors and UTF-8 checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const used = { to: 0, from: 0 };
if (typeof Uint8Array.prototype.toBase64 !== 'function') {
  Uint8Array.prototype.toBase64 = function toBase64() {
    used.to++;
    return Buffer.from(this.buffer, this.byteOffset, this.byteLength).toString('base64');
  };
  Uint8Array.prototype.setFromBase64 = function setFromBase64(text) {
    used.from++;
    const bytes = Buffer.from(text, 'base64');
    const written = Math.min(bytes.length, this.length);
    this.set(bytes.subarray(0, written));
    return { read: text.length, written };
  };
}
// Imported after the polyfills: sluice.js looks for the methods when it loads (and helpers.js
// imports it).
const { t, encode, decode, decodeUtf8, encodeUtf8, framesOf, functions, flatMap } = await import('../sluice.js');
const { parseJson, typeOf, expected, hex, unhex } = await import('./helpers.js');

test('the vectors, through the native paths', () => {
  const vectors = parseJson(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8'));
  for (const { type, value, hex: bytes } of vectors) {
    const ty = typeOf(type, true);
    assert.equal(hex(encode(ty, expected(ty, value))), bytes, `${type} ${bytes}`);
    assert.deepEqual(decode(ty, unhex(bytes)), expected(ty, value), `${type} ${bytes}`);
  }
});

test('UTF-8 through the native paths: ASCII natively, the rest by the JS coder', () => {
  const te = new TextEncoder();
  const before = { ...used };
  for (const s of ['x'.repeat(15), 'x'.repeat(16), 'hello world, hello', 'a'.repeat(5000), `${'a'.repeat(20)}é`, `é${'a'.repeat(20)}`, '日本語のテキストです。とても長い文。', '\u007f'.repeat(40)]) {
    const bytes = te.encode(s);
    assert.deepEqual(encodeUtf8(s), bytes, s.slice(0, 20));
    assert.equal(decodeUtf8(bytes), s, s.slice(0, 20));
    assert.equal(decode(t.str, encode(t.str, s)), s);
  }
  assert.ok(used.to > before.to && used.from > before.from, 'the native paths were taken');
  assert.throws(() => decodeUtf8(Uint8Array.from([...te.encode('a'.repeat(20)), 0xff])), /invalid UTF-8/);
});

test('split-like output through the native paths', () => {
  flatMap('split', { input: t.str, output: t.tuple(t.str, t.u64) }, (line) => line.split(' ').map((w) => [w, 1]));
  const long = 'y'.repeat(300);
  const out = functions.call('split', framesOf(t.str, [`w1 ${long} z`]));
  assert.equal(hex(out), `0400000002773101 2f010000ac02${'79'.repeat(300)}01 0300000001 7a01`.replaceAll(' ', ''));
});
