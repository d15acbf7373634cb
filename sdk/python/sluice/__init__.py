"""Sluice's Python guest SDK: plugin functions for the Sluice stream engine, as a
WebAssembly component built with componentize-py (ABI 2, `sdk/wit/sluice.wit`).

    import sluice
    from sluice import u64

    @sluice.flat_map
    def split_words(line: str) -> list[tuple[str, u64]]:
        return [(word, 1) for word in sluice.split_whitespace(line)]

    @sluice.reduce
    def sum(a: u64, b: u64) -> u64:
        return a + b

    Functions = sluice.plugin()   # the component's export; componentize-py looks it up

The decorators (`map`, `flat_map`, `filter`, `reduce`, `map_partitions`, `transform`,
`update_state`, `key_by`, `timestamp`, `map_with_state`) derive each function's types from its
hints (see `sluice.typedesc`), and the runners lay out the bytes exactly as the Rust SDK does,
so a Python plugin can replace a Rust one of the same names and types.
"""

from . import codec, functions, host, typedesc
from .codec import DecodeError, EncodeError, decode, encode
from .functions import (
    Function, filter, flat_map, key_by, map, map_partitions, map_with_state, reduce,
    registry, timestamp, transform, update_state,
)
from .host import DEBUG, ERROR, INFO, WARN, counter, debug, error, gauge, histogram, info, log, warn
from .text import split_whitespace
from .typedesc import (
    TypeDesc, char, describe, f32, i8, i16, i32, i64, i128, u8, u16, u32, u64, u128,
)

__version__ = "0.1.0"

#: The WIT package this SDK speaks.
WIT_PACKAGE = "sluice:plugin@2.0.0"

__all__ = [
    "map", "flat_map", "filter", "reduce", "map_partitions", "transform", "update_state",
    "key_by", "timestamp", "map_with_state", "plugin", "registry", "Function",
    "u8", "u16", "u32", "u64", "u128", "i8", "i16", "i32", "i64", "i128", "f32", "char",
    "TypeDesc", "describe", "encode", "decode", "EncodeError", "DecodeError",
    "log", "error", "warn", "info", "debug", "ERROR", "WARN", "INFO", "DEBUG",
    "counter", "gauge", "histogram", "split_whitespace", "codec", "typedesc", "host", "functions",
]


def plugin():
    """The class componentize-py exports as `sluice:plugin/functions` (`describe`, `call`),
    over every function registered so far and later: assign it to `Functions` in the app
    module. Outside a component build (plain CPython, no generated bindings) it is
    `sluice.local.Functions`, which does the same without a host, for tests."""
    try:
        from .component import Functions, cache_sources
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in ("wit_world", "componentize_py_types"):
            raise
        from .local import Functions

        return Functions
    cache_sources()
    return Functions
