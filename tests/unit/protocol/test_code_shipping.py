"""Code shipped by value keeps its file name and source lines (``protocol/code.py``)."""

from __future__ import annotations

import importlib
import linecache
import sys
import traceback
from pathlib import Path

import pytest

from stratus.protocol import serialization

SOURCE = """\
def lookup(ctx, key):
    table = {"a": 1}
    return table[key]  # the failing line
"""


def test_a_traceback_of_shipped_code_shows_its_file_line_and_source(tmp_path: Path) -> None:
    path = tmp_path / "shipped_module.py"
    path.write_text(SOURCE)
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("shipped_module")
        blob = serialization.dumps_code(module.lookup, limit=1 << 20, defined_by=module.lookup)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shipped_module", None)
    path.unlink()  # as on an executor of another host: the file is not there
    linecache.clearcache()
    lookup = serialization.loads(blob)
    with pytest.raises(KeyError) as caught:
        lookup(None, "b")
    trace = "".join(traceback.format_exception(caught.value))
    assert f'File "{path}", line 3, in lookup' in trace
    assert "return table[key]  # the failing line" in trace
    assert "<dynamic-code>" not in trace
