// {{name}}'s unit tests, in Node (18 or later): `node --test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { longEnough, normalize, runningTotal, splitWords, sum } from '../app.js';
import { registered } from '../sluice/sluice.js';

test('normalize lowers and drops punctuation', () => {
  assert.equal(normalize('To be, or NOT!'), 'to be  or not ');
});

test('split_words pairs each word with one', () => {
  assert.deepEqual(splitWords(' to  be '), [['to', 1], ['be', 1]]);
});

test('long_enough keeps words of three letters', () => {
  assert.ok(longEnough(['not', 1]));
  assert.ok(!longEnough(['to', 1]));
});

test('sum adds', () => {
  assert.equal(sum(2, 3), 5);
});

test('running_total counts occurrences and batches', () => {
  const first = runningTotal([1, 2], null);
  assert.deepEqual(first, { count: 3, batches: 1 });
  assert.deepEqual(runningTotal([], first), first);
});

test('the host sees every function with its kind (as the WIT names kinds)', () => {
  const kinds = Object.fromEntries(registered().map((f) => [f.name, f.kind]));
  assert.deepEqual(kinds, {
    normalize: 'map',
    split_words: 'flat-map',
    long_enough: 'filter',
    sum: 'reduce',
    running_total: 'update-state',
  });
});
