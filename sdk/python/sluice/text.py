"""Text helpers that behave exactly as their Rust counterparts, so that a Python plugin's
output is byte for byte a Rust plugin's."""

from __future__ import annotations

import re

__all__ = ["split_whitespace", "WHITESPACE"]

#: Unicode White_Space, what Rust's `char::is_whitespace` and `str::split_whitespace` use.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WORD = re.compile("[^" + re.escape(WHITESPACE) + "]+")
# Python's str.split() also splits at these four (the ASCII separators), Rust does not.
_PY_ONLY = ("\x1c", "\x1d", "\x1e", "\x1f")


def split_whitespace(text: str) -> list:
    """The words of `text` as Rust's `str::split_whitespace` finds them: the runs of
    characters that are not Unicode White_Space. `str.split()` is the same except that it also
    splits at U+001C..U+001F, so it is used unless one of those is present."""
    for separator in _PY_ONLY:
        if separator in text:
            return _WORD.findall(text)
    return text.split()
