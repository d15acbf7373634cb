"""What the host gives a plugin: log lines and metrics.

Inside a component these go through the WIT imports `sluice:plugin/host` (`log`, `metric`).
Outside one (plain CPython: unit tests, a REPL) they are kept in `local_logs` and recorded
metrics, so a function can be tested without a host.

Metrics work as in the Rust SDK (`sluice_sdk::metrics`): calls add to a table inside the plugin,
and the table goes to the host once, at the end of each call (one partition), whatever the
outcome. A counter's value is its total and its count the number of adds; a gauge's value is the
last one set (count 0); a histogram's value is the sum of its observations and its count their
number. A name is `[a-zA-Z_][a-zA-Z0-9_]*`, at most 64 bytes; the host ignores others.
"""

from __future__ import annotations

__all__ = [
    "ERROR", "WARN", "INFO", "DEBUG", "log", "error", "warn", "info", "debug",
    "counter", "gauge", "histogram", "recorded", "flush", "local_logs", "local_metrics",
]

ERROR, WARN, INFO, DEBUG = "error", "warn", "info", "debug"
_LEVELS = {ERROR: 0, WARN: 1, INFO: 2, DEBUG: 3, "warning": 1}
_KINDS = ("counter", "gauge", "histogram")

#: Log lines sent outside a component: `(level, message)`.
local_logs: list = []
#: Metrics flushed outside a component: `(kind, name, value, count)`.
local_metrics: list = []


class _Local:
    """The backend outside a component."""

    @staticmethod
    def log(level: int, message: str) -> None:
        local_logs.append((("error", "warn", "info", "debug")[level], message))

    @staticmethod
    def metric(kind: int, name: str, value: float, count: int) -> None:
        local_metrics.append((_KINDS[kind], name, value, count))


_backend = _Local


def _set_backend(backend) -> None:
    """Routes log lines and metrics to `backend` (an object with `log(level, message)` and
    `metric(kind, name, value, count)`, levels and kinds as indices): the component glue."""
    global _backend
    _backend = backend


def log(level, message: str) -> None:
    """Sends a log line now: `level` is "error", "warn", "info" or "debug" (or 0 to 3)."""
    if isinstance(level, str):
        try:
            index = _LEVELS[level.lower()]
        except KeyError:
            raise ValueError(f"no log level {level!r} (error, warn, info, debug)") from None
    else:
        index = int(level)
        if not 0 <= index <= 3:
            raise ValueError(f"no log level {level!r} (0 error ... 3 debug)")
    _backend.log(index, str(message))


def error(message: str) -> None:
    log(0, message)


def warn(message: str) -> None:
    log(1, message)


def info(message: str) -> None:
    log(2, message)


def debug(message: str) -> None:
    log(3, message)


# (kind index, name) -> [value, count], in the order first recorded
_recorded: dict = {}


def _record(kind: int, name: str, value: float) -> None:
    slot = _recorded.get((kind, name))
    if slot is None:
        slot = _recorded[(kind, name)] = [0.0, 0]
    if kind == 1:
        slot[0] = float(value)
    else:
        slot[0] += float(value)
        slot[1] += 1


def counter(name: str, n: int = 1) -> None:
    """Adds `n` (default 1) to the counter `name`."""
    if n < 0:
        raise ValueError(f"a counter only goes up (counter {name!r}, {n})")
    _record(0, name, n)


def gauge(name: str, value: float) -> None:
    """Sets the gauge `name` to `value` (the last one set in a call wins)."""
    _record(1, name, value)


def histogram(name: str, value: float) -> None:
    """Adds one observation to the histogram `name`."""
    _record(2, name, value)


def recorded() -> list:
    """What was recorded since the last flush, without taking it: `(kind, name, value, count)`."""
    return [(_KINDS[kind], name, value, count) for (kind, name), (value, count) in _recorded.items()]


def flush() -> None:
    """Hands what was recorded to the host and starts over (the glue does it after each call)."""
    taken = list(_recorded.items())
    _recorded.clear()
    for (kind, name), (value, count) in taken:
        _backend.metric(kind, name, value, count)
