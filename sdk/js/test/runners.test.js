// The function kinds' runners over partitions laid out as sdk/src/abi.rs says, through the
// `functions` export as the host calls it (describe, call), with a recording host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  t, functions, connectHost, flatMap, map, filter, reduce, updateState, mapWithState, mapPartitions, transform,
  keyBy, timestamp, log, counter, gauge, histogram, recorded, framesOf, splitFrames, encode, decode, Writer,
} from '../sluice.js';
import { hex, unhex } from './helpers.js';

const calls = { logs: [], metrics: [] };
connectHost({
  log: (level, message) => calls.logs.push([level, message]),
  metric: (kind, name, value, count) => calls.metrics.push([kind, name, value, count]),
  panic: () => assert.fail('no panic'),
});

// What call returns, or the error string it throws.
function run(name, input) {
  try {
    return { ok: functions.call(name, input) };
  } catch (e) {
    assert.equal(typeof e, 'string', 'call throws strings (the WIT result error)');
    return { err: e };
  }
}

// A partition of groups: `u32` count, then that many frames.
function groups(type, list) {
  const w = new Writer();
  for (const group of list) {
    w.u32le(group.length);
    for (const v of group) {
      const at = w.beginFrame();
      type.enc(w, v);
      w.endFrame(at);
    }
  }
  return w.finish().slice();
}

const frame = (type, value) => {
  const w = new Writer();
  const at = w.beginFrame();
  type.enc(w, value);
  w.endFrame(at);
  return w.finish().slice();
};
const concat = (...parts) => Uint8Array.from(parts.flatMap((p) => [...p]));
const u32 = (n) => Uint8Array.of(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24);
const pair = t.tuple(t.str, t.u64);

flatMap('words', { input: t.str, output: pair }, (line) => line.split(' ').filter(Boolean).map((w) => [w, 1]));
flatMap('gen', { input: t.u32, output: t.u32 }, function* (n) {
  for (let i = 0; i < n; i++) yield i;
});
flatMap('maybe', { input: t.u32, output: t.u32 }, (n) => (n % 2 ? null : [n]));
map('len', { input: t.str, output: t.u32 }, (s) => s.length);
map('boom', { input: t.u32, output: t.u32 }, function explode(n) {
  if (n === 2) throw new RangeError(`no ${n}`);
  return n;
});
map('bad_output', { input: t.u32, output: t.u8 }, (n) => n * 100);
filter('even', t.u32, (n) => n % 2 === 0);
filter('not_boolean', t.u32, (n) => n);
map('checked', { input: t.u32, output: t.u32, fallible: true }, (n) => {
  if (n === 0) throw new Error('zero');
  return 100 / n;
});
flatMap('checked_many', { input: t.u32, output: t.u32, fallible: true }, function* (n) {
  yield n;
  if (n === 1) throw 'one'; // after one output: the record's outputs are taken back
  yield n;
});
filter('checked_keep', { input: t.u32, fallible: true }, (n) => {
  if (n > 9) throw new Error(`${n} is too big`);
  return n > 1;
});
reduce('sum', t.u64, (a, b) => a + b);
reduce('sum_big', t.u64n, (a, b) => BigInt.asUintN(64, a + b));
reduce('max_throws', t.u32, (a, b) => {
  if (b === 13) throw new Error('unlucky');
  return Math.max(a, b);
});
updateState('total', { value: t.u64, state: t.u64 }, (values, state) => {
  const total = values.reduce((a, b) => a + b, state ?? 0);
  return total === 0 ? null : total;
});
updateState('forgets', { value: t.u64, state: t.u64 }, () => undefined);
mapWithState('sessions', { key: t.str, value: t.u32, state: t.u32, output: pair }, (key, values, state) => {
  if (values.length === 0) return [null, [[key, state ?? 0]]]; // timed out: emit and forget
  return [(state ?? 0) + values.length, []];
});
mapPartitions('count_partition', { input: t.str, output: t.u64 }, (records) => [records.length]);
transform('top2', { input: pair, output: pair }, (records) => records.sort((a, b) => b[1] - a[1]).slice(0, 2));
keyBy('first_letter', { input: t.str, key: t.char }, (s) => s[0]);
timestamp('millis', t.tuple(t.str, t.u64), ([, ms]) => ms);
const Settings = t.struct('Settings', { min: t.u32, label: t.str });
flatMap('at_least', { input: t.u32, output: t.str, params: Settings }, (n, p) => (n >= p.min ? [`${p.label}${n}`] : []));
reduce('capped', { type: t.u32, params: t.u32 }, (a, b, cap) => Math.min(cap, a + b));
flatMap('chatty', { input: t.str, output: t.str }, (s) => {
  log('info', `got ${s}`);
  log.debug('debug line');
  counter('lines').add();
  counter('bytes').add(s.length);
  gauge('last_len').set(s.length);
  histogram('len').observe(s.length);
  if (s === 'fail') throw new Error('failing');
  return [s];
});

