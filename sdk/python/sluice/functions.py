"""The decorators that make plugin functions, and their runners over partition bytes.

Each decorator registers the function under its name (or `name=`), derives its
function-info (kind, input and output types) from its type hints, and builds the runner of
its kind: `Function.run(input: bytes) -> bytes`, laid out exactly as `sdk/src/abi.rs` says:

| kind | input | output |
|---|---|---|
| map | frames | one frame per input record |
| flat_map | frames | zero or more frames per input record |
| filter | frames | one byte per input record: 1 keep, 0 drop |
| reduce | groups: `u32` count, then that many frames of `V` | one frame of `V` per group |
| map_partitions, transform | frames | frames |
| update_state | per key: `u32` count, that many frames of `V`, one frame of `Option<S>` | one frame of `Option<S>` per key |
| key_by, timestamp | frames | one frame (the key; the `u64` event time) per input record |
| map_with_state | per key: a frame of `K`, `u32` count, that many frames of `V`, a frame of `Option<S>` | per key: a frame of `Option<S>`, `u32` count, that many frames of output records |

A function with one more parameter than its kind takes gets the stage's `params` as that last
argument: its type is the hint of that parameter, and every call's input starts with one frame
holding them. `fallible=True` (map, flat_map, filter) makes an exception the failure of that one
record: the output then ends with a frame of `(u32 index, str message)` per failed record and the
byte length of those frames as a `u32`. Otherwise an exception fails the whole call.
"""

from __future__ import annotations

import inspect
import struct
import sys
import typing
from dataclasses import dataclass
from typing import Any, Callable

from . import codec
from . import typedesc as td
from .errors import exception_line, format_exception

__all__ = [
    "Function", "PluginError", "CallError", "CallFailed", "registry", "function", "call",
    "clear_registry",
    "map", "flat_map", "filter", "reduce", "map_partitions", "transform", "update_state",
    "key_by", "timestamp", "map_with_state", "KINDS",
]

KINDS = (
    "map", "flat_map", "filter", "reduce", "map_partitions", "transform", "update_state",
    "key_by", "timestamp", "map_with_state",
)
# How many arguments each kind passes (one more: the stage's params).
_ARITY = {
    "map": 1, "flat_map": 1, "filter": 1, "reduce": 2, "map_partitions": 1, "transform": 1,
    "update_state": 2, "key_by": 1, "timestamp": 1, "map_with_state": 3,
}
_FALLIBLE_KINDS = ("map", "flat_map", "filter")

_pack_u32 = struct.Struct("<I").pack
_pack_into_u32 = struct.Struct("<I").pack_into
_unpack_u32 = struct.Struct("<I").unpack_from


class PluginError(Exception):
    """A failed call whose message says it all (bad input bytes, an unknown function): the
    host gets the message, without a traceback."""


class CallError(Exception):
    """A user function raised: the host gets the message and the traceback."""

    def __init__(self, message: str, trace: str) -> None:
        super().__init__(message)
        self.trace = trace


class CallFailed(Exception):
    """What `call` raises: the whole call failed, and `message` is what the host is told."""

    @property
    def message(self) -> str:
        return self.args[0]


@dataclass
class Function:
    """One registered plugin function: what `describe` says about it and how `call` runs it."""

    name: str
    kind: str
    input: td.TypeDesc
    output: td.TypeDesc
    params: td.TypeDesc | None
    fallible: bool
    func: Callable
    runner: Callable  # (func, input bytes, out bytearray) -> None

    def run(self, input) -> bytes:
        """Runs the function over one partition (its kind's input layout): its output bytes."""
        out = bytearray()
        self.runner(input, out)
        return bytes(out)


registry: dict = {}


def clear_registry() -> None:
    """Forgets every registered function (for tests)."""
    registry.clear()


def call(function: str, input) -> bytes:
    """Runs the registered function named `function` over one partition: its output bytes,
    or `CallFailed` with the message for the host (the error's message, and for an exception
    raised by the function or by the SDK itself, its traceback)."""
    entry = registry.get(function)
    if entry is None:
        names = ", ".join(registry)
        raise CallFailed(f"the plugin has no function `{function}` (it has: {names})")
    try:
        return entry.run(input)
    except PluginError as err:
        raise CallFailed(str(err)) from None
    except CallError as err:
        raise CallFailed(f"{err}\n\n{err.trace.rstrip()}") from None
    except Exception as err:  # a bug in the SDK itself, a MemoryError, a RecursionError
        trace = format_exception(err, skip_sdk=False).rstrip()
        raise CallFailed(f"{function}: {exception_line(err)}\n\n{trace}") from None


