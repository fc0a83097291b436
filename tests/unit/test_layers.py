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


def package_graph(package: Path) -> dict[str, set[str]]:
    """Which units of ``package`` import which: a unit is a subpackage (``client``) or
    a top-level module (``config``), ``stratus`` the root's ``__init__``. A name is
    resolved to the longest module it names (``from stratus import config`` is
    ``config``, ``from stratus.kv import Ref`` is ``kv``)."""
    units: dict[str, str] = {}  # dotted module name -> its unit
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        units[".".join(parts)] = parts[1] if len(parts) > 1 else parts[0]
    graph: dict[str, set[str]] = {}
    for module, unit in units.items():
        path = package.parent / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = package.parent / module.replace(".", "/") / "__init__.py"
        for name in _imported_names(path):
            while name and name not in units:
                name = name.rpartition(".")[0]
            if name and units[name] != unit:
                graph.setdefault(unit, set()).add(units[name])
    return graph


def _imported_names(path: Path) -> set[str]:
    """What ``path`` imports, each name in full (``from stratus import connect`` is
    ``stratus.connect``, an import of the root, not ``stratus`` and ``connect``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


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


def test_server_never_imports_the_client() -> None:
    # An executor's nested calls reach the client SDK through ``server.link.Caller``,
    # wired in by ``stratus._node``.
    assert violations("server", ("stratus.client",)) == []


def test_the_package_root_imports_only_the_servers_public_names() -> None:
    import stratus.server

    allowed = {"stratus.server", *(f"stratus.server.{name}" for name in stratus.server.__all__)}
    server = {
        n for n in imported(PACKAGE / "__init__.py") if n.split(".")[:2] == ["stratus", "server"]
    }
    assert server <= allowed


def test_no_import_cycles_between_packages() -> None:
    assert cycles(package_graph(PACKAGE)) == []


def test_package_graph_and_cycles_on_a_made_up_tree(tmp_path: Path) -> None:
    root = tmp_path / "stratus"
    for name, source in {
        "__init__.py": "from stratus.a.x import X\n",
        "a/__init__.py": "",
        "a/x.py": "from stratus import c\nX = 1\n",
        "b/__init__.py": "",
        "b/y.py": "def f():\n    from stratus.a import x\n",
        "c.py": "from stratus import _e\nfrom stratus.b.y import f\n",
        "_e.py": "",
        "d/__init__.py": "from stratus import X\n",  # the root's names: an import of the root
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    graph = package_graph(root)
    assert graph == {"stratus": {"a"}, "a": {"c"}, "b": {"a"}, "c": {"_e", "b"}, "d": {"stratus"}}
    assert cycles(graph) == [["a", "b", "c"]]
    del graph["b"]
    assert cycles(graph) == []
    graph["a"].add("d")  # a -> d -> the root -> a
    assert cycles(graph) == [["a", "d", "stratus"]]


def test_imported_sees_nested_and_from_package_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from stratus import server\n    import stratus.cli.x\n")
    assert {"stratus.server", "stratus.cli.x"} <= imported(source)


def test_public_names_are_sorted() -> None:
    assert stratus.__all__ == sorted(stratus.__all__)


def test_every_public_name_exists() -> None:
    missing = [name for name in stratus.__all__ if not hasattr(stratus, name)]
    assert missing == []


TESTS = Path(__file__).resolve().parents[1]  # tests/


def test_test_folders_mirror_the_packages() -> None:
    # tests/unit/server/pools/ tests stratus/server/pools/; a file at the top of unit/ or
    # integration/ tests a top-level module, or the package as a whole.
    strays = [
        str(folder.relative_to(TESTS))
        for kind in ("unit", "integration")
        for folder in (TESTS / kind).rglob("*")
        if folder.is_dir()
        and folder.name != "__pycache__"
        and not (PACKAGE / folder.relative_to(TESTS / kind) / "__init__.py").exists()
    ]
    assert strays == []


def test_test_file_names_are_unique() -> None:
    # No __init__.py in tests/: pytest imports each test file by its base name.
    names = [path.name for path in TESTS.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_users_need_nothing_below_the_package_root() -> None:
    # What a user writes (``def f(ctx: stratus.Context, x)``, handles, errors) is at the
    # top level, documented: no user imports ``stratus.server`` or ``stratus.client``.
    import stratus.server

    assert stratus.Context is stratus.server.Context
    undocumented = [
        name
        for name in stratus.__all__
        if isinstance(getattr(stratus, name), type) and not getattr(stratus, name).__doc__
    ]
    assert undocumented == []
