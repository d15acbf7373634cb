// Word count in JavaScript: the same functions, names and types as the Rust plugin
// `plugins/wordcount` (so the engine can hot-swap between the two, and their outputs are equal
// byte for byte). Built into target/plugins/wordcount-js.wasm by scripts/build-js-plugins.sh.
import { flatMap, reduce, t } from '../../sdk/js/sluice.js';

// A word: a run of what Rust's `str::split_whitespace` does not split on, i.e. not
// `char::is_whitespace` (Unicode White_Space). Not JS's `\s`, which also matches U+FEFF and
// misses U+0085. (`match` rather than `split`: QuickJS runs a split regex once per character.)
const WORD = /[^\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/g;

// One `(word, 1)` per whitespace-separated word.
export const splitWords = flatMap('split_words', { input: t.str, output: t.tuple(t.str, t.u64) }, (line) =>
  (line.match(WORD) ?? []).map((word) => [word, 1]),
);

// The counts are u64 as BigInts, and wrap around at 2^64 as the Rust plugin's do (a release
// build: no overflow checks), so that both give the same bytes for every input.

// Adds two counts.
export const sum = reduce('sum', t.u64n, (a, b) => BigInt.asUintN(64, a + b));

// Subtracts a count: the inverse of `sum`, for `reduce_by_key_and_window` with `inverse`.
export const subtract = reduce('subtract', t.u64n, (a, b) => BigInt.asUintN(64, a - b));
