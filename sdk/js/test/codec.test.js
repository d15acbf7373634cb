// The postcard codec against the vectors (vectors.json: hand-derived, and checked against the
// postcard crate 1.2.0), its refusals, UTF-8, and the WIT type descriptions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { t, encode, decode, flatten, decodeUtf8, encodeUtf8, DecodeError, EncodeError } from '../sluice.js';
import { hex, unhex, parseJson, typeOf, expected } from './helpers.js';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const vectors = parseJson(readFileSync(here('./vectors.json'), 'utf8'));
const python = here('../../python/tests/vectors.json');

const beyondNumber = (v) => typeof v === 'bigint';
const hasBig = (v) => beyondNumber(v) || (Array.isArray(v) && v.some(hasBig));

test('the vectors file covers the edge cases', () => {
  const of = (type) => vectors.filter((v) => v.type === type).map((v) => v.value);
  for (const n of [0, 127, 128, 300, 2 ** 53 - 1]) assert.ok(of('u64').includes(n), `u64 ${n}`);
  for (const n of [-1, -64, 64]) assert.ok(of('i64').includes(n), `i64 ${n}`);
  assert.ok(of('str').includes(''));
  assert.ok(of('str').some((s) => /[^\x00-\x7f]/.test(s)));
  for (const type of ['bool', 'f64', '(str,u64)', 'Option<u64>', 'Vec<str>']) assert.ok(of(type).length > 0, type);
});

for (const { type, value, hex: bytes } of vectors) {
  test(`${type} ${typeof value === 'string' ? JSON.stringify(value).slice(0, 24) : hasBig(value) ? `${value}n` : JSON.stringify(value)} = ${bytes.slice(0, 24)}`, () => {
    // The BigInt forms take every value; the Number forms (t.u64, t.i64) the safe integers.
    const big = typeOf(type, true);
    assert.equal(hex(encode(big, expected(big, value))), bytes, 'encodes (BigInt form)');
    assert.deepEqual(decode(big, unhex(bytes)), expected(big, value), 'decodes (BigInt form)');
    const number = typeOf(type, false);
    if (hasBig(value)) {
      assert.throws(() => decode(number, unhex(bytes)), DecodeError, 'a Number form refuses a value beyond 2^53');
    } else {
      assert.equal(hex(encode(number, value === null ? null : expected(number, value))), bytes, 'encodes (Number form)');
      assert.deepEqual(decode(number, unhex(bytes)), expected(number, value), 'decodes (Number form)');
    }
  });
}

test('the Python SDK\'s vectors agree, where its file exists', { skip: !existsSync(python) && 'sdk/python/tests/vectors.json is not there' }, (ctx) => {
  const theirs = parseJson(readFileSync(python, 'utf8'));
  let checked = 0;
  for (const v of theirs) {
    let ty;
    try {
      ty = typeOf(v.type, true);
    } catch {
      ctx.diagnostic(`skipped ${v.type}: a type name this test does not know`);
      continue;
    }
    assert.equal(hex(encode(ty, expected(ty, v.value))), v.hex, `${v.type} ${v.value}: their hex`);
    assert.deepEqual(decode(ty, unhex(v.hex)), expected(ty, v.value), `${v.type} ${v.hex}: their value`);
    checked++;
  }
  ctx.diagnostic(`${checked} of ${theirs.length} vectors of sdk/python/tests/vectors.json checked`);
  assert.ok(checked > 0);
});

test('a BigInt and a safe Number encode the same', () => {
  for (const n of [0, 1, 127, 128, 300, 2 ** 32, 2 ** 53 - 1]) {
    assert.deepEqual(encode(t.u64, n), encode(t.u64, BigInt(n)));
    assert.deepEqual(encode(t.i64, -n), encode(t.i64n, BigInt(-n)));
  }
});

test('varints round trip across their widths', () => {
  for (let bits = 0; bits < 64; bits++) {
    for (const v of [(1n << BigInt(bits)) - 1n, 1n << BigInt(bits), (1n << BigInt(bits)) + 1n]) {
      if (v >= 1n << 64n) continue;
      assert.equal(decode(t.u64n, encode(t.u64n, v)), v);
      assert.equal(decode(t.i64n, encode(t.i64n, v - (1n << 63n) / 2n)), v - (1n << 63n) / 2n);
      if (v <= BigInt(Number.MAX_SAFE_INTEGER)) {
        assert.equal(decode(t.u64, encode(t.u64, Number(v))), Number(v));
        assert.equal(decode(t.i64, encode(t.i64, 0 - Number(v))), 0 - Number(v));
      }
    }
  }
  for (const n of [0, 1, -1, 127, -128, 32767, -32768, 2 ** 31 - 1, -(2 ** 31)]) {
    if (n >= -32768 && n <= 32767) assert.equal(decode(t.i16, encode(t.i16, n)), n);
    assert.equal(decode(t.i32, encode(t.i32, n)), n);
  }
  assert.equal(decode(t.u128, encode(t.u128, (1n << 128n) - 1n)), (1n << 128n) - 1n);
  assert.equal(decode(t.i128, encode(t.i128, -(1n << 127n))), -(1n << 127n));
});

