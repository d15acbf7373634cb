// {{name}}: a Sluice plugin in JavaScript. Each function below is an ordinary JS function;
// the helper around it registers it with its record types, callable from a pipeline stage
// (`plugin = "{{name}}"`, `function = "..."`) once per partition of a batch. `node --test`
// runs the tests in Node; `sluice plugin build` builds the component (target/{{file}}.wasm);
// `sluice test pipeline.toml --input lines=input.txt --expect expected` runs the sample
// pipeline on the sample input with the built plugin. `sluice/` is Sluice's JS SDK.
import { filter, flatMap, map, reduce, t, updateState } from './sluice/sluice.js';

// A word: a run of what Rust's `str::split_whitespace` does not split on.
const WORD = /[^\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/g;

// map (one record in, one out): a line in lower case, punctuation turned into spaces.
export const normalize = map('normalize', { input: t.str, output: t.str }, (line) =>
  line.replace(/[^\p{L}\p{N}]/gu, ' ').replace(/[A-Z]+/g, (s) => s.toLowerCase()),
);

// flat_map (one record in, any number out): `[word, 1]` per word.
export const splitWords = flatMap('split_words', { input: t.str, output: t.tuple(t.str, t.u64) }, (line) =>
  (line.match(WORD) ?? []).map((word) => [word, 1]),
);

// filter (keep a record when true): words of three letters or more.
export const longEnough = filter('long_enough', t.tuple(t.str, t.u64), ([word]) => [...word].length >= 3);

// reduce (two values of a key in, one out; associative and commutative): adds counts.
export const sum = reduce('sum', t.u64, (a, b) => a + b);

// A record of your own: a struct type, named as its Rust twin would be.
export const Total = t.struct('Total', { count: t.u64, batches: t.u32 });

// update_state (a key's new values of this batch and its state so far in, its new state out;
// null would delete the key): a word's running total.
export const runningTotal = updateState('running_total', { value: t.u64, state: Total }, (counts, total) => {
  total = total ?? { count: 0, batches: 0 };
  if (counts.length === 0) return total;
  return { count: total.count + counts.reduce((a, b) => a + b, 0), batches: total.batches + 1 };
});