# ---- deriving the types ------------------------------------------------------------------

def _hints(func: Callable) -> dict:
    module = sys.modules.get(getattr(func, "__module__", None) or "")
    try:
        return typing.get_type_hints(func, globalns=vars(module) if module else None, include_extras=True)
    except Exception as err:  # a hint naming something undefined
        raise TypeError(f"{func.__qualname__}: cannot read its type hints: {err}") from err


def _positional(func: Callable) -> list:
    params = []
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            params.append(param.name)
        elif param.kind == param.VAR_POSITIONAL or param.default is param.empty:
            raise TypeError(f"{func.__qualname__}: `{param.name}` is not a plain positional parameter")
    return params


def _option_inner(desc: td.TypeDesc, what: str) -> td.TypeDesc:
    if not isinstance(desc, td.Option):
        raise TypeError(f"{what} is Optional[S] (None: no state yet), not {desc}")
    return desc.inner


def function(kind: str, func: Callable, *, name: str | None = None, fallible: bool = False,
             input: Any = None, output: Any = None, params: Any = None,
             state: Any = None) -> Function:
    """Registers `func` as a plugin function of `kind` (what the decorators call). `input`,
    `output`, `params` and `state` override the types read from the hints (a hint or a
    `TypeDesc`: the record types as `describe` reports them)."""
    if kind not in KINDS:
        raise ValueError(f"no function kind `{kind}` (the kinds: {', '.join(KINDS)})")
    name = name or func.__name__
    what = f"{kind} `{name}`"
    if fallible and kind not in _FALLIBLE_KINDS:
        raise TypeError(f"{what}: only map, flat_map and filter functions can be fallible")
    if name in registry:
        raise ValueError(f"two functions are named `{name}`: a plugin's function names must be unique")
    hints = _hints(func)
    args = _positional(func)
    arity = _ARITY[kind]
    if len(args) not in (arity, arity + 1):
        raise TypeError(
            f"{what} takes {arity} argument{'s' if arity > 1 else ''}"
            f" (and, last, the stage's params), not {len(args)}")

    def hint(arg: str) -> Any:
        if arg not in hints:
            raise TypeError(f"{what}: `{arg}` needs a type hint (e.g. `{arg}: str`)")
        return hints[arg]

    def ret() -> Any:
        if "return" not in hints:
            raise TypeError(f"{what}: the return type needs a type hint (`-> ...`)")
        return hints["return"]

    def given(override: Any, derive: Callable[[], td.TypeDesc]) -> td.TypeDesc:
        return td.describe(override) if override is not None else derive()

    params_desc = None
    if len(args) == arity + 1:
        params_desc = given(params, lambda: td.describe(hint(args[-1])))
    elif params is not None:
        raise TypeError(f"{what}: params given, but the function has no parameter for them")

    state_desc = None
    if kind in ("map", "key_by"):
        in_desc = given(input, lambda: td.describe(hint(args[0])))
        out_desc = given(output, lambda: td.describe(ret()))
    elif kind == "flat_map":
        in_desc = given(input, lambda: td.describe(hint(args[0])))
        out_desc = given(output, lambda: td.item_type(ret(), what))
    elif kind == "filter":
        in_desc = given(input, lambda: td.describe(hint(args[0])))
        if output is not None and td.describe(output) != in_desc:
            raise TypeError(f"{what}: a filter's output type is its input type")
        out_desc = in_desc
    elif kind == "timestamp":
        in_desc = given(input, lambda: td.describe(hint(args[0])))
        out_desc = td.Unsigned(64)
        if "return" in hints and td.describe(hints["return"]) not in (td.Unsigned(64), td.Signed(64)):
            raise TypeError(f"{what} returns the event time as a u64 (ms since the Unix epoch)")
    elif kind == "reduce":
        value = given(input if input is not None else output, lambda: td.describe(hint(args[0])))
        if input is None and output is None:
            for other in (td.describe(hint(args[1])), td.describe(ret())):
                if other != value:
                    raise TypeError(f"{what}: both arguments and the result are one type, not {value} and {other}")
        in_desc = out_desc = value
    elif kind in ("map_partitions", "transform"):
        in_desc = given(input, lambda: td.item_type(hint(args[0]), what))
        out_desc = given(output, lambda: td.item_type(ret(), what))
    elif kind == "update_state":
        in_desc = given(input, lambda: td.item_type(hint(args[0]), what))
        out_desc = given(output if output is not None else state,
                         lambda: _option_inner(td.describe(hint(args[1])), f"{what}: the state argument"))
        state_desc = out_desc
    else:  # map_with_state
        key = td.describe(hint(args[0])) if input is None else None
        value = td.item_type(hint(args[1]), what) if input is None else None
        in_desc = given(input, lambda: td.Tuple((key, value)))
        if not (isinstance(in_desc, td.Tuple) and len(in_desc.items) == 2):
            raise TypeError(f"{what}: the input is the keyed record (K, V), not {in_desc}")
        state_desc = given(state, lambda: _option_inner(td.describe(hint(args[2])), f"{what}: the state argument"))

        def derive_output() -> td.TypeDesc:
            returned = ret()
            parts = typing.get_args(returned)
            if typing.get_origin(returned) is not tuple or len(parts) != 2:
                raise TypeError(f"{what} returns tuple[Optional[S], Iterable[O]] (the new state, the records)")
            return td.item_type(parts[1], what)
        out_desc = given(output, derive_output)

    runner = _RUNNERS[kind](func, name, in_desc, out_desc, state_desc, fallible)
    if params_desc is not None:
        runner = _with_params(runner, params_desc)
    entry = Function(name, kind, in_desc, out_desc, params_desc, fallible, func, runner)
    registry[name] = entry
    return entry


