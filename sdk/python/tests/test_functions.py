"""The decorators and the per-kind runners over partition bytes, in plain CPython (no wasm):
the layouts of `sdk/src/abi.rs`, params frames, the fallible trailer, errors with tracebacks,
and the Python word count (`plugins/wordcount-py/app.py`)."""

import importlib.util
import os
import struct
import sys
import unittest
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import sluice  # noqa: E402
from sluice import codec, functions, host, typedesc as td  # noqa: E402
from sluice import u32, u64  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))


def frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


def s(text: str) -> bytes:
    """The postcard of a string."""
    data = text.encode()
    out = bytearray()
    codec.write_varint(out, len(data))
    return bytes(out) + data


def v(n: int) -> bytes:
    """The postcard of a u64."""
    out = bytearray()
    codec.write_varint(out, n)
    return bytes(out)


def count(n: int) -> bytes:
    return struct.pack("<I", n)


def partition(*payloads: bytes) -> bytes:
    return b"".join(frame(p) for p in payloads)


def call(name: str, data: bytes) -> bytes:
    return functions.call(name, data)


def failed(name: str, data: bytes) -> str:
    with unittest.TestCase().assertRaises(functions.CallFailed) as caught:
        functions.call(name, data)
    return caught.exception.message


class Registered(unittest.TestCase):
    """Restores the registry after each test, so tests can register freely."""

    def setUp(self):
        self._saved = dict(functions.registry)

    def tearDown(self):
        functions.registry.clear()
        functions.registry.update(self._saved)


class WordCount(unittest.TestCase):
    """The Python twin of plugins/wordcount: same names, types and bytes."""

    @classmethod
    def setUpClass(cls):
        for name in ("split_words", "sum", "subtract"):
            functions.registry.pop(name, None)
        spec = importlib.util.spec_from_file_location("wordcount_py_app", os.path.join(ROOT, "plugins", "wordcount-py", "app.py"))
        cls.app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cls.app)

    def test_describe_matches_the_rust_plugin(self):
        described = {f["name"]: f for f in self.app.Functions().describe()}
        self.assertEqual(described["split_words"]["kind"], "flat_map")
        self.assertEqual(described["split_words"]["input"], [("text",)])
        self.assertEqual(described["split_words"]["output"], [("tuple", [1, 2]), ("text",), ("unsigned", 64)])
        for name in ("sum", "subtract"):
            self.assertEqual(described[name]["kind"], "reduce")
            self.assertEqual(described[name]["input"], [("unsigned", 64)])
            self.assertEqual(described[name]["output"], [("unsigned", 64)])
            self.assertIsNone(described[name]["params"])
            self.assertFalse(described[name]["fallible"])

    def test_split_words_emits_word_one_frames(self):
        out = self.app.Functions().call("split_words", partition(s("hello world"), s(""), s("  a\tb\n")))
        expected = partition(s("hello") + v(1), s("world") + v(1), s("a") + v(1), s("b") + v(1))
        self.assertEqual(out, expected)

    def test_split_words_splits_where_rust_split_whitespace_does(self):
        # U+3000, NBSP, NEL and U+2028 are Unicode White_Space; U+001C..U+001F are not
        # (Python's str.split() would split there).
        line = "a\u3000b\xa0c\x85d\u2028e f\x1cg\x1fh"
        out = self.app.Functions().call("split_words", partition(s(line)))
        words = ["a", "b", "c", "d", "e", "f\x1cg\x1fh"]
        self.assertEqual(out, partition(*(s(w) + v(1) for w in words)))
        self.assertEqual(sluice.split_whitespace(" x  y "), ["x", "y"])
        self.assertEqual(sluice.split_whitespace(""), [])

    def test_sum_and_subtract_over_groups(self):
        groups = count(3) + partition(v(1), v(2), v(3)) + count(1) + partition(v(300))
        self.assertEqual(self.app.Functions().call("sum", groups), partition(v(6), v(300)))
        self.assertEqual(self.app.Functions().call("subtract", count(2) + partition(v(10), v(4))), partition(v(6)))

    def test_overflow_wraps_as_the_rust_release_build(self):
        self.assertEqual(call("sum", count(2) + partition(v(2**64 - 1), v(2))), partition(v(1)))
        self.assertEqual(call("subtract", count(2) + partition(v(0), v(1))), partition(v(2**64 - 1)))


