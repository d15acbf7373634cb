"""Type descriptions: the shape of a record's postcard encoding, from Python type hints.

A `TypeDesc` here is the Python twin of the Rust SDK's `sluice_sdk::TypeDesc`. The host never
decodes values, but it checks that one stage's output fits the next stage's input and finds the
key inside a keyed record, so a Python function must describe exactly what a Rust function of
the same signature would. The mapping:

| Python hint | Rust | node |
|---|---|---|
| `str` | `String` / `&str` | text |
| `bytes`, `bytearray` | `Vec<u8>` / `&[u8]` (serde bytes) | bytes |
| `bool` | `bool` | boolean |
| `int` | `i64` | signed(64) |
| `sluice.u8` ... `sluice.u128`, `sluice.i8` ... `sluice.i128` | `u8` ... | unsigned(n) / signed(n) |
| `float` | `f64` | float64 |
| `sluice.f32` | `f32` | float32 |
| `sluice.char` | `char` | char |
| `None` | `()` | unit |
| `tuple[A, B]` | `(A, B)` | tuple |
| `list[T]`, `tuple[T, ...]`, `Sequence[T]` | `Vec<T>` | seq |
| `Optional[T]`, `T | None` | `Option<T>` | option |
| `dict[K, V]`, `Mapping[K, V]` | `BTreeMap<K, V>` | map |
| a `@dataclass` or a `NamedTuple` | a struct (its class name, fields in order) | structure |
| an `enum.Enum` | a fieldless enum (its members in order) | enumeration |
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import sys
import types as _pytypes
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any

__all__ = [
    "TypeDesc", "Unit", "Bool", "Unsigned", "Signed", "F32", "F64", "Char", "Text", "Bytes",
    "Option", "Seq", "Tuple", "Struct", "Map", "Enum",
    "u8", "u16", "u32", "u64", "u128", "i8", "i16", "i32", "i64", "i128", "f32", "char",
    "describe", "flatten", "item_type",
]


class TypeDesc:
    """One type's shape. Subclasses are frozen dataclasses; `str()` reads like Rust."""

    __slots__ = ()

    def __str__(self) -> str:
        return self.rust_name()

    def rust_name(self) -> str:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


@dataclass(frozen=True)
class Unit(TypeDesc):
    """`()`: no bytes (Python `None`)."""

    def rust_name(self) -> str:
        return "()"


@dataclass(frozen=True)
class Bool(TypeDesc):
    """One byte, 0 or 1."""

    def rust_name(self) -> str:
        return "bool"


_WIDTHS = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class Unsigned(TypeDesc):
    """An unsigned integer of `bits` bits (varint, except 8 bits: one byte)."""

    bits: int

    def __post_init__(self) -> None:
        if self.bits not in _WIDTHS:
            raise TypeError(f"an integer is 8, 16, 32, 64 or 128 bits wide, not {self.bits}")

    def rust_name(self) -> str:
        return f"u{self.bits}"


@dataclass(frozen=True)
class Signed(TypeDesc):
    """A signed integer of `bits` bits (zigzag varint, except 8 bits: one byte)."""

    bits: int

    def __post_init__(self) -> None:
        if self.bits not in _WIDTHS:
            raise TypeError(f"an integer is 8, 16, 32, 64 or 128 bits wide, not {self.bits}")

    def rust_name(self) -> str:
        return f"i{self.bits}"


@dataclass(frozen=True)
class F32(TypeDesc):
    """Four bytes little-endian."""

    def rust_name(self) -> str:
        return "f32"


@dataclass(frozen=True)
class F64(TypeDesc):
    """Eight bytes little-endian."""

    def rust_name(self) -> str:
        return "f64"


@dataclass(frozen=True)
class Char(TypeDesc):
    """One character, encoded as a one-character string."""

    def rust_name(self) -> str:
        return "char"


@dataclass(frozen=True)
class Text(TypeDesc):
    """Varint length, UTF-8 bytes."""

    def rust_name(self) -> str:
        return "String"


@dataclass(frozen=True)
class Bytes(TypeDesc):
    """Varint length, bytes."""

    def rust_name(self) -> str:
        return "Vec<u8>"


@dataclass(frozen=True)
class Option(TypeDesc):
    """A tag byte (0 none, 1 some), then the value when it is 1."""

    inner: TypeDesc

    def rust_name(self) -> str:
        return f"Option<{self.inner.rust_name()}>"


