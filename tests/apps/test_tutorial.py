"""The excerpts of the app in docs/tutorial.md are the app's code, word for word.

The tutorial's ``py`` blocks quote ``src/parley/apps/trade/``; tests/test_docs.py runs its
``python`` blocks. An excerpt matches if the app has the same lines in a row, indented as a whole
(a method's excerpt is dedented), blank lines aside (ruff formats the excerpts too, and puts two
between what it takes for top-level functions).
"""

from __future__ import annotations

import textwrap

import pytest

from tests.test_docs import ROOT, fenced_blocks

TUTORIAL = ROOT / "docs" / "tutorial.md"
APP = ROOT / "src" / "parley" / "apps" / "trade"


def excerpts() -> list[str]:
    return [
        b.code for b in fenced_blocks(TUTORIAL.read_text(encoding="utf-8")) if b.language == "py"
    ]


def quoted(excerpt: str, source: str) -> bool:
    """Whether ``source`` has the lines of ``excerpt`` in a row, under one indentation."""
    wanted = [line for line in excerpt.splitlines() if line.strip()]
    lines = [line for line in source.splitlines() if line.strip()]
    for start in range(len(lines) - len(wanted) + 1):
        window = "\n".join(lines[start : start + len(wanted)])
        if textwrap.dedent(window).splitlines() == wanted:
            return True
    return False


def test_the_tutorial_quotes_the_app() -> None:
    assert len(excerpts()) >= 8


@pytest.mark.parametrize("excerpt", excerpts(), ids=lambda e: e.splitlines()[0][:40])
def test_each_excerpt_is_in_the_apps_source(excerpt: str) -> None:
    sources = [path.read_text(encoding="utf-8") for path in sorted(APP.glob("*.py"))]
    assert any(quoted(excerpt, source) for source in sources), excerpt


def test_a_changed_line_is_not_a_quote() -> None:
    source = "class A:\n    def f(self) -> int:\n        return 1\n"
    assert quoted("def f(self) -> int:\n    return 1\n", source)
    assert not quoted("def f(self) -> int:\n    return 2\n", source)
