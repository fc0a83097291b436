"""The package's layering, checked on the source: lower layers never import upper ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stratus

PACKAGE = Path(stratus.__file__).parent


def modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (including ``TYPE_CHECKING`` blocks);
    ``from stratus import server`` counts as importing ``stratus.server``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: use absolute imports"
            base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in modules(layer)
        for name in sorted(imported(path))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


UPPER = ("stratus.client", "stratus.server", "stratus.cli")


def test_the_layers_have_modules() -> None:
    for layer in ("protocol", "transport", "client", "server", "lattice", "store", "kv"):
        assert modules(layer), layer


@pytest.mark.parametrize("layer", ["protocol", "transport"])
def test_protocol_and_transport_import_no_upper_layer(layer: str) -> None:
    assert violations(layer, UPPER) == []


def test_lattice_and_store_stand_alone() -> None:
    below = ("stratus.protocol", "stratus.transport", "stratus.kv")
    assert violations("lattice", (*UPPER, *below, "stratus.store")) == []
    assert violations("store", (*UPPER, *below, "stratus.lattice")) == []


def test_kv_sits_on_lattice_and_store_only() -> None:
    assert violations("kv", (*UPPER, "stratus.protocol", "stratus.transport")) == []


def test_fs_sits_on_store_only() -> None:
    below = ("stratus.protocol", "stratus.transport", "stratus.kv", "stratus.lattice")
    assert violations("fs", (*UPPER, *below)) == []


def test_client_never_imports_the_server() -> None:
    assert violations("client", ("stratus.server",)) == []


def test_imported_sees_nested_and_from_package_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from stratus import server\n    import stratus.cli.x\n")
    assert {"stratus.server", "stratus.cli.x"} <= imported(source)


def test_public_names_are_sorted() -> None:
    assert stratus.__all__ == sorted(stratus.__all__)


def test_every_public_name_exists() -> None:
    missing = [name for name in stratus.__all__ if not hasattr(stratus, name)]
    assert missing == []
