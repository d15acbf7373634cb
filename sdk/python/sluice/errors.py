"""Formatting a Python exception with its traceback, for the host.

`traceback.format_exc()` is not used: in a componentize-py component built with `--stub-wasi`
(CPython 3.14), `TracebackException.format` traps, so the whole call would die with
"unreachable" instead of returning its error. This formatter needs only the frames and
`linecache` (which `sluice.component` keeps off the filesystem), and reads like Python's:

    Traceback (most recent call last):
      File "/0/app.py", line 12, in explode
        return helper(line)
      File "/0/app.py", line 8, in helper
        raise ValueError(f"cannot handle {line!r}")
    ValueError: cannot handle 'boom'
"""

from __future__ import annotations

import linecache
import os

__all__ = ["format_exception", "exception_line"]

_SDK_DIR = os.path.dirname(os.path.abspath(__file__))
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_MAX_FRAMES = 64
_MAX_CHAIN = 8


def exception_line(err: BaseException) -> str:
    """`ValueError: message`, as the last line of a traceback (with the module of a
    non-builtin exception type, and any notes)."""
    cls = type(err)
    name = cls.__qualname__
    module = getattr(cls, "__module__", "builtins")
    if module not in ("builtins", "__main__"):
        name = f"{module}.{name}"
    try:
        message = str(err)
    except Exception:
        message = "<the exception's str() raised>"
    line = f"{name}: {message}" if message else name
    notes = getattr(err, "__notes__", None)
    if isinstance(notes, (list, tuple)):
        line += "".join(f"\n{note}" for note in notes)
    return line


def _frames(tb, skip_sdk: bool) -> list:
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append((code.co_filename, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    if skip_sdk:
        # the SDK's runner that called the user's function comes first; leave it out
        while len(frames) > 1 and os.path.dirname(os.path.abspath(frames[0][0])) == _SDK_DIR:
            frames.pop(0)
    return frames


def _one(err: BaseException, skip_sdk: bool) -> str:
    out = []
    frames = _frames(err.__traceback__, skip_sdk)
    if frames:
        out.append("Traceback (most recent call last):\n")
        if len(frames) > _MAX_FRAMES:
            half = _MAX_FRAMES // 2
            omitted = len(frames) - _MAX_FRAMES
            frames = frames[:half] + [None] + frames[-half:]
        for frame in frames:
            if frame is None:
                out.append(f"  [... {omitted} more frames ...]\n")
                continue
            filename, lineno, name = frame
            out.append(f'  File "{filename}", line {lineno}, in {name}\n')
            try:
                source = linecache.getline(filename, lineno).strip()
            except Exception:
                source = ""
            if source:
                out.append(f"    {source}\n")
    out.append(exception_line(err) + "\n")
    return "".join(out)


def format_exception(err: BaseException, *, skip_sdk: bool = True) -> str:
    """`err` with its traceback and the exceptions it was raised from or during, oldest first,
    as Python prints them. With `skip_sdk`, leading frames inside the SDK are left out."""
    chain = []
    seen = set()
    link = None
    current = err
    while current is not None and id(current) not in seen and len(chain) < _MAX_CHAIN:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    parts = []
    for at in range(len(chain) - 1, -1, -1):
        exc, link = chain[at]
        parts.append(_one(exc, skip_sdk))
        if link is not None:
            parts.append(link)
    return "".join(parts)
