"""Postcard, the encoding of every record that crosses the plugin boundary, and frames.

Postcard (https://postcard.jamesmunns.com/wire-format) as the Rust side uses it:

- `u8`: one raw byte; `u16`..`u128`: unsigned LEB128 varints (7 bits a byte, low first, the
  high bit set on every byte but the last); `i8`: one raw byte (two's complement);
  `i16`..`i128`: zigzag (`(n << 1) ^ (n >> (bits - 1))`), then a varint;
- `bool`: one byte, 0 or 1; `f32`/`f64`: little-endian IEEE 754;
- `char`, strings: varint byte length, then UTF-8; bytes: varint length, then the bytes;
- `Option`: a tag byte 0 (none) or 1 (some, then the value); `()`: nothing;
- sequences and maps: varint count, then the elements (a map: each key, then its value);
- tuples and structs: the fields back to back, no header;
- enums: the variant's index as a varint, then its fields.

A *frame* is a `u32` little-endian length, then that many bytes (one record). A partition is a
run of frames.

The encoders and decoders are compiled once per type into closures:
`encoder(ty)(value, out: bytearray)` appends, `decoder(ty)(buf, pos) -> (value, pos)`.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Iterator

from . import typedesc as td

__all__ = [
    "DecodeError", "EncodeError", "encoder", "decoder", "encode", "decode",
    "write_varint", "read_varint", "zigzag", "unzigzag",
    "frames", "write_frame", "encode_frame", "read_u32", "Frames",
]


class DecodeError(ValueError):
    """Bytes that are not a value of the expected type."""


class EncodeError(ValueError):
    """A value that does not fit its declared type."""


_pack_u32 = struct.Struct("<I").pack
_unpack_u32 = struct.Struct("<I").unpack_from
_pack_into_u32 = struct.Struct("<I").pack_into
_pack_f32 = struct.Struct("<f").pack
_unpack_f32 = struct.Struct("<f").unpack_from
_pack_f64 = struct.Struct("<d").pack
_unpack_f64 = struct.Struct("<d").unpack_from


# ---- varints ---------------------------------------------------------------------------

def write_varint(out: bytearray, n: int) -> None:
    """Appends `n` (>= 0) as an unsigned LEB128 varint."""
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _max_varint_len(bits: int) -> int:
    return (bits + 6) // 7


def read_varint(buf, pos: int, bits: int = 64) -> tuple:
    """Reads an unsigned varint of at most `bits` bits at `pos`: `(value, next pos)`.
    Refuses, like postcard, a varint longer than the type allows or a value too large."""
    limit = _max_varint_len(bits)
    value = 0
    shift = 0
    for _ in range(limit):
        if pos >= len(buf):
            raise DecodeError("the bytes end inside a varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >> bits:
                raise DecodeError(f"varint {value} does not fit in {bits} bits")
            return value, pos
        shift += 7
    raise DecodeError(f"a varint of more than {limit} bytes for a {bits}-bit integer")


def zigzag(n: int, bits: int = 64) -> int:
    """The zigzag form of a signed integer: 0, -1, 1, -2, ... as 0, 1, 2, 3, ..."""
    return (n << 1) ^ (n >> (bits - 1)) if n < 0 else n << 1


def unzigzag(z: int) -> int:
    """The signed integer of a zigzag form."""
    return (z >> 1) ^ -(z & 1)


# ---- frames ----------------------------------------------------------------------------

def write_frame(out: bytearray, payload) -> None:
    """Appends one frame holding `payload`."""
    out += _pack_u32(len(payload))
    out += payload


def encode_frame(out: bytearray, encode_value: Callable, value: Any) -> None:
    """Appends `value` as one frame, encoded in place by `encode_value` (an `encoder(ty)`)."""
    start = len(out)
    out += b"\0\0\0\0"
    try:
        encode_value(value, out)
    except BaseException:
        del out[start:]
        raise
    _pack_into_u32(out, start, len(out) - start - 4)


class Frames:
    """A cursor over a buffer of frames and `u32` counts (the per-kind layouts)."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def at_end(self) -> bool:
        return self.pos >= len(self.buf)

    def rest(self) -> int:
        """How many bytes are left."""
        return len(self.buf) - self.pos

    def next(self):
        """The next frame's payload (a memoryview-free `bytes` slice), or `None` when fewer
        than a whole frame's bytes are left."""
        buf, pos = self.buf, self.pos
        if pos + 4 > len(buf):
            return None
        (n,) = _unpack_u32(buf, pos)
        end = pos + 4 + n
        if end > len(buf):
            return None
        self.pos = end
        return buf[pos + 4:end]

    def read_u32(self):
        """A `u32` count (little-endian), or `None` when fewer than 4 bytes are left."""
        pos = self.pos
        if pos + 4 > len(self.buf):
            return None
        self.pos = pos + 4
        return _unpack_u32(self.buf, pos)[0]

    def __iter__(self) -> Iterator:
        while True:
            frame = self.next()
            if frame is None:
                return
            yield frame


