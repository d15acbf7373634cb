"""Word count in Python: the twin of the Rust plugin `plugins/wordcount` (same function names,
same types, byte-identical output), so either can replace the other in a running pipeline.

`split_words` turns a line into `(word, 1)` pairs; `reduce_by_key` with `sum` adds them up;
`subtract` is the inverse of `sum`, for incremental windows.
"""

from typing import Iterator

import sluice
from sluice import u64

_U64 = (1 << 64) - 1


@sluice.flat_map
def split_words(line: str) -> Iterator[tuple[str, u64]]:
    """One `(word, 1)` per whitespace-separated word (as Rust's `str::split_whitespace`)."""
    return ((word, 1) for word in sluice.split_whitespace(line))


# The Rust plugin's release build wraps on overflow; so do these, to stay byte-identical.
@sluice.reduce(name="sum")
def add(a: u64, b: u64) -> u64:
    """Adds two counts."""
    return (a + b) & _U64


@sluice.reduce
def subtract(a: u64, b: u64) -> u64:
    """Subtracts a count: the inverse of `sum`, for `reduce_by_key_and_window` with `inverse`."""
    return (a - b) & _U64


# The component's export `sluice:plugin/functions`: componentize-py looks up `Functions` here.
Functions = sluice.plugin()