test('flat_map: zero or more frames per record', () => {
  const { ok } = run('words', framesOf(t.str, ['hello world  hello', '', ' a']));
  assert.equal(
    hex(ok),
    '070000000568656c6c6f010700000005776f726c6401070000000568656c6c6f0103000000016101',
    'the bytes of the Rust plugin wordcount (wordcount-abi2.wasm) for the same partition',
  );
  assert.deepEqual(splitFrames(run('gen', framesOf(t.u32, [3, 0, 2])).ok).map((f) => decode(t.u32, f)), [0, 1, 2, 0, 1]);
  assert.deepEqual(splitFrames(run('maybe', framesOf(t.u32, [1, 2, 3, 4])).ok).map((f) => decode(t.u32, f)), [2, 4]);
  assert.equal(run('words', new Uint8Array()).ok.length, 0, 'an empty partition');
});

test('map and filter: one frame, one byte per record', () => {
  assert.deepEqual(splitFrames(run('len', framesOf(t.str, ['', 'abc', 'é'])).ok).map((f) => decode(t.u32, f)), [0, 3, 1]);
  assert.deepEqual([...run('even', framesOf(t.u32, [1, 2, 3, 4, 6])).ok], [0, 1, 0, 1, 1]);
  assert.match(run('not_boolean', framesOf(t.u32, [1])).err, /^`not_boolean`: returned 1 for input record 0, not a boolean/);
  assert.deepEqual(splitFrames(run('first_letter', framesOf(t.str, ['ab', 'éa'])).ok).map((f) => decode(t.char, f)), ['a', 'é']);
  assert.deepEqual(splitFrames(run('millis', framesOf(pair, [['a', 5], ['b', 2 ** 40]])).ok).map((f) => decode(t.u64, f)), [5, 2 ** 40]);
});

