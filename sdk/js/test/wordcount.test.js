// plugins/wordcount-js against the bytes of the Rust plugin (target/plugins/wordcount-abi2.wasm,
// run through the scratch host): the two must be interchangeable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { t, functions, framesOf, Writer } from '../sluice.js';
import { splitWords, sum, subtract } from '../../../plugins/wordcount-js/app.js';
import { hex } from './helpers.js';

function groups(list) {
  const w = new Writer();
  for (const group of list) {
    w.u32le(group.length);
    for (const v of group) {
      const at = w.beginFrame();
      t.u64n.enc(w, v);
      w.endFrame(at);
    }
  }
  return w.finish().slice();
}

test('describe: the Rust plugin\'s names, kinds and types', () => {
  const u64 = [{ tag: 'unsigned', val: 64 }];
  assert.deepEqual(functions.describe(), [
    {
      name: 'split_words',
      kind: 'flat-map',
      input: [{ tag: 'text' }],
      output: [{ tag: 'tuple', val: [1, 2] }, { tag: 'text' }, { tag: 'unsigned', val: 64 }],
      params: null,
      fallible: false,
    },
    { name: 'sum', kind: 'reduce', input: u64, output: u64, params: null, fallible: false },
    { name: 'subtract', kind: 'reduce', input: u64, output: u64, params: null, fallible: false },
  ]);
});

test('split_words: the Rust plugin\'s bytes', () => {
  const call = (lines) => hex(functions.call('split_words', framesOf(t.str, lines)));
  assert.equal(call(['hello world  hello', '', '  a']), '070000000568656c6c6f010700000005776f726c6401070000000568656c6c6f0103000000016101');
  // Unicode White_Space, as Rust's split_whitespace: NEL and NBSP split, U+FEFF, U+200B and U+180E do not.
  assert.equal(
    call([
      'tab\there\nnew\rline\x0bvt\x0cff',
      'nbsp\u00a0x nel\u0085y bom\ufeffz',
      'ideo\u3000sp en\u2002sp lsep\u2028p zwsp\u200bq nnbsp\u202fr \u180emvs',
      '日本語 🦀crab é',
    ]),
    '0500000003746162010600000004686572650105000000036e65770106000000046c696e65010400000002767401040000000266660106000000046e627370010300000001780105000000036e656c01030000000179010900000007626f6defbbbf7a0106000000046964656f0104000000027370010400000002656e01040000000273700106000000046c73657001030000000170010a000000087a777370e2808b710107000000056e6e62737001030000000172010800000006e1a08e6d7673010b00000009e697a5e69cace8aa9e010a00000008f09fa68063726162010400000002c3a901',
  );
  assert.deepEqual(splitWords(' a  b '), [['a', 1], ['b', 1]]);
});

test('sum and subtract: u64, wrapping as the Rust plugin\'s release build', () => {
  assert.equal(hex(functions.call('sum', groups([[1n, 2n, 3n], [5n], [2n ** 64n - 1n, 2n]]))), '010000000601000000050100000001');
  assert.equal(hex(functions.call('subtract', groups([[5n, 3n], [1n, 2n], [7n]]))), '0100000002' + '0a000000ffffffffffffffffff01' + '0100000007');
  assert.equal(sum(2n, 3n), 5n);
  assert.equal(subtract(sum(7n, 9n), 9n), 7n);
});
