"""The Python twin of `plugins/faulty`: `split_words` as in the word count, except on lines
holding a trigger word: `panic!` raises (a guest error with its traceback), `loop!` never
returns (a deadline), `oom!` allocates until the memory cap stops it (a memory limit); `huge`
turns a line holding `huge!` into an output larger than the cap. Used by the hostile zoo
(`tests/e2e/sandbox.rs`) to show a Python component is contained as a Rust one is.
"""

from typing import Iterator

import sluice
from sluice import u64


@sluice.flat_map
def split_words(line: str) -> Iterator[tuple[str, u64]]:
    """One `(word, 1)` per word, or misbehaviour on a trigger."""
    if "panic!" in line:
        raise RuntimeError(f"asked to panic by line {line!r}")
    if "loop!" in line:
        n = 0
        while True:
            n += 1
    if "oom!" in line:
        hog = []
        while True:
            hog.append(bytearray(16 << 20))
    return ((word, 1) for word in sluice.split_whitespace(line))


@sluice.reduce
def sum(a: u64, b: u64) -> u64:
    """Adds two counts."""
    return (a + b) & ((1 << 64) - 1)


@sluice.flat_map
def huge(line: str) -> list[str]:
    """The line as is, except that a line holding `huge!` becomes 256 records of 1 MiB each."""
    if "huge!" in line:
        return ["h" * (1 << 20) for _ in range(256)]
    return [line]


# The component's export `sluice:plugin/functions`: componentize-py looks up `Functions` here.
Functions = sluice.plugin()