def _decorator(kind: str):
    def decorate(func: Callable | None = None, /, **options):
        def register(func: Callable) -> Callable:
            entry = function(kind, func, **options)
            try:
                func.__sluice__ = entry
            except (AttributeError, TypeError):
                pass
            return func
        if func is None:
            return register
        return register(func)
    decorate.__name__ = kind
    decorate.__qualname__ = kind
    decorate.__doc__ = (
        f"Makes the decorated function a `{kind}` plugin function, registered under its name "
        f"(`@sluice.{kind}` or `@sluice.{kind}(name=..., ...)`; see `sluice.functions.function`).")
    return decorate


map = _decorator("map")
flat_map = _decorator("flat_map")
filter = _decorator("filter")
reduce = _decorator("reduce")
map_partitions = _decorator("map_partitions")
transform = _decorator("transform")
update_state = _decorator("update_state")
key_by = _decorator("key_by")
timestamp = _decorator("timestamp")
map_with_state = _decorator("map_with_state")


# ---- runners -----------------------------------------------------------------------------

def _user_error(name: str, where: str, err: BaseException) -> CallError:
    return CallError(f"{name}: {where}: {exception_line(err)}", format_exception(err))


def _record_failure(err: BaseException) -> str:
    return exception_line(err)


class _Input:
    """A cursor over the input: frames decoded in place (no copy per frame), `u32` counts,
    and the errors the Rust SDK gives for bad bytes."""

    __slots__ = ("buf", "pos", "size")

    def __init__(self, buf) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)

    def frame(self, dec: Callable, index: int, type_name: str, missing: str | None = None):
        """Decodes the next frame with `dec`. At the end: `_END`, or with `missing`, that error."""
        buf, pos = self.buf, self.pos
        if pos + 4 > self.size:
            if missing is not None:
                raise PluginError(missing)
            return _END
        (n,) = _unpack_u32(buf, pos)
        start = pos + 4
        end = start + n
        if end > self.size:
            if missing is not None:
                raise PluginError(missing)
            return _END
        try:
            value, at = dec(buf, start)
        except codec.DecodeError as err:
            raise PluginError(f"input record {index} does not decode as {type_name}: {err}") from None
        if at > end:
            raise PluginError(f"input record {index} does not decode as {type_name}: the value runs past its frame")
        self.pos = end
        return value

    def count(self):
        pos = self.pos
        if pos + 4 > self.size:
            return None
        self.pos = pos + 4
        return _unpack_u32(self.buf, pos)[0]

    def check_end(self) -> None:
        if self.pos != self.size:
            raise PluginError(f"input ends with a truncated frame of {self.size - self.pos} bytes")


_END = object()


