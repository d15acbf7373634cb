"""`sluice.plugin()` outside a component: the same `describe` and `call` in plain CPython,
without a host, so that a plugin's app module imports and runs in unit tests."""

from __future__ import annotations

from . import functions as _functions
from . import host as _host
from .typedesc import flatten

__all__ = ["Functions"]


class Functions:
    """`describe()` lists the registered functions; `call(function, input)` returns the output
    bytes or raises `sluice.functions.CallFailed` with the message the host would get. Log
    lines and metrics land in `sluice.host.local_logs` and `sluice.host.local_metrics`."""

    def describe(self) -> list:
        return [
            {
                "name": f.name,
                "kind": f.kind,
                "input": flatten(f.input),
                "output": flatten(f.output),
                "params": None if f.params is None else flatten(f.params),
                "fallible": f.fallible,
            }
            for f in _functions.registry.values()
        ]

    def call(self, function: str, input) -> bytes:
        try:
            return _functions.call(function, input)
        finally:
            _host.flush()