def frames(buf) -> list:
    """The payloads of a partition's frames; `DecodeError` when it ends in a truncated frame."""
    cursor = Frames(buf)
    out = list(cursor)
    if not cursor.at_end():
        raise DecodeError(f"input ends with a truncated frame of {cursor.rest()} bytes")
    return out


def read_u32(buf, pos: int) -> tuple:
    """A `u32` little-endian at `pos`: `(value, next pos)`."""
    if pos + 4 > len(buf):
        raise DecodeError("the bytes end inside a u32")
    return _unpack_u32(buf, pos)[0], pos + 4


# ---- encoders --------------------------------------------------------------------------

_encoders: dict = {}
_decoders: dict = {}


def encoder(ty) -> Callable[[Any, bytearray], None]:
    """A function appending the postcard of a value of `ty` (a hint or a `TypeDesc`) to a
    `bytearray`; it raises `EncodeError` for a value that does not fit."""
    desc = td.describe(ty)
    try:
        return _encoders[desc]
    except KeyError:
        pass
    built = _build_encoder(desc)
    _encoders[desc] = built
    return built


def _int_range(signed: bool, bits: int) -> tuple:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _check_int(value, lo: int, hi: int, name: str) -> int:
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            if hasattr(value, "__index__") and not isinstance(value, (bool, float)):
                value = value.__index__()
            else:
                raise EncodeError(f"{value!r} is not an integer ({name})")
    if value < lo or value > hi:
        raise EncodeError(f"{value} does not fit in {name}")
    return value