def _frame_writer(desc: td.TypeDesc, name: str):
    """`write(out, value, index)`: appends `value` as one frame; an error naming the record
    when it does not encode as `desc`."""
    enc = codec.encoder(desc)
    type_name = desc.rust_name()

    def write(out: bytearray, value, index: int) -> None:
        start = len(out)
        out += b"\0\0\0\0"
        try:
            enc(value, out)
        except (codec.EncodeError, RecursionError) as err:
            del out[start:]
            raise PluginError(
                f"{name}: the output of input record {index} does not encode as {type_name}: {err}") from None
        _pack_into_u32(out, start, len(out) - start - 4)
    return write


def _finish_failures(out: bytearray, failures: list) -> None:
    start = len(out)
    enc = codec.encoder(td.Tuple((td.Unsigned(32), td.Text())))
    for failure in failures:
        codec.encode_frame(out, enc, failure)
    out += _pack_u32(len(out) - start)


def _per_record(kind: str):
    """map, flat_map, filter, key_by, timestamp: one call per input frame."""

    def build(func, name, in_desc, out_desc, _state, fallible):
        dec = codec.decoder(in_desc)
        in_name = in_desc.rust_name()
        write = _frame_writer(out_desc, name)
        if fallible:
            return _fallible_loop(kind, func, name, dec, in_name, write)
        if kind == "flat_map":
            def run(input, out: bytearray, extra: tuple = ()) -> None:
                cursor = _Input(input)
                index = 0
                while True:
                    record = cursor.frame(dec, index, in_name)
                    if record is _END:
                        break
                    try:
                        for item in func(record, *extra):
                            write(out, item, index)
                    except PluginError:
                        raise
                    except Exception as err:
                        raise _user_error(name, f"input record {index}", err) from err
                    index += 1
                cursor.check_end()
        elif kind == "filter":
            def run(input, out: bytearray, extra: tuple = ()) -> None:
                cursor = _Input(input)
                index = 0
                while True:
                    record = cursor.frame(dec, index, in_name)
                    if record is _END:
                        break
                    try:
                        keep = func(record, *extra)
                    except Exception as err:
                        raise _user_error(name, f"input record {index}", err) from err
                    out.append(1 if keep else 0)
                    index += 1
                cursor.check_end()
        else:  # map, key_by, timestamp
            def run(input, out: bytearray, extra: tuple = ()) -> None:
                cursor = _Input(input)
                index = 0
                while True:
                    record = cursor.frame(dec, index, in_name)
                    if record is _END:
                        break
                    try:
                        result = func(record, *extra)
                    except Exception as err:
                        raise _user_error(name, f"input record {index}", err) from err
                    write(out, result, index)
                    index += 1
                cursor.check_end()
        return run
    return build


def _fallible_loop(kind, func, name, dec, in_name, write):
    """A fallible map, flat_map or filter: an exception is that record's failure (a filter
    writes keep byte 0 for it), listed in the trailer."""

    def run(input, out: bytearray, extra: tuple = ()) -> None:
        cursor = _Input(input)
        failures = []
        index = 0
        while True:
            record = cursor.frame(dec, index, in_name)
            if record is _END:
                break
            start = len(out)
            try:
                result = func(record, *extra)
                if kind == "flat_map":
                    for item in result:
                        write(out, item, index)
                elif kind == "filter":
                    out.append(1 if result else 0)
                else:
                    write(out, result, index)
            except PluginError:
                raise
            except Exception as err:
                del out[start:]  # what a flat_map emitted before it raised
                if kind == "filter":
                    out.append(0)
                failures.append((index, _record_failure(err)))
            index += 1
        cursor.check_end()
        _finish_failures(out, failures)
    return run


def _reduce(func, name, in_desc, out_desc, _state, _fallible):
    dec = codec.decoder(in_desc)
    in_name = in_desc.rust_name()
    write = _frame_writer(out_desc, name)

    def run(input, out: bytearray, extra: tuple = ()) -> None:
        cursor = _Input(input)
        index = 0
        while True:
            count = cursor.count()
            if count is None:
                break
            if count == 0:
                raise PluginError("empty group")
            first = index
            acc = cursor.frame(dec, index, in_name, f"group ends early at value {index}")
            index += 1
            for _ in range(count - 1):
                value = cursor.frame(dec, index, in_name, f"group ends early at value {index}")
                try:
                    acc = func(acc, value, *extra)
                except Exception as err:
                    raise _user_error(name, f"value {index}", err) from err
                index += 1
            write(out, acc, first)
        cursor.check_end()
    return run


