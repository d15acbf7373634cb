"""The glue between the registered functions and the component's WIT world `plugin`
(`sdk/wit/sluice.wit`): the export `functions` (`describe`, `call`) and the host imports.

Importable only inside a component built by componentize-py (it imports the generated
`wit_world` bindings); `sluice.plugin()` imports it and returns the export class.
"""

from __future__ import annotations

import linecache
import os
import sys

import traceback

# Modules that `traceback` and `warnings` import only when they format something. A module
# first imported at run time is read from the filesystem, which traps under `--stub-wasi`;
# imported here, at build time, they are in the snapshot for user code that formats a
# traceback or warns.
import ast  # noqa: F401
import textwrap  # noqa: F401
import unicodedata  # noqa: F401
import warnings  # noqa: F401

from componentize_py_types import Err
from wit_world import exports as _exports
from wit_world.imports import host as _host
from wit_world.imports import types as _wit

from . import functions as _functions
from . import host as _sdk_host
from .typedesc import flatten

_KIND = {
    "map": _wit.FunctionKind.MAP,
    "flat_map": _wit.FunctionKind.FLAT_MAP,
    "filter": _wit.FunctionKind.FILTER,
    "reduce": _wit.FunctionKind.REDUCE,
    "map_partitions": _wit.FunctionKind.MAP_PARTITIONS,
    "transform": _wit.FunctionKind.TRANSFORM,
    "update_state": _wit.FunctionKind.UPDATE_STATE,
    "key_by": _wit.FunctionKind.KEY_BY,
    "timestamp": _wit.FunctionKind.TIMESTAMP,
    "map_with_state": _wit.FunctionKind.MAP_WITH_STATE,
}
_LEVEL = (_host.Level.ERROR, _host.Level.WARN, _host.Level.INFO, _host.Level.DEBUG)
_METRIC = (_host.MetricKind.COUNTER, _host.MetricKind.GAUGE, _host.MetricKind.HISTOGRAM)


class _Backend:
    @staticmethod
    def log(level: int, message: str) -> None:
        _host.log(_LEVEL[level], message)

    @staticmethod
    def metric(kind: int, name: str, value: float, count: int) -> None:
        _host.metric(_METRIC[kind], name, float(value), int(count))


_sdk_host._set_backend(_Backend)


# Tracebacks without a filesystem. A component built with `--stub-wasi` traps on any
# filesystem call, and `linecache` (used by `traceback` and `warnings` to show source lines)
# stats and reads files when asked for a line. So the source of every non-stdlib module loaded
# so far (the app and this SDK) is read now, while componentize-py runs the app at build time
# with its directories mounted, and `linecache` is told never to touch the filesystem at run
# time: a line it does not have (a stdlib frame) is shown without its source.
def _cache_sources() -> None:
    stdlib = os.path.dirname(os.__file__)
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path.endswith(".py") or path.startswith(stdlib):
            continue
        if path in linecache.cache:
            continue
        try:
            with open(path, encoding="utf-8") as source:
                text = source.read()
        except Exception:
            continue
        # mtime None: `checkcache` leaves the entry alone
        linecache.cache[path] = (len(text), None, text.splitlines(True), path)


def _no_updatecache(filename, module_globals=None):
    return []


def _no_checkcache(filename=None):
    return None


def cache_sources() -> None:
    """Keeps the source of the modules loaded by now for tracebacks (`sluice.plugin()` calls
    it; call it again at the end of an app that imports more modules after that)."""
    _cache_sources()


_cache_sources()
linecache.updatecache = _no_updatecache
linecache.checkcache = _no_checkcache


# `traceback` finds where to put its carets (`~~~^^^`) by parsing each frame's source segment,
# which for a statement (`raise E(...)`) is a syntax error. A SyntaxError raised by the parser
# traps under `--stub-wasi` (CPython reaches for the filesystem to quote the line), so
# `traceback.format_exc()` in user code would kill the call. Without carets it works.
def _no_anchors(segment):
    return None


def _no_carets(self, *args, **kwargs):
    return False


