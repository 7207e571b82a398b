"""The package's layering is checked, not hoped for: purity of protocol/, import directions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "parley"
FORBIDDEN_IN_PROTOCOL = {
    "time",
    "random",
    "uuid",
    "threading",
    "asyncio",
    "socket",
    "sqlite3",
    "pykka",
    "nats",
}
#: What each first-level subpackage may import from parley (besides itself).
ALLOWED = {
    "protocol": set(),
    "flows": {"protocol"},
    "store": {"protocol"},
    "actors": {"protocol", "flows", "store"},
    "testing": {"protocol", "flows", "store", "actors"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_under(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules_under("protocol"), ids=lambda p: p.name)
def test_protocol_modules_import_no_io_clock_threads_or_randomness(path: Path) -> None:
    bad = {name for name in imports_of(path) if name.split(".")[0] in FORBIDDEN_IN_PROTOCOL}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_subpackages_import_only_the_layers_below_them(package: str) -> None:
    for path in modules_under(package):
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] != "parley" or len(parts) < 2:
                continue
            target = parts[1]
            if target == package:
                continue
            assert target in ALLOWED[package], (
                f"{path.relative_to(SRC)} imports parley.{target}, above the {package} layer"
            )


def test_the_purity_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import time\nfrom random import random\n")
    assert imports_of(module) == {"time", "random"}


def test_pickle_is_imported_nowhere() -> None:
    for path in SRC.rglob("*.py"):
        assert not {"pickle", "marshal", "dill"} & imports_of(path), path