def _partitions(func, name, in_desc, out_desc, _state, _fallible):
    dec = codec.decoder(in_desc)
    in_name = in_desc.rust_name()
    write = _frame_writer(out_desc, name)

    def run(input, out: bytearray, extra: tuple = ()) -> None:
        cursor = _Input(input)
        records = []
        while True:
            record = cursor.frame(dec, len(records), in_name)
            if record is _END:
                break
            records.append(record)
        cursor.check_end()
        emitted = 0
        try:
            for item in func(records, *extra):
                write(out, item, emitted)
                emitted += 1
        except PluginError:
            raise
        except Exception as err:
            raise _user_error(name, "the partition", err) from err
    return run


def _update_state(func, name, in_desc, out_desc, state_desc, _fallible):
    dec = codec.decoder(in_desc)
    in_name = in_desc.rust_name()
    state_type = td.Option(state_desc)
    dec_state = codec.decoder(state_type)
    state_name = state_type.rust_name()
    write = _frame_writer(state_type, name)

    def run(input, out: bytearray, extra: tuple = ()) -> None:
        cursor = _Input(input)
        index = 0
        key = 0
        while True:
            count = cursor.count()
            if count is None:
                break
            values = []
            for _ in range(count):
                values.append(cursor.frame(dec, index, in_name, f"key ends early at value {index}"))
                index += 1
            state = cursor.frame(dec_state, index, state_name, "a key has no state frame")
            try:
                state = func(values, state, *extra)
            except Exception as err:
                raise _user_error(name, f"key {key}", err) from err
            write(out, state, index)
            key += 1
        cursor.check_end()
    return run


def _map_with_state(func, name, in_desc, out_desc, state_desc, _fallible):
    key_desc, value_desc = in_desc.items
    dec_key = codec.decoder(key_desc)
    dec = codec.decoder(value_desc)
    key_name, in_name = key_desc.rust_name(), value_desc.rust_name()
    state_type = td.Option(state_desc)
    dec_state = codec.decoder(state_type)
    state_name = state_type.rust_name()
    write_state = _frame_writer(state_type, name)
    write = _frame_writer(out_desc, name)

    def run(input, out: bytearray, extra: tuple = ()) -> None:
        cursor = _Input(input)
        index = 0
        while True:
            key = cursor.frame(dec_key, index, key_name)
            if key is _END:
                break
            count = cursor.count()
            if count is None:
                raise PluginError("a key has no value count")
            values = []
            for _ in range(count):
                values.append(cursor.frame(dec, index, in_name, f"key ends early at value {index}"))
                index += 1
            state = cursor.frame(dec_state, index, state_name, "a key has no state frame")
            try:
                result = func(key, values, state, *extra)
                try:
                    state, emitted = result
                except (TypeError, ValueError):
                    raise TypeError(f"{name} returns (state, records), not {result!r}") from None
                write_state(out, state, index)
                at = len(out)
                out += b"\0\0\0\0"
                n = 0
                for item in emitted:
                    write(out, item, index)
                    n += 1
            except PluginError:
                raise
            except Exception as err:
                raise _user_error(name, f"key {key!r}", err) from err
            _pack_into_u32(out, at, n)
        cursor.check_end()
    return run


_RUNNERS = {
    "map": _per_record("map"),
    "flat_map": _per_record("flat_map"),
    "filter": _per_record("filter"),
    "key_by": _per_record("key_by"),
    "timestamp": _per_record("timestamp"),
    "reduce": _reduce,
    "map_partitions": _partitions,
    "transform": _partitions,
    "update_state": _update_state,
    "map_with_state": _map_with_state,
}


def _with_params(run: Callable, params_desc: td.TypeDesc) -> Callable:
    """A runner that reads the params frame first and passes them as the last argument,
    decoding each distinct params value once."""
    type_name = params_desc.rust_name()
    cache: dict = {}

    def run_with_params(input, out: bytearray) -> None:
        if len(input) < 4:
            raise PluginError("the call carries no parameters frame")
        (n,) = _unpack_u32(input, 0)
        if 4 + n > len(input):
            raise PluginError("the call carries no parameters frame")
        raw = bytes(input[4:4 + n])
        try:
            params = cache[raw]
        except KeyError:
            try:
                params = codec.decode(params_desc, raw, exact=False)
            except codec.DecodeError as err:
                raise PluginError(f"the parameters do not decode as {type_name}: {err}") from None
            if len(cache) >= 16:
                cache.clear()
            cache[raw] = params
        run(input[4 + n:], out, (params,))
    return run_with_params
