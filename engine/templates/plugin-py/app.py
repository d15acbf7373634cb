"""{{name}}: a Sluice plugin in Python. Each decorated function below is an ordinary Python
function; its decorator makes it callable from a pipeline stage (`plugin = "{{name}}"`,
`function = "..."`), once per partition of a batch, with the types its hints say.
`python3 -m unittest` runs the tests in plain CPython; `sluice plugin build` builds the
component (target/{{file}}.wasm); `sluice test pipeline.toml --input lines=input.txt --expect
expected` runs the sample pipeline on the sample input with the built plugin.

Import every module you need at the top: the component is a snapshot taken after this file
ran, and its sandbox has no files, clocks or sockets (see sluice/README.md, "The sandbox").
"""

from dataclasses import dataclass
from typing import Iterator, Optional

import sluice
from sluice import u32, u64


@sluice.map
def normalize(line: str) -> str:
    """map (one record in, one out): a line in lower case, punctuation turned into spaces."""
    return "".join((c.lower() if c.isascii() else c) if c.isalnum() else " " for c in line)


@sluice.flat_map
def split_words(line: str) -> Iterator[tuple[str, u64]]:
    """flat_map (one record in, any number out): `(word, 1)` per word."""
    return ((word, 1) for word in sluice.split_whitespace(line))


@sluice.filter
def long_enough(pair: tuple[str, u64]) -> bool:
    """filter (keep a record when true): words of three letters or more."""
    return len(pair[0]) >= 3


@sluice.reduce(name="sum")
def add(a: u64, b: u64) -> u64:
    """reduce (two values of a key in, one out; associative and commutative): adds counts."""
    return a + b


@dataclass
class Total:
    """A record of your own: a dataclass, described to the host by its field hints."""

    count: u64
    """Occurrences so far."""
    batches: u32
    """Batches the word appeared in."""


@sluice.update_state
def running_total(counts: list[u64], total: Optional[Total]) -> Optional[Total]:
    """update_state (a key's new values of this batch and its state so far in, its new state
    out; `None` would delete the key): a word's running total."""
    total = total or Total(count=0, batches=0)
    if counts:
        total = Total(count=total.count + sum(counts), batches=total.batches + 1)
    return total


# The component's export `sluice:plugin/functions`: componentize-py looks up `Functions` here.
Functions = sluice.plugin()