test('bytes that are not the type are refused', () => {
  const refused = [
    [t.bool, '02'],
    [t.option(t.u8), '02'],
    [t.u64, '808080808080808080'], // truncated: every byte says more follows
    [t.u64, '8080808080808080808001'], // 11 bytes
    [t.u64n, 'ffffffffffffffffff02'], // the 10th byte holds more than 64 bits
    [t.u32, 'ffffffff10'], // the 5th byte holds more than 32 bits
    [t.u16, 'ffff04'],
    [t.str, '0561'], // shorter than its length
    [t.str, '01ff'], // not UTF-8
    [t.str, '02c0af'], // overlong
    [t.str, '03eda080'], // a surrogate
    [t.str, '04f4908080'], // beyond U+10FFFF
    [t.str, '02e282'], // a truncated sequence
    [t.char, '026162'], // two characters
    [t.char, '00'],
    [t.f64, '0000'],
    [t.enum('E', { A: null }), '01'],
    [t.u64, ''],
  ];
  for (const [ty, bytes] of refused) {
    assert.throws(() => decode(ty, unhex(bytes)), DecodeError, `${ty.name} ${bytes}`);
  }
  // Non-canonical (padded) varints decode, as postcard's do.
  assert.equal(decode(t.u64, unhex('8000')), 0);
  assert.equal(decode(t.u32, unhex('ffffffff0f')), 2 ** 32 - 1);
});

test('values that are not the type are refused', () => {
  const refused = [
    [t.u8, 256], [t.u8, -1], [t.u8, 1.5], [t.u32, 2 ** 32], [t.u64, -1], [t.u64, 2 ** 53], [t.u64, '1'],
    [t.u64n, 1n << 64n], [t.u64, -1n], [t.i8, 128], [t.i32, 2 ** 31], [t.i64, 2 ** 63], [t.i64n, 1n << 63n],
    [t.bool, 1], [t.str, 5], [t.char, 'ab'], [t.char, ''], [t.f64, '1'], [t.tuple(t.str, t.u64), ['a']],
    [t.seq(t.u8), 5], [t.struct('P', { x: t.u8 }), {}], [t.enum('E', { A: null, B: t.u8 }), 'C'],
    [t.enum('E', { A: null, B: t.u8 }), 'B'], [t.bytes, [256]],
  ];
  for (const [ty, v] of refused) assert.throws(() => encode(ty, v), EncodeError, `${ty.name} ${String(v)}`);
});

test('UTF-8 matches TextEncoder and TextDecoder (which QuickJS lacks)', () => {
  const samples = ['', 'a', 'héllo', '日本語', '🦀🦀', '\u0000\u007f\u0080\u07ff\u0800\uffff', '\ufeffbom', 'x'.repeat(10000), 'é'.repeat(5000)];
  for (let i = 0; i < 200; i++) {
    let s = '';
    for (let j = 0; j < i; j++) s += String.fromCodePoint([0x41, 0xe9, 0x65e5, 0x1f980, 0x10ffff, 0x80][(i * 7 + j * 13) % 6]);
    samples.push(s);
  }
  const te = new TextEncoder();
  const td = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  for (const s of samples) {
    const bytes = te.encode(s);
    assert.deepEqual(encodeUtf8(s), bytes);
    assert.equal(decodeUtf8(bytes), s);
    assert.equal(td.decode(bytes), s);
  }
  // A lone surrogate (no Rust string holds one) is written as U+FFFD, as TextEncoder does.
  assert.equal(hex(encodeUtf8('a\ud800b')), hex(te.encode('a\ud800b')));
  assert.equal(hex(encodeUtf8('\udc00')), 'efbfbd');
  // A string whose length prefix grows past the ASCII guess (127 chars, 254 bytes).
  assert.equal(hex(encode(t.str, 'é'.repeat(127))), `fe01${'c3a9'.repeat(127)}`);
});