def _build_encoder(desc: td.TypeDesc) -> Callable:
    name = desc.rust_name()
    if isinstance(desc, td.Unit):
        def enc_unit(value, out):
            if value is not None and value != ():
                raise EncodeError(f"{value!r} is not () (None)")
        return enc_unit
    if isinstance(desc, td.Bool):
        def enc_bool(value, out):
            if value is True:
                out.append(1)
            elif value is False:
                out.append(0)
            else:
                raise EncodeError(f"{value!r} is not a bool")
        return enc_bool
    if isinstance(desc, td.Unsigned):
        lo, hi = _int_range(False, desc.bits)
        if desc.bits == 8:
            def enc_u8(value, out):
                out.append(_check_int(value, lo, hi, name))
            return enc_u8

        def enc_unsigned(value, out):
            if type(value) is not int or value < 0 or value > hi:
                value = _check_int(value, lo, hi, name)
            if value < 0x80:
                out.append(value)
                return
            while value >= 0x80:
                out.append((value & 0x7F) | 0x80)
                value >>= 7
            out.append(value)
        return enc_unsigned
    if isinstance(desc, td.Signed):
        lo, hi = _int_range(True, desc.bits)
        shift = desc.bits - 1
        if desc.bits == 8:
            def enc_i8(value, out):
                out.append(_check_int(value, lo, hi, name) & 0xFF)
            return enc_i8

        def enc_signed(value, out):
            value = _check_int(value, lo, hi, name)
            write_varint(out, (value << 1) ^ (value >> shift) if value < 0 else value << 1)
        return enc_signed
    if isinstance(desc, td.F32):
        def enc_f32(value, out):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise EncodeError(f"{value!r} is not a number (f32)")
            try:
                out += _pack_f32(value)
            except OverflowError as err:
                raise EncodeError(f"{value!r} does not fit in f32") from err
        return enc_f32
    if isinstance(desc, td.F64):
        def enc_f64(value, out):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise EncodeError(f"{value!r} is not a number (f64)")
            out += _pack_f64(value)
        return enc_f64
    if isinstance(desc, td.Char):
        def enc_char(value, out):
            if not isinstance(value, str) or len(value) != 1:
                raise EncodeError(f"{value!r} is not one character (char)")
            data = value.encode("utf-8")
            out.append(len(data))
            out += data
        return enc_char
    if isinstance(desc, td.Text):
        def enc_text(value, out):
            if type(value) is not str:
                if not isinstance(value, str):
                    raise EncodeError(f"{value!r} is not a str")
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError as err:  # a lone surrogate
                raise EncodeError(f"{value!r} is not valid Unicode: {err}") from err
            n = len(data)
            if n < 0x80:
                out.append(n)
            else:
                write_varint(out, n)
            out += data
        return enc_text
    if isinstance(desc, td.Bytes):
        def enc_bytes(value, out):
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise EncodeError(f"{value!r} is not bytes")
            write_varint(out, len(value))
            out += value
        return enc_bytes
    if isinstance(desc, td.Option):
        inner = encoder(desc.inner)

        def enc_option(value, out):
            if value is None:
                out.append(0)
            else:
                out.append(1)
                inner(value, out)
        return enc_option
    if isinstance(desc, td.Seq):
        inner = encoder(desc.inner)

        def enc_seq(value, out):
            if isinstance(value, (str, bytes, bytearray)) or not hasattr(value, "__len__"):
                if isinstance(value, (str, bytes, bytearray)) or not hasattr(value, "__iter__"):
                    raise EncodeError(f"{value!r} is not a sequence ({name})")
                value = list(value)
            write_varint(out, len(value))
            for item in value:
                inner(item, out)
        return enc_seq
    if isinstance(desc, td.Tuple):
        items = tuple(encoder(item) for item in desc.items)
        count = len(items)
        if count == 2:
            first, second = items

            def enc_pair(value, out):
                try:
                    a, b = value
                except (TypeError, ValueError) as err:
                    raise EncodeError(f"{value!r} is not a 2-tuple ({name})") from err
                first(a, out)
                second(b, out)
            return enc_pair

        def enc_tuple(value, out):
            try:
                values = tuple(value)
            except TypeError as err:
                raise EncodeError(f"{value!r} is not a tuple ({name})") from err
            if len(values) != count:
                raise EncodeError(f"{value!r} has {len(values)} items, not {count} ({name})")
            for enc, item in zip(items, values):
                enc(item, out)
        return enc_tuple
    if isinstance(desc, td.Struct):
        fields = tuple((field, encoder(ty)) for field, ty in desc.fields)

        def enc_struct(value, out):
            for field, enc in fields:
                try:
                    item = getattr(value, field)
                except AttributeError:
                    if isinstance(value, dict) and field in value:
                        item = value[field]
                    else:
                        raise EncodeError(f"{value!r} has no field `{field}` ({name})") from None
                enc(item, out)
        return enc_struct
    if isinstance(desc, td.Map):
        key, val = encoder(desc.key), encoder(desc.value)

        def enc_map(value, out):
            try:
                entries = value.items()
            except AttributeError:
                raise EncodeError(f"{value!r} is not a mapping ({name})") from None
            write_varint(out, len(value))
            for k, v in entries:
                key(k, out)
                val(v, out)
        return enc_map
    if isinstance(desc, td.Enum):
        cls = desc.cls
        index = {variant: at for at, variant in enumerate(desc.variants)}

        def enc_enum(value, out):
            if cls is not None and isinstance(value, cls):
                at = index[value.name]
            elif isinstance(value, str) and value in index:
                at = index[value]
            else:
                raise EncodeError(f"{value!r} is not a variant of {name}")
            write_varint(out, at)
        return enc_enum
    raise TypeError(f"no encoder for {desc!r}")


