"""The examples in the docs run as tests, so that they cannot drift from the code.

Every ```python block of a doc runs, in the order of the page, in one fresh module registered in
``sys.modules`` (flow classes, exceptions and ``@serializable`` classes are known by
``"module:QualName"``, and a restored flow's class is looked up in its module). Each run gets a
module name of its own: the ``@serializable`` registry refuses a second class under a name it
already holds, so a doc run twice in one process must not reuse one. Then every top-level
``test_*`` function the blocks defined is called, in the order they were defined.

Blocks that are not meant to run use another fence language (```bash, ```toml, ```text).
Tracebacks point into the doc itself: each block is compiled with the doc's path and its lines.
"""

from __future__ import annotations

import itertools
import re
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The docs whose examples run, and whether they must define tests (the README's example only
#: defines flows).
DOCS = {
    "README.md": False,
    "docs/flows.md": True,
    "docs/testing.md": True,
    "docs/tutorial.md": True,
}

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>```+)(?P<language>\S*)\s*$")
_RUNS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block of a doc."""

    language: str
    #: The number (from 1) of the block's first line of code in the doc.
    line: int
    code: str


def fenced_blocks(text: str) -> Iterator[Block]:
    """The fenced code blocks of a Markdown text, in order.

    Args:
        text: The Markdown source.

    Yields:
        Each block with its language (empty if the fence names none), its first line and its
        code, dedented by the fence's indentation.

    Raises:
        ValueError: a fence is never closed.
    """
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent, ticks = opening["indent"], opening["ticks"]
        start = index
        while index < len(lines) and lines[index].strip() != ticks:
            index += 1
        if index == len(lines):
            raise ValueError(f"the fence opened on line {start} is never closed")
        body = [line.removeprefix(indent) for line in lines[start:index]]
        index += 1
        yield Block(opening["language"], start + 1, "\n".join(body) + "\n")


def run_doc(doc: str) -> list[str]:
    """Run the Python blocks of ``doc`` in one new module, then the tests they define.

    Args:
        doc: The doc's path, relative to the repository root.

    Returns:
        The names of the tests that ran, in order.
    """
    path = ROOT / doc
    stem = re.sub(r"\W", "_", path.stem.lower())
    name = f"parley_docs_{stem}_{next(_RUNS)}"
    module = types.ModuleType(name, f"The Python examples of {doc}.")
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        for block in fenced_blocks(path.read_text(encoding="utf-8")):
            if block.language == "python":
                # Blank lines in front, so that line numbers in tracebacks are the doc's own.
                source = "\n" * (block.line - 1) + block.code
                exec(compile(source, str(path), "exec"), module.__dict__)
        tests = _tests_of(module)
        for test_name, test in tests:
            try:
                test()
            except Exception as exc:
                exc.add_note(f"in {test_name}() of {doc}")
                raise
        return [test_name for test_name, _ in tests]
    finally:
        del sys.modules[name]


def _tests_of(module: types.ModuleType) -> list[tuple[str, Callable[[], object]]]:
    """The module's top-level ``test_*`` functions, in the order they were defined."""
    return [
        (name, value)
        for name, value in vars(module).items()
        if name.startswith("test_")
        and isinstance(value, types.FunctionType)
        and value.__module__ == module.__name__
    ]


@pytest.mark.parametrize("doc", list(DOCS))
def test_the_examples_of_a_doc_run_and_their_tests_pass(doc: str) -> None:
    ran = run_doc(doc)
    if DOCS[doc]:
        assert ran, f"{doc} defines no test_* function in its python blocks"


@pytest.mark.parametrize("doc", list(DOCS))
def test_every_fence_names_its_language(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    unnamed = [block.line - 1 for block in fenced_blocks(text) if not block.language]
    assert unnamed == [], f"{doc}: fences without a language (python runs, others don't): {unnamed}"


def test_a_doc_runs_twice_in_one_process() -> None:
    first, second = run_doc("docs/flows.md"), run_doc("docs/flows.md")
    assert first == second
    assert first


def test_the_readme_lists_the_docs_whose_examples_run() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\* `(docs/[\w.-]+\.md)` — ", readme, flags=re.MULTILINE)
    assert [doc for doc in DOCS if doc.startswith("docs/") and doc not in listed] == []


def test_the_block_reader_finds_languages_lines_and_indented_fences() -> None:
    text = "intro\n```python\nx = 1\n```\n* item\n\n  ```bash\n  ls\n  ```\n"
    assert list(fenced_blocks(text)) == [
        Block("python", 3, "x = 1\n"),
        Block("bash", 8, "ls\n"),
    ]
    with pytest.raises(ValueError, match="line 1 "):
        list(fenced_blocks("```python\nx = 1\n"))