@dataclass(frozen=True)
class Seq(TypeDesc):
    """Varint count, then the elements."""

    inner: TypeDesc

    def rust_name(self) -> str:
        return f"Vec<{self.inner.rust_name()}>"


@dataclass(frozen=True)
class Tuple(TypeDesc):
    """The elements back to back; a 2-tuple is a keyed record `(K, V)`."""

    items: tuple

    def rust_name(self) -> str:
        names = [item.rust_name() for item in self.items]
        return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


@dataclass(frozen=True)
class Struct(TypeDesc):
    """Named fields back to back, in order. `cls` builds a decoded value (not compared)."""

    name: str
    fields: tuple  # of (name, TypeDesc)
    cls: Any = field(default=None, compare=False, hash=False, repr=False)

    def rust_name(self) -> str:
        return self.name


@dataclass(frozen=True)
class Map(TypeDesc):
    """Varint count, then each key and its value."""

    key: TypeDesc
    value: TypeDesc

    def rust_name(self) -> str:
        return f"Map<{self.key.rust_name()}, {self.value.rust_name()}>"


@dataclass(frozen=True)
class Enum(TypeDesc):
    """A fieldless enum: the variant's index as a varint. `cls` is the Python `enum.Enum`."""

    name: str
    variants: tuple  # of names; every variant is a unit variant
    cls: Any = field(default=None, compare=False, hash=False, repr=False)

    def rust_name(self) -> str:
        return self.name


# Integer widths and the other Rust primitives a bare Python type cannot say. They are
# `typing.Annotated` aliases: to a type checker `u64` is an `int`, to the SDK it is a u64.
u8 = Annotated[int, Unsigned(8)]
u16 = Annotated[int, Unsigned(16)]
u32 = Annotated[int, Unsigned(32)]
u64 = Annotated[int, Unsigned(64)]
u128 = Annotated[int, Unsigned(128)]
i8 = Annotated[int, Signed(8)]
i16 = Annotated[int, Signed(16)]
i32 = Annotated[int, Signed(32)]
i64 = Annotated[int, Signed(64)]
i128 = Annotated[int, Signed(128)]
f32 = Annotated[float, F32()]
char = Annotated[str, Char()]

_UNION_ORIGINS = (typing.Union,) + ((_pytypes.UnionType,) if hasattr(_pytypes, "UnionType") else ())
_SEQ_ORIGINS = (
    list, collections.abc.Sequence, collections.abc.MutableSequence, collections.abc.Iterable,
    collections.abc.Iterator, collections.abc.Collection, collections.abc.Generator,
)
_MAP_ORIGINS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)

_SIMPLE = {
    str: Text(), bytes: Bytes(), bytearray: Bytes(), bool: Bool(), int: Signed(64),
    float: F64(), type(None): Unit(), None: Unit(),
}


def describe(hint: Any, _seen: typing.Optional[dict] = None) -> TypeDesc:
    """The `TypeDesc` of a Python type hint (or a `TypeDesc`, returned as it is).

    Raises `TypeError` naming the hint when it has no postcard shape.
    """
    if isinstance(hint, TypeDesc):
        return hint
    try:
        simple = _SIMPLE.get(hint)
    except TypeError:  # an unhashable hint
        simple = None
    if simple is not None:
        return simple
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        for extra in hint.__metadata__:
            if isinstance(extra, TypeDesc):
                return extra
        return describe(args[0], _seen)
    if origin in _UNION_ORIGINS:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return Option(describe(rest[0], _seen))
        raise TypeError(f"{_hint_name(hint)}: a union has no postcard shape (only `Optional[T]`)")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return Seq(describe(args[0], _seen))
        if not args or args == ((),):
            return Unit()
        return Tuple(tuple(describe(arg, _seen) for arg in args))
    if origin in _SEQ_ORIGINS:
        if not args:
            raise TypeError(f"{_hint_name(hint)}: say the element type, e.g. list[str]")
        if origin is list or len(args) == 1 or origin is collections.abc.Generator:
            return Seq(describe(args[0], _seen))
    if origin in _MAP_ORIGINS:
        if len(args) != 2:
            raise TypeError(f"{_hint_name(hint)}: say the key and value types, e.g. dict[str, int]")
        return Map(describe(args[0], _seen), describe(args[1], _seen))
    if origin is None and isinstance(hint, type):
        if hint in (list, tuple, dict):
            raise TypeError(f"{hint.__name__}: say the element types, e.g. list[str]")
        if issubclass(hint, enum.Enum):
            return Enum(hint.__name__, tuple(member.name for member in hint), hint)
        if dataclasses.is_dataclass(hint) or (issubclass(hint, tuple) and hasattr(hint, "_fields")):
            return _struct(hint, _seen)
    raise TypeError(f"{_hint_name(hint)} has no postcard shape (see sluice.typedesc)")


