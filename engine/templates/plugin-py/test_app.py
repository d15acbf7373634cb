"""{{name}}'s unit tests, in plain CPython: `python3 -m unittest`."""

import unittest

import sluice
from app import Functions, Total, add, long_enough, normalize, running_total, split_words


class Functions_(unittest.TestCase):
    def test_normalize_lowers_and_drops_punctuation(self):
        self.assertEqual(normalize("To be, or NOT!"), "to be  or not ")

    def test_split_words_pairs_each_word_with_one(self):
        self.assertEqual(list(split_words(" to  be ")), [("to", 1), ("be", 1)])

    def test_long_enough_keeps_words_of_three_letters(self):
        self.assertTrue(long_enough(("not", 1)))
        self.assertFalse(long_enough(("to", 1)))

    def test_sum_adds(self):
        self.assertEqual(add(2, 3), 5)

    def test_running_total_counts_occurrences_and_batches(self):
        first = running_total([1, 2], None)
        self.assertEqual(first, Total(count=3, batches=1))
        self.assertEqual(running_total([], first), first)

    def test_the_host_sees_every_function_with_its_kind(self):
        kinds = {f["name"]: f["kind"] for f in Functions().describe()}
        self.assertEqual(
            kinds,
            {
                "normalize": "map",
                "split_words": "flat_map",
                "long_enough": "filter",
                "sum": "reduce",
                "running_total": "update_state",
            },
        )

    def test_a_partition_round_trips_through_the_codec(self):
        # What the host sends: postcard frames; what comes back: the same framing.
        self.assertEqual(sluice.decode(sluice.u64, sluice.encode(sluice.u64, 300)), 300)


if __name__ == "__main__":
    unittest.main()