test('an exception fails the call with the function, the record, the message and the stack', () => {
  const { err } = run('boom', framesOf(t.u32, [0, 1, 2, 3]));
  assert.match(err, /^`boom` threw at input record 2: RangeError: no 2\n/);
  assert.match(err, /at explode \(.*runners\.test\.js:\d+/, 'the stack names the function and this file');
  const reduced = run('max_throws', groups(t.u32, [[1, 2], [5, 13]]));
  assert.match(reduced.err, /^`max_throws` threw at value 3: Error: unlucky\n/);
});

test('input or output of the wrong shape fails the call', () => {
  assert.match(run('len', concat(framesOf(t.str, ['a']), Uint8Array.of(9, 0, 0, 0, 1))).err, /input ends with a truncated frame of 5 bytes/);
  assert.match(run('len', concat(framesOf(t.str, ['a']), frame(t.bytes, [0xff]).subarray(0, 4), Uint8Array.of(1, 0xff))).err,
    /input record 1 does not decode as String: invalid UTF-8/);
  assert.match(run('bad_output', framesOf(t.u32, [1, 2, 3])).err, /^`bad_output`: an output for input record 2 does not encode as u8: 300 is not a u8$/);
  assert.match(run('nope', new Uint8Array()).err, /^the plugin has no function `nope` \(it has: words, gen, /);
});

test('fallible: the failed records in the trailer, the others as usual', () => {
  const trailer = (failures) => {
    const w = new Writer();
    for (const f of failures) {
      const at = w.beginFrame();
      t.u32.enc(w, f[0]);
      t.str.enc(w, f[1]);
      w.endFrame(at);
    }
    const bytes = w.finish().slice();
    return concat(bytes, u32(bytes.length));
  };
  assert.equal(hex(run('checked', framesOf(t.u32, [4, 0, 5])).ok), hex(concat(framesOf(t.u32, [25, 20]), trailer([[1, 'zero']]))));
  assert.equal(hex(run('checked', framesOf(t.u32, [4])).ok), hex(concat(framesOf(t.u32, [25]), u32(0))), 'no failures: a zero length');
  assert.equal(
    hex(run('checked_many', framesOf(t.u32, [2, 1, 3])).ok),
    hex(concat(framesOf(t.u32, [2, 2, 3, 3]), trailer([[1, 'one']]))),
  );
  assert.equal(
    hex(run('checked_keep', framesOf(t.u32, [0, 2, 10, 3])).ok),
    hex(concat(Uint8Array.of(0, 1, 0, 1), trailer([[2, '10 is too big']]))),
  );
});

test('reduce: one frame of V per group', () => {
  assert.deepEqual(splitFrames(run('sum', groups(t.u64, [[1, 2, 3], [5], [2 ** 52, 2 ** 52 - 1]])).ok).map((f) => decode(t.u64, f)), [6, 5, 2 ** 53 - 1]);
  const big = run('sum_big', groups(t.u64n, [[2n ** 64n - 1n, 2n], [7n]])).ok;
  assert.deepEqual(splitFrames(big).map((f) => decode(t.u64n, f)), [1n, 7n], 'wraps at 2^64, as Rust release builds');
  assert.match(run('sum', groups(t.u64, [[2 ** 53 - 1, 1]])).err, /does not encode as u64: 9007199254740992 is not a u64/, 'no silent rounding');
  assert.match(run('sum', groups(t.u64n, [[2n ** 64n - 2048n]])).err, /value 0 does not decode as u64: .* \(declare the type as t\.u64n/);
  assert.match(run('sum', concat(u32(0))).err, /empty group/);
  assert.match(run('sum', concat(u32(2), frame(t.u64, 1))).err, /group ends early at value 1/);
  assert.match(run('sum', Uint8Array.of(1, 0)).err, /truncated frame of 2 bytes/);
});

test('update_state: per key, values and old state in, new state out', () => {
  const state = t.option(t.u64);
  const input = concat(
    u32(2), frame(t.u64, 1), frame(t.u64, 2), frame(state, null),
    u32(1), frame(t.u64, 5), frame(state, 10),
    u32(0), frame(state, null),
  );
  assert.deepEqual(splitFrames(run('total', input).ok).map((f) => decode(state, f)), [3, 15, null]);
  assert.match(run('total', concat(u32(1), frame(t.u64, 1))).err, /a key has no state frame/);
  assert.match(run('forgets', concat(u32(0), frame(state, null))).err, /^`forgets`: returned undefined for key 0 \(return the new state, or null to delete it\)$/);
});

test('map_with_state: per key, the state and the outputs', () => {
  const state = t.option(t.u32);
  const input = concat(
    frame(t.str, 'ann'), u32(2), frame(t.u32, 7), frame(t.u32, 8), frame(state, 1),
    frame(t.str, 'bob'), u32(0), frame(state, 4),
  );
  const out = run('sessions', input).ok;
  const expected = concat(frame(state, 3), u32(0), frame(state, null), u32(1), frame(pair, ['bob', 4]));
  assert.equal(hex(out), hex(expected));
});

test('map_partitions and transform: all records at once', () => {
  assert.deepEqual(splitFrames(run('count_partition', framesOf(t.str, ['a', 'b', 'c'])).ok).map((f) => decode(t.u64, f)), [3]);
  const top = run('top2', framesOf(pair, [['a', 1], ['b', 5], ['c', 3]])).ok;
  assert.deepEqual(splitFrames(top).map((f) => decode(pair, f)), [['b', 5], ['c', 3]]);
});

test('params: the first frame of every call', () => {
  const params = frame(Settings, { min: 2, label: 'n=' });
  const out = run('at_least', concat(params, framesOf(t.u32, [1, 2, 3]))).ok;
  assert.deepEqual(splitFrames(out).map((f) => decode(t.str, f)), ['n=2', 'n=3']);
  const other = frame(Settings, { min: 3, label: '#' });
  assert.deepEqual(splitFrames(run('at_least', concat(other, framesOf(t.u32, [1, 2, 3]))).ok).map((f) => decode(t.str, f)), ['#3']);
  assert.deepEqual(splitFrames(run('capped', concat(frame(t.u32, 10), groups(t.u32, [[4, 5, 6], [1]]))).ok).map((f) => decode(t.u32, f)), [10, 1]);
  assert.match(run('at_least', new Uint8Array()).err, /the call carries no parameters frame/);
  assert.match(run('at_least', frame(t.u8, 5)).err, /the parameters do not decode as Settings/);
});

test('log and metrics go to the host; the metrics at the end of the call, whatever its outcome', () => {
  calls.logs.length = 0;
  calls.metrics.length = 0;
  run('chatty', framesOf(t.str, ['ab', 'cde']));
  assert.deepEqual(calls.logs, [['info', 'got ab'], ['debug', 'debug line'], ['info', 'got cde'], ['debug', 'debug line']]);
  assert.deepEqual(calls.metrics, [
    ['counter', 'lines', 2, 2],
    ['counter', 'bytes', 5, 2],
    ['gauge', 'last_len', 3, 0],
    ['histogram', 'len', 5, 2],
  ]);
  assert.ok(calls.metrics.every((m) => typeof m[3] === 'number'), 'counts are Numbers (componentize-qjs takes a u64 as a Number)');
  assert.deepEqual(recorded(), [], 'flushed');
  calls.metrics.length = 0;
  assert.match(run('chatty', framesOf(t.str, ['x', 'fail'])).err, /failing/);
  assert.deepEqual(calls.metrics.map((m) => [m[1], m[3]]), [['lines', 2], ['bytes', 2], ['last_len', 0], ['len', 2]]);
  assert.throws(() => log('loud', 'x'), /log level "loud" is not one of error, warn, info, debug/);
});

test('describe: every function, its kind and types as WIT node lists', () => {
  const described = functions.describe();
  const by = Object.fromEntries(described.map((f) => [f.name, f]));
  assert.deepEqual(by.words, {
    name: 'words',
    kind: 'flat-map',
    input: [{ tag: 'text' }],
    output: [{ tag: 'tuple', val: [1, 2] }, { tag: 'text' }, { tag: 'unsigned', val: 64 }],
    params: null,
    fallible: false,
  });
  assert.deepEqual(
    described.map((f) => [f.name, f.kind]).filter(([, k]) => k !== 'flat-map' && k !== 'map' && k !== 'filter'),
    [['sum', 'reduce'], ['sum_big', 'reduce'], ['max_throws', 'reduce'], ['total', 'update-state'], ['forgets', 'update-state'],
      ['sessions', 'map-with-state'], ['count_partition', 'map-partitions'], ['top2', 'transform'], ['first_letter', 'key-by'],
      ['millis', 'timestamp'], ['capped', 'reduce']],
  );
  assert.equal(by.checked.fallible, true);
  assert.deepEqual(by.even.output, by.even.input, 'a filter\'s output is its input type');
  assert.deepEqual(by.total.input, [{ tag: 'unsigned', val: 64 }]);
  assert.deepEqual(by.total.output, [{ tag: 'unsigned', val: 64 }], 'update_state: the state type, not Option');
  assert.deepEqual(by.sessions.input, [{ tag: 'tuple', val: [1, 2] }, { tag: 'text' }, { tag: 'unsigned', val: 32 }]);
  assert.deepEqual(by.millis.output, [{ tag: 'unsigned', val: 64 }]);
  assert.deepEqual(by.at_least.params, [
    { tag: 'structure', val: ['Settings', [{ name: 'min', ty: 1 }, { name: 'label', ty: 2 }]] },
    { tag: 'unsigned', val: 32 },
    { tag: 'text' },
  ]);
});

test('registration refuses what describe could not say', () => {
  assert.throws(() => map('len', { input: t.str, output: t.u32 }, (s) => s), /two functions are named `len`/);
  assert.throws(() => map('bad name', { input: t.str, output: t.u32 }, (s) => s), /letters, digits and _/);
  assert.throws(() => map('no_types', { input: 'str', output: t.u32 }, (s) => s), /input is not a type/);
  assert.throws(() => reduce('fallible_reduce', { type: t.u32, fallible: true }, (a) => a), /only map, flat_map and filter can be fallible/);
  assert.throws(() => map('no_fn', { input: t.str, output: t.u32 }), /the last argument is the function itself/);
  assert.equal(encode(t.u8, 1).length, 1);
  void unhex;
});