def _struct(cls: type, seen: typing.Optional[dict]) -> Struct:
    seen = {} if seen is None else seen
    if cls in seen:
        raise TypeError(f"{cls.__name__} contains itself: a recursive type has no TypeDesc")
    seen[cls] = True
    try:
        module = sys.modules.get(cls.__module__)
        hints = typing.get_type_hints(cls, globalns=vars(module) if module else None, include_extras=True)
        if dataclasses.is_dataclass(cls):
            names = [f.name for f in dataclasses.fields(cls)]
        else:
            names = list(cls._fields)
        fields = []
        for name in names:
            if name not in hints:
                raise TypeError(f"{cls.__name__}.{name} has no type hint")
            fields.append((name, describe(hints[name], seen)))
        return Struct(cls.__name__, tuple(fields), cls)
    finally:
        del seen[cls]


def item_type(hint: Any, what: str) -> TypeDesc:
    """The element type of an iterable hint (`Iterable[T]`, `Iterator[T]`, `list[T]`,
    `Generator[T, ...]`): what a flat_map or map_partitions returns, one record each."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return item_type(typing.get_args(hint)[0], what)
    args = typing.get_args(hint)
    if origin in _SEQ_ORIGINS and args:
        return describe(args[0])
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return describe(args[0])
    raise TypeError(f"{what}: {_hint_name(hint)} is not an iterable of records (say Iterable[T] or list[T])")


def _hint_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__qualname__
    return repr(hint)


# ---- node lists (the WIT `type-desc`) ----------------------------------------------------

def flatten(desc: TypeDesc) -> list:
    """`desc` as a node list, the root first and each node before its children (pre-order),
    exactly as the Rust SDK's `abi2::flatten` writes it. Nodes are plain tuples:
    `("unit",)`, `("boolean",)`, `("unsigned", bits)`, `("signed", bits)`, `("float32",)`,
    `("float64",)`, `("char",)`, `("text",)`, `("bytes",)`, `("option", i)`, `("seq", i)`,
    `("tuple", [i, ...])`, `("structure", name, [(field, i), ...])`, `("map", k, v)`,
    `("enumeration", name, [(variant, ("unit",)), ...])`."""
    nodes: list = []
    _push(desc, nodes)
    return nodes


def _push(desc: TypeDesc, nodes: list) -> int:
    at = len(nodes)
    nodes.append(None)  # a placeholder until the children have their indices
    if isinstance(desc, Unit):
        node = ("unit",)
    elif isinstance(desc, Bool):
        node = ("boolean",)
    elif isinstance(desc, Unsigned):
        node = ("unsigned", desc.bits)
    elif isinstance(desc, Signed):
        node = ("signed", desc.bits)
    elif isinstance(desc, F32):
        node = ("float32",)
    elif isinstance(desc, F64):
        node = ("float64",)
    elif isinstance(desc, Char):
        node = ("char",)
    elif isinstance(desc, Text):
        node = ("text",)
    elif isinstance(desc, Bytes):
        node = ("bytes",)
    elif isinstance(desc, Option):
        node = ("option", _push(desc.inner, nodes))
    elif isinstance(desc, Seq):
        node = ("seq", _push(desc.inner, nodes))
    elif isinstance(desc, Tuple):
        node = ("tuple", [_push(item, nodes) for item in desc.items])
    elif isinstance(desc, Struct):
        node = ("structure", desc.name, [(name, _push(ty, nodes)) for name, ty in desc.fields])
    elif isinstance(desc, Map):
        key = _push(desc.key, nodes)
        node = ("map", key, _push(desc.value, nodes))
    elif isinstance(desc, Enum):
        node = ("enumeration", desc.name, [(name, ("unit",)) for name in desc.variants])
    else:
        raise TypeError(f"not a TypeDesc: {desc!r}")
    nodes[at] = node
    return at
