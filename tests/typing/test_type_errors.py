"""The flow API's static types: correct uses infer the right types and misuses fail mypy --strict.

The cases are files in ``cases/``: ``inferred.py`` must check cleanly (its ``assert_type`` calls
pin what is inferred), and every line of ``misuse.py`` marked ``# E: <text>`` must get an error
containing <text>, with no error anywhere else. Together they keep the typed API from silently
decaying to ``Any``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

CASES = Path(__file__).parent / "cases"
ROOT = Path(__file__).parents[2]
ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")
MARK = re.compile(r"^\s+\S.*#\s*E:\s*(?P<text>.+?)\s*$")


def mypy_errors(path: Path) -> dict[int, list[str]]:
    """Run mypy --strict (the project's configuration) on one file; its errors by line."""
    stdout, stderr, _ = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--no-incremental",
            "--cache-dir",
            "/dev/null",
            "--show-error-codes",
            "--no-pretty",
            str(path),
        ]
    )
    assert not stderr, stderr
    errors: dict[int, list[str]] = {}
    for line in stdout.splitlines():
        match = ERROR.match(line)
        if match and Path(match["file"]).name == path.name:
            errors.setdefault(int(match["line"]), []).append(match["message"])
    return errors


def marked_lines(path: Path) -> dict[int, str]:
    marks: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = MARK.search(line)
        if match:
            marks[number] = match["text"]
    return marks


@pytest.mark.slow
def test_correct_uses_infer_the_documented_types() -> None:
    assert mypy_errors(CASES / "inferred.py") == {}


@pytest.mark.slow
def test_each_misuse_fails_type_checking_where_it_is_marked() -> None:
    path = CASES / "misuse.py"
    marks, errors = marked_lines(path), mypy_errors(path)
    assert len(marks) >= 10
    missing = {
        line: text
        for line, text in marks.items()
        if not any(text in message for message in errors.get(line, []))
    }
    unexpected = {line: messages for line, messages in errors.items() if line not in marks}
    assert missing == {}, f"misuses mypy accepted (line: expected error): {missing}\n{errors}"
    assert unexpected == {}, f"errors on lines not marked as misuses: {unexpected}"
