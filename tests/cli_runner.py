"""The ``spotsim`` app run in process through typer's ``CliRunner``: what a user sees, without a subprocess.

For bad input and other answers that need no real process; tests of signals, Ctrl-C or a
child's real exit run ``python -m spotsim.cli`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from typer.testing import CliRunner, Result

from spotsim.cli import app


def spotsim(*args: str, env: Mapping[str, str] | None = None) -> Result:
    """``spotsim ARGS…`` in this process; an unexpected exception fails the test with its traceback."""
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def assert_one_error_line(result: Result, *says: str) -> str:
    """Exit status 2 and one ``spotsim: error:`` line on stderr, holding each of ``says``; returns the line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("spotsim: error:"), result.stderr
    for text in says:
        assert text in lines[0], lines[0]
    return lines[0]