class Layouts(Registered):
    def test_map(self):
        @sluice.map
        def t_upper(line: str) -> str:
            return line.upper()

        self.assertEqual(call("t_upper", partition(s("ab"), s("é"))), partition(s("AB"), s("É")))
        self.assertEqual(call("t_upper", b""), b"")

    def test_flat_map_zero_or_more_frames_per_record(self):
        @sluice.flat_map
        def t_repeat(n: u32) -> Iterator[u32]:
            yield from range(n)

        self.assertEqual(call("t_repeat", partition(v(0), v(2), v(1))), partition(v(0), v(1), v(0)))

    def test_flat_map_returning_a_list(self):
        @sluice.flat_map
        def t_chars(word: str) -> list[sluice.char]:
            return list(word)

        self.assertEqual(call("t_chars", partition(s("hé"))), partition(s("h"), s("é")))
        self.assertEqual(functions.registry["t_chars"].output, td.Char())

    def test_filter_one_byte_per_record(self):
        @sluice.filter
        def t_long(line: str) -> bool:
            return len(line) > 1

        self.assertEqual(call("t_long", partition(s("a"), s("bb"), s(""), s("ccc"))), b"\x00\x01\x00\x01")
        self.assertEqual(functions.registry["t_long"].output, td.Text())

    def test_reduce_one_frame_per_group(self):
        @sluice.reduce
        def t_concat(a: str, b: str) -> str:
            return a + b

        data = count(2) + partition(s("a"), s("b")) + count(1) + partition(s("c")) + count(3) + partition(s("x"), s("y"), s("z"))
        self.assertEqual(call("t_concat", data), partition(s("ab"), s("c"), s("xyz")))

    def test_reduce_errors(self):
        @sluice.reduce
        def t_add(a: u64, b: u64) -> u64:
            return a + b

        self.assertEqual(failed("t_add", count(0)), "empty group")
        self.assertEqual(failed("t_add", count(2) + partition(v(1))), "group ends early at value 1")
        self.assertIn("truncated frame of 2 bytes", failed("t_add", count(1) + partition(v(1)) + b"\x01\x00"))

    def test_keyed_records_are_key_then_value_in_one_frame(self):
        @sluice.map
        def t_swap(pair: tuple[str, u64]) -> tuple[u64, str]:
            word, n = pair
            return n, word

        self.assertEqual(call("t_swap", partition(s("a") + v(300))), partition(v(300) + s("a")))

    def test_key_by_and_timestamp(self):
        @sluice.key_by
        def t_first(line: str) -> str:
            return line[:1]

        @sluice.timestamp
        def t_time(line: str) -> u64:
            return int(line)

        self.assertEqual(call("t_first", partition(s("xy"), s(""))), partition(s("x"), s("")))
        self.assertEqual(call("t_time", partition(s("1700000000000"))), partition(v(1700000000000)))
        self.assertEqual(functions.registry["t_time"].output, td.Unsigned(64))

    def test_map_partitions_all_records_at_once(self):
        @sluice.map_partitions
        def t_count(lines: list[str]) -> Iterable[u64]:
            return [len(lines)]

        self.assertEqual(call("t_count", partition(s("a"), s("b"), s("c"))), partition(v(3)))
        self.assertEqual(functions.registry["t_count"].input, td.Text())

    def test_update_state_per_key(self):
        @sluice.update_state
        def t_total(values: list[u64], state: Optional[u64]) -> Optional[u64]:
            total = (state or 0) + sum(values)
            return None if total == 0 else total

        none, some = b"\x00", b"\x01"
        data = (count(2) + partition(v(1), v(2)) + frame(none)            # new key: 3
                + count(1) + partition(v(5)) + frame(some + v(10))        # 15
                + count(0) + frame(none))                                 # nothing: delete
        self.assertEqual(call("t_total", data), partition(some + v(3), some + v(15), none))
        self.assertEqual(functions.registry["t_total"].input, td.Unsigned(64))
        self.assertEqual(functions.registry["t_total"].output, td.Unsigned(64))
        self.assertEqual(failed("t_total", count(1) + partition(v(1))), "a key has no state frame")

    def test_map_with_state_per_key(self):
        @sluice.map_with_state
        def t_session(key: str, values: list[u64], state: Optional[u64]) -> tuple[Optional[u64], list[str]]:
            if not values:  # timed out
                return None, [f"{key}:{state}"]
            return (state or 0) + len(values), []

        data = (frame(s("a")) + count(2) + partition(v(7), v(8)) + frame(b"\x00")
                + frame(s("b")) + count(0) + frame(b"\x01" + v(4)))
        expected = (frame(b"\x01" + v(2)) + count(0)
                    + frame(b"\x00") + count(1) + frame(s("b:4")))
        self.assertEqual(call("t_session", data), expected)
        info = functions.registry["t_session"]
        self.assertEqual(info.input, td.Tuple((td.Text(), td.Unsigned(64))))
        self.assertEqual(info.output, td.Text())

    def test_structs_in_and_out(self):
        @dataclass
        class Word:
            text: str
            count: u64

        @sluice.map
        def t_word(line: str) -> Word:
            return Word(line, len(line))

        @sluice.map
        def t_text(word: Word) -> str:
            return word.text * word.count

        self.assertEqual(call("t_word", partition(s("ab"))), partition(s("ab") + v(2)))
        self.assertEqual(call("t_text", partition(s("ab") + v(2))), partition(s("abab")))
        self.assertEqual(td.flatten(functions.registry["t_word"].output),
                         [("structure", "Word", [("text", 1), ("count", 2)]), ("text",), ("unsigned", 64)])


