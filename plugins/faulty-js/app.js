// The JavaScript twin of `plugins/faulty`: `split_words` as in the word count, except on lines
// holding a trigger word: `panic!` throws (a guest error with its stack), `loop!` never returns
// (a deadline), `oom!` allocates until the memory cap stops it (a memory limit); `huge` turns a
// line holding `huge!` into an output larger than the cap. Used by the hostile zoo
// (tests/e2e/sandbox.rs) to show a JavaScript component is contained as a Rust one is.
import { flatMap, reduce, t } from '../../sdk/js/sluice.js';

const WORD = /[^\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/g;

// One `(word, 1)` per word, or misbehaviour on a trigger.
export const splitWords = flatMap('split_words', { input: t.str, output: t.tuple(t.str, t.u64) }, (line) => {
  if (line.includes('panic!')) throw new Error(`asked to panic by line ${JSON.stringify(line)}`);
  if (line.includes('loop!')) {
    let n = 0;
    for (;;) n += 1;
  }
  if (line.includes('oom!')) {
    const hog = [];
    for (;;) hog.push(new Uint8Array(16 << 20).fill(1));
  }
  return (line.match(WORD) ?? []).map((word) => [word, 1]);
});

// Adds two counts.
export const sum = reduce('sum', t.u64n, (a, b) => BigInt.asUintN(64, a + b));

// The line as is, except that a line holding `huge!` becomes 256 records of 1 MiB each.
export const huge = flatMap('huge', { input: t.str, output: t.str }, (line) =>
  line.includes('huge!') ? Array.from({ length: 256 }, () => 'h'.repeat(1 << 20)) : [line],
);
