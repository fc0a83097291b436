"""Every process that reads or writes kv values does it with the cluster's codec.

A module that encodes or decodes kv values with the keyless ``stratus.lattice.encode`` /
``decode`` (or opens a store or a cache without the codec) fails safe, since the keyless
codec never unpickles, but it cannot read or write sealed objects. This scan of the source
names such a module at once, instead of a user finding it with a tuple.
"""

from __future__ import annotations

import ast
from pathlib import Path

import stratus

PACKAGE = Path(stratus.__file__).parent

# Keyless on purpose: vector clocks only (causal), the keyless merge itself (values), the
# codec's own package, the keyless default of open_store and KVCache, and the file-system
# tools, which never merge kv values.
KEYLESS_CODEC_OK = {
    "kv/causal.py",
    "kv/values.py",
    "kv/open.py",
    "kv/cache.py",
    "lattice/__init__.py",
}
KEYLESS_STORE_OK = {
    "cli/main.py",
    "cli/mount.py",
    "cli/gateway.py",  # the gateway's tokens: records of its own, never kv values
    "client/fs.py",
    "server/coordinator.py",
}


def sources() -> list[tuple[str, ast.AST]]:
    return [
        (str(path.relative_to(PACKAGE)), ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def test_only_clock_code_uses_the_keyless_encode_and_decode() -> None:
    found = []
    for name, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in (
                "stratus.lattice",
                "stratus.lattice.encoding",
            ):
                keyless = {"encode", "decode", "DATA_ONLY"} & {a.name for a in node.names}
                if keyless and name not in KEYLESS_CODEC_OK:
                    found.append(f"{name} imports {sorted(keyless)}")
            if (
                isinstance(node, ast.ImportFrom)
                and node.module in ("stratus.kv", "stratus.kv.values")
                and "merge_encoded" in {a.name for a in node.names}
                and name != "kv/__init__.py"
            ):
                found.append(f"{name} imports merge_encoded")
    assert found == []


def test_stores_and_caches_of_kv_values_get_the_codec() -> None:
    found = []
    for name, tree in sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(
                node.func, ast.Name | ast.Attribute
            ):
                continue
            called = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            keywords = {k.arg for k in node.keywords}
            keyless = len(node.args) < 2 and "values" not in keywords
            if called == "open_store" and keyless and name not in KEYLESS_STORE_OK:
                found.append(f"{name}:{node.lineno} open_store without the codec")
            if called == "KVCache" and "values" not in keywords:
                found.append(f"{name}:{node.lineno} KVCache without values=")
    assert found == []