if hasattr(traceback, "_extract_caret_anchors_from_line_segment"):
    traceback._extract_caret_anchors_from_line_segment = _no_anchors
if hasattr(traceback.StackSummary, "_should_show_carets"):
    traceback.StackSummary._should_show_carets = _no_carets


class _HostStream:
    """`sys.stdout`/`sys.stderr` at run time: each line written becomes a `host.log` line
    (stdout at level info, stderr at warn). The real streams trap under `--stub-wasi`, and so
    would `print`, `warnings` and `traceback`'s check for a terminal."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, level: int) -> None:
        self._level = level
        self._pending = ""

    def write(self, text: str) -> int:
        pending = self._pending + text
        if "\n" in pending:
            *lines, pending = pending.split("\n")
            for line in lines:
                _Backend.log(self._level, line)
        self._pending = pending
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            _Backend.log(self._level, line)

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False


_stdout = _HostStream(2)
_stderr = _HostStream(1)


def _enter() -> None:
    """At the start of every export call (never at build time, when the host is not there)."""
    if sys.stdout is not _stdout:
        sys.stdout = _stdout
    if sys.stderr is not _stderr:
        sys.stderr = _stderr


def _leave() -> None:
    """At the end of every export call: what was recorded goes to the host."""
    try:
        _stdout.flush()
        _stderr.flush()
    finally:
        _sdk_host.flush()


def _fields(fields) -> list:
    return [_wit.Field(name=name, ty=index) for name, index in fields]


def _shape(shape):
    tag = shape[0]
    if tag == "unit":
        return _wit.VariantShape_Unit()
    if tag == "newtype":
        return _wit.VariantShape_Newtype(shape[1])
    if tag == "tuple":
        return _wit.VariantShape_Tuple(list(shape[1]))
    return _wit.VariantShape_Fields(_fields(shape[1]))


def _node(node):
    tag = node[0]
    if tag == "unit":
        return _wit.TypeNode_Unit()
    if tag == "boolean":
        return _wit.TypeNode_Boolean()
    if tag == "unsigned":
        return _wit.TypeNode_Unsigned(node[1])
    if tag == "signed":
        return _wit.TypeNode_Signed(node[1])
    if tag == "float32":
        return _wit.TypeNode_Float32()
    if tag == "float64":
        return _wit.TypeNode_Float64()
    if tag == "char":
        return _wit.TypeNode_Char()
    if tag == "text":
        return _wit.TypeNode_Text()
    if tag == "bytes":
        return _wit.TypeNode_Bytes()
    if tag == "option":
        return _wit.TypeNode_Option(node[1])
    if tag == "seq":
        return _wit.TypeNode_Seq(node[1])
    if tag == "tuple":
        return _wit.TypeNode_Tuple(list(node[1]))
    if tag == "structure":
        return _wit.TypeNode_Structure((node[1], _fields(node[2])))
    if tag == "map":
        return _wit.TypeNode_Map((node[1], node[2]))
    if tag == "enumeration":
        variants = [_wit.VariantDesc(name=name, shape=_shape(shape)) for name, shape in node[2]]
        return _wit.TypeNode_Enumeration((node[1], variants))
    raise TypeError(f"not a type node: {node!r}")


def _type(desc) -> list:
    return [_node(node) for node in flatten(desc)]


def _info(function) -> "_wit.FunctionInfo":
    return _wit.FunctionInfo(
        name=function.name,
        kind=_KIND[function.kind],
        input=_type(function.input),
        output=_type(function.output),
        params=None if function.params is None else _type(function.params),
        fallible=function.fallible,
    )


class Functions(_exports.Functions):
    """The export `sluice:plugin/functions`: every registered function."""

    def describe(self) -> list:
        _enter()
        try:
            return [_info(function) for function in _functions.registry.values()]
        finally:
            _leave()

    def call(self, function: str, input: bytes) -> bytes:
        _enter()
        try:
            return _functions.call(function, input)
        except _functions.CallFailed as failed:
            raise Err(failed.message) from None
        finally:
            _leave()