class Params(Registered):
    def test_a_params_frame_comes_first(self):
        @dataclass
        class Cut:
            min_len: u32
            suffix: str

        seen = []

        @sluice.flat_map
        def t_cut(line: str, params: Cut) -> list[str]:
            seen.append(params)
            return [line + params.suffix] if len(line) >= params.min_len else []

        entry = functions.registry["t_cut"]
        self.assertEqual(entry.params, td.describe(Cut))
        self.assertEqual(entry.input, td.Text())
        params = frame(v(2) + s("!"))
        self.assertEqual(call("t_cut", params + partition(s("a"), s("bb"))), partition(s("bb!")))
        self.assertEqual(call("t_cut", params + partition(s("ccc"))), partition(s("ccc!")))
        self.assertIs(seen[0], seen[-1])  # decoded once per distinct value
        self.assertEqual(failed("t_cut", b""), "the call carries no parameters frame")
        self.assertIn("the parameters do not decode as Cut", failed("t_cut", frame(b"\x80")))

    def test_reduce_with_params(self):
        @sluice.reduce
        def t_capped(a: u64, b: u64, cap: u64) -> u64:
            return min(a + b, cap)

        self.assertEqual(call("t_capped", frame(v(5)) + count(3) + partition(v(2), v(2), v(2))), partition(v(5)))


class Fallible(Registered):
    @staticmethod
    def trailer(*failures) -> bytes:
        frames = b"".join(frame(v(index) + s(message)) for index, message in failures)
        return frames + struct.pack("<I", len(frames))

    def test_map_failures_go_to_the_trailer(self):
        @sluice.map(fallible=True)
        def t_parse(line: str) -> u64:
            return int(line)

        out = call("t_parse", partition(s("1"), s("x"), s("3")))
        message = "ValueError: invalid literal for int() with base 10: 'x'"
        self.assertEqual(out, partition(v(1), v(3)) + self.trailer((1, message)))
        self.assertTrue(functions.registry["t_parse"].fallible)
        self.assertEqual(call("t_parse", partition(s("7"))), partition(v(7)) + b"\x00\x00\x00\x00")

    def test_filter_failures_keep_byte_zero(self):
        @sluice.filter(fallible=True)
        def t_check(line: str) -> bool:
            if line == "bad":
                raise RuntimeError("bad line")
            return True

        out = call("t_check", partition(s("ok"), s("bad"), s("ok")))
        self.assertEqual(out, b"\x01\x00\x01" + self.trailer((1, "RuntimeError: bad line")))

    def test_flat_map_failure_drops_what_the_record_emitted(self):
        @sluice.flat_map(fallible=True)
        def t_words(line: str) -> Iterator[str]:
            for word in line.split():
                if word == "!":
                    raise ValueError("bang")
                yield word

        out = call("t_words", partition(s("a b"), s("c ! d"), s("e")))
        self.assertEqual(out, partition(s("a"), s("b"), s("e")) + self.trailer((1, "ValueError: bang")))


