"""The postcard codec against shared test vectors (`vectors.json`, which a Rust test reads too)
and its edge cases. Plain CPython: `python3 -m unittest discover -s sdk/python/tests`.

`vectors.json` is a list of `{"type": name, "value": json, "hex": postcard bytes}`, derived by
hand from postcard's wire format (https://postcard.jamesmunns.com/wire-format). Type names read
like Rust, without spaces: `u8`..`u64`, `i8`..`i64`, `bool`, `f32`, `f64`, `char`, `str`
(`String`), `()`, `Option<T>`, `Vec<T>`, `Map<K,V>` (`BTreeMap`, a JSON object), and tuples
`(A,B,...)` (JSON arrays). `Vec<u8>` encodes exactly as bytes.
"""

import json
import math
import os
import sys
import unittest
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import sluice  # noqa: E402
from sluice import codec, typedesc as td  # noqa: E402
from sluice.typedesc import char, f32, i8, i16, i32, i64, u8, u16, u32, u64  # noqa: E402

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")

_PRIMITIVES = {
    "u8": td.Unsigned(8), "u16": td.Unsigned(16), "u32": td.Unsigned(32), "u64": td.Unsigned(64),
    "u128": td.Unsigned(128), "i8": td.Signed(8), "i16": td.Signed(16), "i32": td.Signed(32),
    "i64": td.Signed(64), "i128": td.Signed(128), "bool": td.Bool(), "f32": td.F32(), "f64": td.F64(),
    "char": td.Char(), "str": td.Text(), "String": td.Text(), "()": td.Unit(), "bytes": td.Bytes(),
}


def parse_type(name: str) -> td.TypeDesc:
    """A vectors.json type name as a TypeDesc."""
    desc, rest = _parse(name.replace(" ", ""))
    if rest:
        raise ValueError(f"trailing {rest!r} in {name!r}")
    return desc


def _parse(text: str):
    if text.startswith("()"):
        return td.Unit(), text[2:]
    if text.startswith("("):
        items = []
        text = text[1:]
        while True:
            item, text = _parse(text)
            items.append(item)
            if text.startswith(","):
                text = text[1:]
                if text.startswith(")"):
                    return td.Tuple(tuple(items)), text[1:]
                continue
            if text.startswith(")"):
                return td.Tuple(tuple(items)), text[1:]
            raise ValueError(f"bad tuple at {text!r}")
    for generic, arity in (("Option<", 1), ("Vec<", 1), ("Map<", 2)):
        if text.startswith(generic):
            text = text[len(generic):]
            args = []
            for at in range(arity):
                arg, text = _parse(text)
                args.append(arg)
                expected = "," if at < arity - 1 else ">"
                if not text.startswith(expected):
                    raise ValueError(f"expected {expected!r} at {text!r}")
                text = text[1:]
            if generic == "Option<":
                return td.Option(args[0]), text
            if generic == "Vec<":
                return td.Seq(args[0]), text
            return td.Map(args[0], args[1]), text
    end = len(text)
    for stop in ",)>":
        at = text.find(stop)
        if at != -1:
            end = min(end, at)
    word = text[:end]
    if word not in _PRIMITIVES:
        raise ValueError(f"unknown type {word!r}")
    return _PRIMITIVES[word], text[end:]


def to_json(value):
    """A decoded value as JSON would hold it (tuples as lists)."""
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    return value


def from_json(desc: td.TypeDesc, value):
    """A JSON value as the Python value of `desc` (lists as tuples where `desc` is a tuple)."""
    if value is None:
        return None
    if isinstance(desc, td.Option):
        return from_json(desc.inner, value)
    if isinstance(desc, td.Tuple):
        return tuple(from_json(item, v) for item, v in zip(desc.items, value))
    if isinstance(desc, td.Seq):
        return [from_json(desc.inner, v) for v in value]
    if isinstance(desc, td.Map):
        return {k: from_json(desc.value, v) for k, v in value.items()}
    return value


class SharedVectors(unittest.TestCase):
    def test_every_vector_encodes_and_decodes(self):
        with open(VECTORS, encoding="utf-8") as f:
            vectors = json.load(f)
        self.assertGreater(len(vectors), 50)
        for vector in vectors:
            with self.subTest(type=vector["type"], value=vector["value"]):
                self.assertEqual(set(vector), {"type", "value", "hex"})
                desc = parse_type(vector["type"])
                value = from_json(desc, vector["value"])
                expected = bytes.fromhex(vector["hex"])
                self.assertEqual(codec.encode(desc, value).hex(), expected.hex())
                decoded = codec.decode(desc, expected)
                if isinstance(value, float):
                    self.assertEqual(math.copysign(1, decoded), math.copysign(1, value))
                    if isinstance(desc, td.F32):
                        self.assertEqual(decoded, value)  # the vectors' f32s are exact
                self.assertEqual(to_json(decoded), to_json(value))

    def test_type_names_parse(self):
        self.assertEqual(parse_type("(str,u64)"), td.Tuple((td.Text(), td.Unsigned(64))))
        self.assertEqual(parse_type("Option<Vec<u64>>"), td.Option(td.Seq(td.Unsigned(64))))
        self.assertEqual(parse_type("Map<str,(i8,bool)>"),
                         td.Map(td.Text(), td.Tuple((td.Signed(8), td.Bool()))))


