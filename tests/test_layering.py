"""The package's layering is checked, not hoped for: the import graph, its purity rules, no cycles.

:data:`LAYERS` is the whole graph: what each part of ``parley`` may import from the rest of it.
``docs/architecture.md`` draws the same graph, and a test below checks that the two agree.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "parley"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

#: What each part of parley may import from the others (``parley`` is the package's public API,
#: ``parley/__init__.py``). A part may always import from itself.
LAYERS: dict[str, set[str]] = {
    "protocol": set(),
    "flows": {"protocol"},
    "store": {"protocol"},
    "identity": {"protocol"},
    "parley": {"flows", "protocol"},
    "engine": {"flows", "store", "protocol"},
    "transport": {"engine", "identity", "protocol"},
    "actors": {"engine", "flows", "store", "protocol"},
    "rpc": {"transport", "engine", "flows", "store", "protocol"},
    "node": {"actors", "rpc", "transport", "engine", "identity", "flows", "store", "protocol"},
    "testing": {"transport", "engine", "identity", "flows", "store", "protocol"},
    "apps": {"parley"},
    "cli": {"node", "rpc", "transport", "engine", "identity", "flows", "store", "protocol"},
}
#: Libraries a part must not import at all.
FORBIDDEN: dict[str, set[str]] = {
    "protocol": {
        "time",
        "random",
        "uuid",
        "threading",
        "asyncio",
        "socket",
        "sqlite3",
        "pykka",
        "nats",
    },
    "flows": {"sqlite3", "pykka", "nats"},
    "identity": {"sqlite3", "pykka", "nats"},
    "engine": {"pykka", "nats", "sqlite3"},
    "store": {"pykka", "nats"},
    "transport": {"pykka", "sqlite3"},
    "rpc": {"pykka", "sqlite3"},
    "actors": {"nats", "sqlite3"},
    "testing": {"pykka"},
}


def part_of(path: Path) -> str:
    """The part of parley a source file belongs to (its first-level subpackage or module)."""
    relative = path.relative_to(SRC)
    if relative == Path("__init__.py"):
        return "parley"
    return relative.parts[0].removesuffix(".py")


def module_name(path: Path) -> str:
    relative = path.relative_to(SRC.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The modules ``path`` imports.

    ``from a import b`` counts as importing ``a.b`` when that is a module, and as importing ``a``
    (its ``__init__``) when ``b`` is a name defined there.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    nodes = _top_level(tree) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{a.name}" for a in node.names}
            modules = {m for m in submodules if _is_module(m)}
            names.update(modules)
            if modules != submodules:
                names.add(node.module)
    return names


def _top_level(tree: ast.Module) -> Iterator[ast.AST]:
    """Statements run at import time (not those under ``if TYPE_CHECKING``, which never run)."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            continue
        if isinstance(node, ast.If | ast.Try):
            stack.extend(ast.iter_child_nodes(node))


def _is_module(name: str) -> bool:
    if not name.startswith("parley."):
        return False
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


SOURCES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_each_module_imports_only_the_parts_its_layer_may_use(path: Path) -> None:
    part = part_of(path)
    assert part in LAYERS, f"{part} is not in LAYERS: say where it sits in the graph"
    for name in imports_of(path):
        top, _, rest = name.partition(".")
        assert top not in FORBIDDEN.get(part, set()), f"{path.relative_to(SRC)} imports {top}"
        if top != "parley":
            continue
        target = rest.split(".")[0] if rest else "parley"
        if target != part:
            assert target in LAYERS[part], (
                f"{path.relative_to(SRC)} imports parley.{rest}: {part} may use only "
                f"{sorted(LAYERS[part])}"
            )


def test_there_are_no_import_cycles_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        module = module_name(path)
        targets = {n for n in imports_of(path, top_level_only=True) if n.startswith("parley")}
        graph[module] = targets - {module}
    cycles = list(_cycles(graph))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = [0]

    def visit(node: str) -> Iterator[list[str]]:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if target not in index:
                yield from visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                yield sorted(component)

    for node in sorted(graph):
        if node not in index:
            yield from visit(node)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_names_from_its_own_package_init(path: Path) -> None:
    """``from parley.store import X`` inside parley.store runs into a half-initialised package."""
    if path.name == "__init__.py":
        return
    package = module_name(path).rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == package:
            assert all(_is_module(f"{package}.{a.name}") for a in node.names), (
                f"{path.relative_to(SRC)} imports names from {package}/__init__.py"
            )


def test_the_cycle_check_finds_a_cycle() -> None:
    assert list(_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})) == [["a", "b", "c"]]
    assert list(_cycles({"a": {"b"}, "b": set()})) == []


def test_the_architecture_page_draws_the_same_graph() -> None:
    drawn: dict[str, set[str]] = {}
    for line in ARCHITECTURE.read_text().splitlines():
        match = re.match(r"^parley(?:\.(\w+))?\s.*\((?:imports nothing.*|imports (.*))\)\s*$", line)
        if match:
            part = match.group(1) or "parley"
            names = match.group(2) or ""
            drawn[part] = {n.strip() for n in names.split(",") if n.strip()}
    assert drawn == LAYERS


def test_the_import_scan_sees_what_a_module_imports(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import time\nfrom random import random\n")
    assert imports_of(module) == {"time", "random"}


def test_pickle_is_imported_nowhere() -> None:
    for path in SOURCES:
        assert not {"pickle", "marshal", "dill"} & imports_of(path), path


def test_every_subpackage_declares_its_public_surface() -> None:
    for init in sorted(SRC.glob("*/__init__.py")):
        tree = ast.parse(init.read_text())
        names = {
            target.id
            for node in tree.body
            for target in (
                node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            )
            if isinstance(target, ast.Name)
        }
        assert "__all__" in names, f"{init.relative_to(SRC)} has no __all__"