# ---- decoders --------------------------------------------------------------------------

def decoder(ty) -> Callable[[Any, int], tuple]:
    """A function reading one value of `ty` (a hint or a `TypeDesc`) at a position of a
    buffer: `(value, next position)`; it raises `DecodeError` for bytes that do not fit."""
    desc = td.describe(ty)
    try:
        return _decoders[desc]
    except KeyError:
        pass
    built = _build_decoder(desc)
    _decoders[desc] = built
    return built


def _takes_bytes(desc: td.TypeDesc) -> bool:
    """Whether every value of `desc` takes at least one byte."""
    if isinstance(desc, td.Unit):
        return False
    if isinstance(desc, td.Tuple):
        return any(_takes_bytes(item) for item in desc.items)
    if isinstance(desc, td.Struct):
        return any(_takes_bytes(ty) for _, ty in desc.fields)
    return True


def _eof() -> DecodeError:
    return DecodeError("the bytes end inside the value")


def _build_decoder(desc: td.TypeDesc) -> Callable:
    name = desc.rust_name()
    if isinstance(desc, td.Unit):
        def dec_unit(buf, pos):
            return None, pos
        return dec_unit
    if isinstance(desc, td.Bool):
        def dec_bool(buf, pos):
            if pos >= len(buf):
                raise _eof()
            byte = buf[pos]
            if byte > 1:
                raise DecodeError(f"a bool is 0 or 1, not {byte}")
            return byte == 1, pos + 1
        return dec_bool
    if isinstance(desc, td.Unsigned):
        bits = desc.bits
        if bits == 8:
            def dec_u8(buf, pos):
                if pos >= len(buf):
                    raise _eof()
                return buf[pos], pos + 1
            return dec_u8

        def dec_unsigned(buf, pos):
            if pos < len(buf) and buf[pos] < 0x80:
                return buf[pos], pos + 1
            return read_varint(buf, pos, bits)
        return dec_unsigned
    if isinstance(desc, td.Signed):
        bits = desc.bits
        if bits == 8:
            def dec_i8(buf, pos):
                if pos >= len(buf):
                    raise _eof()
                byte = buf[pos]
                return byte - 256 if byte >= 128 else byte, pos + 1
            return dec_i8

        def dec_signed(buf, pos):
            z, pos = read_varint(buf, pos, bits)
            return (z >> 1) ^ -(z & 1), pos
        return dec_signed
    if isinstance(desc, td.F32):
        def dec_f32(buf, pos):
            if pos + 4 > len(buf):
                raise _eof()
            return _unpack_f32(buf, pos)[0], pos + 4
        return dec_f32
    if isinstance(desc, td.F64):
        def dec_f64(buf, pos):
            if pos + 8 > len(buf):
                raise _eof()
            return _unpack_f64(buf, pos)[0], pos + 8
        return dec_f64
    if isinstance(desc, (td.Text, td.Char)):
        is_char = isinstance(desc, td.Char)

        def dec_text(buf, pos):
            if pos < len(buf) and buf[pos] < 0x80:
                n = buf[pos]
                pos += 1
            else:
                n, pos = read_varint(buf, pos, 64)
            end = pos + n
            if end > len(buf):
                raise _eof()
            try:
                text = str(buf[pos:end], "utf-8")
            except UnicodeDecodeError as err:
                raise DecodeError(f"a string that is not UTF-8: {err}") from None
            if is_char and len(text) != 1:
                raise DecodeError(f"a char is one character, not {text!r}")
            return text, end
        return dec_text
    if isinstance(desc, td.Bytes):
        def dec_bytes(buf, pos):
            n, pos = read_varint(buf, pos, 64)
            end = pos + n
            if end > len(buf):
                raise _eof()
            return bytes(buf[pos:end]), end
        return dec_bytes
    if isinstance(desc, td.Option):
        inner = decoder(desc.inner)

        def dec_option(buf, pos):
            if pos >= len(buf):
                raise _eof()
            tag = buf[pos]
            if tag == 0:
                return None, pos + 1
            if tag == 1:
                return inner(buf, pos + 1)
            raise DecodeError(f"an Option's tag is 0 or 1, not {tag}")
        return dec_option
    if isinstance(desc, td.Seq):
        inner = decoder(desc.inner)
        nonempty = _takes_bytes(desc.inner)

        def dec_seq(buf, pos):
            n, pos = read_varint(buf, pos, 64)
            if n > len(buf) - pos and nonempty:
                raise _eof()  # each element takes at least one byte: not a count to trust
            items = []
            for _ in range(n):
                item, pos = inner(buf, pos)
                items.append(item)
            return items, pos
        return dec_seq
    if isinstance(desc, td.Tuple):
        items = tuple(decoder(item) for item in desc.items)
        if len(items) == 2:
            first, second = items

            def dec_pair(buf, pos):
                a, pos = first(buf, pos)
                b, pos = second(buf, pos)
                return (a, b), pos
            return dec_pair

        def dec_tuple(buf, pos):
            values = []
            for dec in items:
                value, pos = dec(buf, pos)
                values.append(value)
            return tuple(values), pos
        return dec_tuple
    if isinstance(desc, td.Struct):
        fields = tuple(decoder(ty) for _, ty in desc.fields)
        names = tuple(field for field, _ in desc.fields)
        cls = desc.cls

        def dec_struct(buf, pos):
            values = []
            for dec in fields:
                value, pos = dec(buf, pos)
                values.append(value)
            if cls is None:
                return dict(zip(names, values)), pos
            return cls(*values), pos
        return dec_struct
    if isinstance(desc, td.Map):
        key, val = decoder(desc.key), decoder(desc.value)
        nonempty = _takes_bytes(desc.key) or _takes_bytes(desc.value)

        def dec_map(buf, pos):
            n, pos = read_varint(buf, pos, 64)
            if n > len(buf) - pos and nonempty:
                raise _eof()
            out = {}
            for _ in range(n):
                k, pos = key(buf, pos)
                v, pos = val(buf, pos)
                out[k] = v
            return out, pos
        return dec_map
    if isinstance(desc, td.Enum):
        cls = desc.cls
        variants = tuple(desc.variants)
        members = tuple(cls[variant] for variant in variants) if cls is not None else variants

        def dec_enum(buf, pos):
            at, pos = read_varint(buf, pos, 32)
            if at >= len(members):
                raise DecodeError(f"variant {at} of {name}, which has {len(members)}")
            return members[at], pos
        return dec_enum
    raise TypeError(f"no decoder for {desc!r}")


# ---- one value -------------------------------------------------------------------------

def encode(ty, value) -> bytes:
    """The postcard bytes of `value` as a `ty` (a hint or a `TypeDesc`)."""
    out = bytearray()
    encoder(ty)(value, out)
    return bytes(out)


def decode(ty, data, *, exact: bool = True):
    """The value of type `ty` that `data` encodes. With `exact` (the default), bytes left over
    are an error; without it they are ignored, as `postcard::from_bytes` ignores them."""
    value, pos = decoder(ty)(data, 0)
    if exact and pos != len(data):
        raise DecodeError(f"{len(data) - pos} bytes left after the value")
    return value