class Varints(unittest.TestCase):
    def test_write_varint(self):
        cases = {0: "00", 1: "01", 127: "7f", 128: "8001", 300: "ac02", 16384: "808001",
                 2**64 - 1: "ffffffffffffffffff01"}
        for n, hex_ in cases.items():
            out = bytearray()
            codec.write_varint(out, n)
            self.assertEqual(out.hex(), hex_, n)
            self.assertEqual(codec.read_varint(bytes.fromhex(hex_), 0), (n, len(hex_) // 2))

    def test_zigzag(self):
        for n, z in {0: 0, -1: 1, 1: 2, -2: 3, -64: 127, 64: 128, -(2**63): 2**64 - 1, 2**63 - 1: 2**64 - 2}.items():
            self.assertEqual(codec.zigzag(n), z, n)
            self.assertEqual(codec.unzigzag(z), n, z)

    def test_a_varint_too_long_or_too_large_is_refused(self):
        with self.assertRaises(codec.DecodeError):
            codec.decode(u32, bytes.fromhex("ffffffff1f"))  # 2**33 - 1
        with self.assertRaises(codec.DecodeError):
            codec.decode(u32, bytes.fromhex("8080808080"))  # six bytes would be needed
        with self.assertRaises(codec.DecodeError):
            codec.decode(u64, bytes.fromhex("ffffffffffffffffff02"))  # 2**65 - 1
        with self.assertRaises(codec.DecodeError):
            codec.decode(u16, bytes.fromhex("808004"))  # 65536
        with self.assertRaises(codec.DecodeError):
            codec.decode(u64, bytes.fromhex("80"))  # ends inside

    def test_u8_and_i8_are_raw_bytes(self):
        self.assertEqual(codec.encode(u8, 200), b"\xc8")
        self.assertEqual(codec.encode(i8, -56), b"\xc8")
        self.assertEqual(codec.decode(i8, b"\xc8"), -56)
        self.assertEqual(codec.decode(u8, b"\xc8"), 200)


class Values(unittest.TestCase):
    def test_out_of_range_integers_are_refused(self):
        for ty, value in ((u8, 256), (u8, -1), (u16, 65536), (u32, 2**32), (u64, 2**64), (u64, -1),
                          (i8, 128), (i8, -129), (i16, 2**15), (i32, -(2**31) - 1), (i64, 2**63), (int, -(2**63) - 1)):
            with self.subTest(ty=ty, value=value), self.assertRaises(codec.EncodeError):
                codec.encode(ty, value)

    def test_wrong_python_types_are_refused(self):
        for ty, value in ((u64, "1"), (u64, 1.0), (u64, True), (str, b"x"), (bytes, "x"), (bool, 1),
                          (tuple[str, u64], ("a",)), (list[str], "abc"), (char, "ab"), (float, "1")):
            with self.subTest(ty=ty, value=value), self.assertRaises(codec.EncodeError):
                codec.encode(ty, value)

    def test_plain_python_types(self):
        self.assertEqual(codec.encode(int, -1), b"\x01")  # int is i64
        self.assertEqual(codec.encode(float, 1.5).hex(), "000000000000f83f")
        self.assertEqual(codec.encode(f32, 1.5).hex(), "0000c03f")
        self.assertEqual(codec.encode(bytes, b"\x00\xff"), b"\x02\x00\xff")
        self.assertEqual(codec.encode(bytearray, bytearray(b"ab")), b"\x02ab")
        self.assertEqual(codec.encode(None, None), b"")
        self.assertEqual(codec.encode(Optional[str], None), b"\x00")
        self.assertEqual(codec.encode(str | None, "a"), b"\x01\x01a")
        self.assertEqual(codec.encode(tuple[u64, ...], [1, 2]), b"\x02\x01\x02")
        self.assertEqual(codec.encode(dict[str, i32], {"a": -1}), b"\x01\x01a\x01")
        self.assertEqual(codec.decode(dict[str, i32], b"\x01\x01a\x01"), {"a": -1})
        self.assertEqual(codec.decode(list[Optional[u8]], b"\x02\x00\x01\x07"), [None, 7])

    def test_strings_are_utf8_and_checked(self):
        self.assertEqual(codec.encode(str, "日本"), b"\x06" + "日本".encode())
        with self.assertRaises(codec.DecodeError):
            codec.decode(str, b"\x02\xc3\x28")
        with self.assertRaises(codec.EncodeError):
            codec.encode(str, "\ud800")  # a lone surrogate has no UTF-8
        with self.assertRaises(codec.DecodeError):
            codec.decode(str, b"\x05abc")  # ends early
        long = "x" * 300
        self.assertEqual(codec.encode(str, long)[:2], b"\xac\x02")
        self.assertEqual(codec.decode(str, codec.encode(str, long)), long)

    def test_bool_and_option_tags_are_checked(self):
        with self.assertRaises(codec.DecodeError):
            codec.decode(bool, b"\x02")
        with self.assertRaises(codec.DecodeError):
            codec.decode(Optional[u8], b"\x02\x00")

    def test_a_count_larger_than_the_bytes_is_refused_early(self):
        with self.assertRaises(codec.DecodeError):
            codec.decode(list[u64], bytes.fromhex("ffffffff0f00"))

    def test_exact_and_lenient_decoding(self):
        with self.assertRaises(codec.DecodeError):
            codec.decode(u8, b"\x01\x02")
        self.assertEqual(codec.decode(u8, b"\x01\x02", exact=False), 1)

    def test_structs_enums_and_named_tuples(self):
        @dataclass
        class Point:
            x: i32
            y: i32
            label: Optional[str]

        class Color(Enum):
            RED = "r"
            GREEN = "g"
            BLUE = "b"

        class Pair(NamedTuple):
            key: str
            count: u64

        point = Point(-1, 2, "p")
        data = codec.encode(Point, point)
        self.assertEqual(data.hex(), "0104" + "010170")
        self.assertEqual(codec.decode(Point, data), point)
        self.assertEqual(codec.encode(Color, Color.BLUE), b"\x02")
        self.assertIs(codec.decode(Color, b"\x01"), Color.GREEN)
        with self.assertRaises(codec.DecodeError):
            codec.decode(Color, b"\x03")
        self.assertEqual(codec.encode(Pair, Pair("a", 1)), b"\x01a\x01")
        self.assertEqual(codec.decode(Pair, b"\x01a\x01"), Pair("a", 1))
        self.assertEqual(codec.encode(list[Point], [point, point]), b"\x02" + data + data)


class Frames(unittest.TestCase):
    def test_frames_are_a_u32_length_then_the_bytes(self):
        out = bytearray()
        codec.encode_frame(out, codec.encoder(str), "hi")
        codec.write_frame(out, b"")
        self.assertEqual(out.hex(), "03000000026869" + "00000000")
        self.assertEqual(codec.frames(bytes(out)), [b"\x02hi", b""])

    def test_a_truncated_frame_is_an_error(self):
        with self.assertRaises(codec.DecodeError):
            codec.frames(b"\x09\x00\x00\x00\x01")
        with self.assertRaises(codec.DecodeError):
            codec.frames(b"\x01\x00")

    def test_a_failed_encode_leaves_the_buffer_as_it_was(self):
        out = bytearray(b"xy")
        with self.assertRaises(codec.EncodeError):
            codec.encode_frame(out, codec.encoder(tuple[str, u64]), ("a", -1))
        self.assertEqual(out, bytearray(b"xy"))


class Descriptions(unittest.TestCase):
    def test_hints_to_type_descs(self):
        self.assertEqual(td.describe(str), td.Text())
        self.assertEqual(td.describe(int), td.Signed(64))
        self.assertEqual(td.describe(u64), td.Unsigned(64))
        self.assertEqual(td.describe(bool), td.Bool())
        self.assertEqual(td.describe(float), td.F64())
        self.assertEqual(td.describe(f32), td.F32())
        self.assertEqual(td.describe(char), td.Char())
        self.assertEqual(td.describe(bytes), td.Bytes())
        self.assertEqual(td.describe(None), td.Unit())
        self.assertEqual(td.describe(Optional[u8]), td.Option(td.Unsigned(8)))
        self.assertEqual(td.describe(list[str]), td.Seq(td.Text()))
        self.assertEqual(td.describe(dict[str, u64]), td.Map(td.Text(), td.Unsigned(64)))
        self.assertEqual(str(td.describe(tuple[str, u64])), "(String, u64)")
        for bad in (list, dict, object, int | str, complex):
            with self.subTest(bad=bad), self.assertRaises(TypeError):
                td.describe(bad)

    def test_flatten_is_pre_order_root_first_as_the_rust_sdk(self):
        # the Rust wordcount's split_words output, as its describe gives it
        self.assertEqual(td.flatten(td.describe(tuple[str, u64])),
                         [("tuple", [1, 2]), ("text",), ("unsigned", 64)])
        self.assertEqual(td.flatten(td.describe(dict[str, Optional[list[i16]]])),
                         [("map", 1, 2), ("text",), ("option", 3), ("seq", 4), ("signed", 16)])

        @dataclass
        class Word:
            text: str
            count: u64

        self.assertEqual(td.flatten(td.describe(list[Word])),
                         [("seq", 1), ("structure", "Word", [("text", 2), ("count", 3)]), ("text",), ("unsigned", 64)])

    def test_sluice_exports_the_codec(self):
        self.assertEqual(sluice.encode(tuple[str, sluice.u64], ("a", 1)), b"\x01a\x01")
        self.assertEqual(sluice.decode(tuple[str, sluice.u64], b"\x01a\x01"), ("a", 1))


if __name__ == "__main__":
    unittest.main()
