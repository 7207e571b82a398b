"""What the CLI tests share."""

from __future__ import annotations

from typer.testing import Result


def refused(result: Result, code: int, *fragments: str) -> str:
    """``result`` is a one-line error with exit code ``code`` that says each of ``fragments``."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