class Errors(Registered):
    def test_an_exception_fails_the_call_with_its_traceback(self):
        def helper(line):
            raise ValueError(f"cannot handle {line!r}")

        @sluice.map
        def t_explode(line: str) -> str:
            if line == "boom":
                helper(line)
            return line

        message = failed("t_explode", partition(s("a"), s("boom")))
        first, _, trace = message.partition("\n\n")
        self.assertEqual(first, "t_explode: input record 1: ValueError: cannot handle 'boom'")
        self.assertTrue(trace.startswith("Traceback (most recent call last):\n"), trace)
        self.assertIn("in t_explode\n    helper(line)\n", trace)
        self.assertIn('in helper\n    raise ValueError(f"cannot handle {line!r}")\n', trace)
        self.assertTrue(trace.endswith("ValueError: cannot handle 'boom'"), trace)
        self.assertNotIn("sluice/functions.py", trace)  # the SDK's own frames are left out

    def test_chained_exceptions_are_shown(self):
        @sluice.map
        def t_chain(line: str) -> str:
            try:
                return {}[line]
            except KeyError as err:
                raise RuntimeError("lookup failed") from err

        message = failed("t_chain", partition(s("k")))
        self.assertIn("KeyError: 'k'\n\nThe above exception was the direct cause of the following exception:", message)
        self.assertTrue(message.endswith("RuntimeError: lookup failed"))

    def test_bad_input_bytes_are_plain_messages(self):
        @sluice.map
        def t_id(line: str) -> str:
            return line

        self.assertEqual(failed("t_id", partition(s("a"), b"\x02\xc3\x28")),
                         "input record 1 does not decode as String: a string that is not UTF-8: "
                         "'utf-8' codec can't decode byte 0xc3 in position 0: invalid continuation byte")
        self.assertEqual(failed("t_id", partition(s("a")) + b"\x05\x00\x00\x00ab"), "input ends with a truncated frame of 6 bytes")
        self.assertIn("the value runs past its frame", failed("t_id", frame(b"\x05abc") + frame(b"de")))

    def test_output_that_does_not_fit_its_type(self):
        @sluice.map
        def t_negative(line: str) -> u64:
            return -1

        self.assertEqual(failed("t_negative", partition(s("a"))),
                         "t_negative: the output of input record 0 does not encode as u64: -1 does not fit in u64")

    def test_unknown_function(self):
        self.assertIn("the plugin has no function `nope` (it has: ", failed("nope", b""))

    def test_decorator_errors(self):
        with self.assertRaisesRegex(TypeError, "`line` needs a type hint"):
            @sluice.map
            def t_nohint(line) -> str:
                return line
        with self.assertRaisesRegex(TypeError, "the return type needs a type hint"):
            @sluice.map
            def t_noreturn(line: str):
                return line
        with self.assertRaisesRegex(TypeError, "takes 2 arguments"):
            @sluice.reduce
            def t_arity(a: u64) -> u64:
                return a
        with self.assertRaisesRegex(TypeError, "one type"):
            @sluice.reduce
            def t_mixed(a: u64, b: str) -> u64:
                return a
        with self.assertRaisesRegex(TypeError, "only map, flat_map and filter"):
            @sluice.reduce(fallible=True)
            def t_fallible_reduce(a: u64, b: u64) -> u64:
                return a
        with self.assertRaisesRegex(TypeError, "not an iterable"):
            @sluice.flat_map
            def t_not_iterable(line: str) -> str:
                return line
        with self.assertRaisesRegex(TypeError, "Optional"):
            @sluice.update_state
            def t_state(values: list[u64], state: u64) -> u64:
                return state

        @sluice.map(name="t_dup")
        def first(line: str) -> str:
            return line
        with self.assertRaisesRegex(ValueError, "two functions are named `t_dup`"):
            @sluice.map(name="t_dup")
            def second(line: str) -> str:
                return line

    def test_decorated_functions_stay_callable(self):
        @sluice.map
        def t_plain(line: str) -> str:
            return line + "!"

        self.assertEqual(t_plain("a"), "a!")
        self.assertEqual(t_plain.__sluice__.kind, "map")


class Host(Registered):
    def setUp(self):
        super().setUp()
        host.local_logs.clear()
        host.local_metrics.clear()

    def test_logs_and_metrics_outside_a_component(self):
        @sluice.map
        def t_measured(line: str) -> str:
            sluice.counter("lines")
            sluice.counter("chars", len(line))
            sluice.gauge("last_len", len(line))
            sluice.histogram("len", len(line))
            sluice.log("debug", f"saw {line}")
            return line

        functions_ = sluice.plugin()()
        functions_.call("t_measured", partition(s("ab"), s("cde")))
        self.assertEqual(host.local_logs, [("debug", "saw ab"), ("debug", "saw cde")])
        self.assertEqual(host.local_metrics, [
            ("counter", "lines", 2.0, 2), ("counter", "chars", 5.0, 2),
            ("gauge", "last_len", 3.0, 0), ("histogram", "len", 5.0, 2),
        ])
        self.assertEqual(host.recorded(), [])
        with self.assertRaises(ValueError):
            sluice.log("loud", "x")
        sluice.warn("w")
        sluice.error("e")
        self.assertEqual(host.local_logs[-2:], [("warn", "w"), ("error", "e")])


if __name__ == "__main__":
    unittest.main()