test('structs, enums and maps', () => {
  const click = t.struct('Click', { user: t.str, page: t.str, millis: t.u64, referrer: t.option(t.str) });
  const value = { user: 'ann', page: '/', millis: 12, referrer: null };
  assert.equal(hex(encode(click, value)), '03616e6e012f0c00');
  assert.deepEqual(decode(click, encode(click, value)), value);
  assert.equal(hex(encode(click, { user: 'ann', page: '/', millis: 12 })), '03616e6e012f0c00', 'a missing option is None');

  const event = t.enum('Event', { Tick: null, Word: t.str, Pair: [t.str, t.u32], Many: { count: t.u32, first: t.char } });
  assert.equal(hex(encode(event, 'Tick')), '00');
  assert.equal(hex(encode(event, { tag: 'Tick' })), '00');
  assert.equal(hex(encode(event, { tag: 'Word', val: 'hi' })), '01026869');
  assert.equal(hex(encode(event, { tag: 'Pair', val: ['a', 300] })), '020161ac02');
  assert.equal(hex(encode(event, { tag: 'Many', val: { count: 2, first: 'x' } })), '03020178');
  assert.deepEqual(decode(event, unhex('00')), { tag: 'Tick' });
  assert.deepEqual(decode(event, unhex('03020178')), { tag: 'Many', val: { count: 2, first: 'x' } });

  const m = t.map(t.str, t.u64);
  const bytes = '020161010162ac02';
  assert.equal(hex(encode(m, new Map([['a', 1], ['b', 300]]))), bytes);
  assert.equal(hex(encode(m, { a: 1, b: 300 })), bytes);
  assert.equal(hex(encode(m, [['a', 1], ['b', 300]])), bytes);
  assert.deepEqual(decode(m, unhex(bytes)), new Map([['a', 1], ['b', 300]]));
});

test('types flatten as sluice_sdk::abi2::flatten does: the root first, each node before its children', () => {
  assert.deepEqual(flatten(t.tuple(t.str, t.u64)), [{ tag: 'tuple', val: [1, 2] }, { tag: 'text' }, { tag: 'unsigned', val: 64 }]);
  assert.deepEqual(flatten(t.map(t.option(t.bool), t.unit)), [
    { tag: 'map', val: [1, 3] },
    { tag: 'option', val: 2 },
    { tag: 'boolean' },
    { tag: 'unit' },
  ]);
  assert.deepEqual(flatten(t.str), [{ tag: 'text' }]);
  assert.deepEqual(flatten(t.seq(t.tuple())), [{ tag: 'seq', val: 1 }, { tag: 'tuple', val: [] }]);
  assert.deepEqual(flatten(t.struct('Click', { user: t.str, at: t.option(t.u64) })), [
    { tag: 'structure', val: ['Click', [{ name: 'user', ty: 1 }, { name: 'at', ty: 2 }]] },
    { tag: 'text' },
    { tag: 'option', val: 3 },
    { tag: 'unsigned', val: 64 },
  ]);
  assert.deepEqual(flatten(t.enum('Event', { Tick: null, Word: t.str, Pair: [t.str, t.u32], Many: { count: t.u32, first: t.char } })), [
    {
      tag: 'enumeration',
      val: [
        'Event',
        [
          { name: 'Tick', shape: { tag: 'unit' } },
          { name: 'Word', shape: { tag: 'newtype', val: 1 } },
          { name: 'Pair', shape: { tag: 'tuple', val: [2, 3] } },
          { name: 'Many', shape: { tag: 'fields', val: [{ name: 'count', ty: 4 }, { name: 'first', ty: 5 }] } },
        ],
      ],
    },
    { tag: 'text' },
    { tag: 'text' },
    { tag: 'unsigned', val: 32 },
    { tag: 'unsigned', val: 32 },
    { tag: 'char' },
  ]);
  const scalars = [t.unit, t.bool, t.u8, t.u128, t.i16, t.i64, t.f32, t.f64, t.char, t.str, t.bytes];
  assert.deepEqual(
    scalars.map((s) => flatten(s)[0]),
    [
      { tag: 'unit' }, { tag: 'boolean' }, { tag: 'unsigned', val: 8 }, { tag: 'unsigned', val: 128 },
      { tag: 'signed', val: 16 }, { tag: 'signed', val: 64 }, { tag: 'float32' }, { tag: 'float64' },
      { tag: 'char' }, { tag: 'text' }, { tag: 'bytes' },
    ],
  );
  assert.equal(t.u64.name, 'u64');
  assert.equal(t.tuple(t.str, t.u64).name, '(String, u64)');
});
