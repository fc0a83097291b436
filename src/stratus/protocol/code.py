"""Code shipped by value keeps its file name and source lines, for remote tracebacks.

cloudpickle renames the file of every code object it pickles by value to
``<dynamic-code>`` (so that its output does not depend on where code was defined), and a
traceback from an executor then shows ``File "<dynamic-code>", line 3`` with no source.
This pickler keeps each code object's real ``co_filename`` and ships the file's lines
(once per file: the pickle memo shares the list); unpickling registers them in
``linecache``, so the executor's tracebacks show the user's file, line and source text
even where that file does not exist, and as it was when the function was registered.
"""

from __future__ import annotations

import io
import linecache
import types
from collections import ChainMap
from typing import Any

import cloudpickle

_MAX_SOURCE = 1 << 20  # a larger file ships without its lines (tracebacks keep file:line)


def dumps(obj: Any) -> bytes:
    """cloudpickle's ``dumps``, keeping file names and source lines of code by value."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=5).dump(obj)
    return buffer.getvalue()


def _reduce_code(code: types.CodeType) -> tuple[Any, ...]:
    rebuild, args = cloudpickle.cloudpickle._code_reduce(code)
    lines = _source_lines(code.co_filename)
    return _load_code, (rebuild, args, code.co_filename, lines)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


def _source_lines(filename: str) -> list[str] | None:
    lines = linecache.getlines(filename)  # the cache's own list: pickled once per file
    if not lines or sum(map(len, lines)) > _MAX_SOURCE:
        return None
    return lines


def _load_code(
    rebuild: Any, args: tuple[Any, ...], filename: str, lines: list[str] | None
) -> types.CodeType:
    code: types.CodeType = rebuild(*args).replace(co_filename=filename)
    if lines is not None:
        # No modification time: ``linecache.checkcache`` keeps the entry as shipped.
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return code
