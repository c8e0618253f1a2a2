"""The command line: every command answers --help and bad input in one line; the storage demo runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import assert_one_error_line, spotsim

from spotsim.cli import command_names


@pytest.mark.parametrize("name", command_names())
def test_every_command_has_help_and_refuses_an_unknown_option_in_one_line(name):
    words = name.split()
    shown = spotsim(*words, "--help")
    assert shown.exit_code == 0 and shown.stdout.startswith("Usage:"), shown.output
    assert_one_error_line(spotsim(*words, "--no-such-option"))


def test_spotsim_alone_prints_the_help_listing_every_command():
    result = spotsim()
    assert result.exit_code == 2
    listed = result.stderr.split("Commands:")[1]
    assert {line.split()[0] for line in listed.splitlines() if line.strip()} == {
        name for name in command_names() if " " not in name
    }


def test_the_cli_reference_documents_every_command():
    reference = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    assert [name for name in command_names() if f"spotsim {name}" not in reference] == []


def test_emulator_on_unusable_root_is_one_line_exit_2(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    result = spotsim(
        "emulator",
        "start",
        "--root",
        str(tmp_path / "file" / "root"),
        "--port",
        "1",
        env={"SPOTSIM_HOME": str(tmp_path)},
    )
    assert_one_error_line(result, "data directory")


def test_invalid_option_value_is_one_line_exit_2():
    assert_one_error_line(spotsim("storage-demo", "--size-mib", "0"), "--size-mib")


def test_storage_demo_end_to_end(tmp_path):
    """The installed entry point, in a process of its own, as a user runs it."""
    env = {**os.environ, "SPOTSIM_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "spotsim.cli", "storage-demo", "--size-mib", "8", "--root", str(tmp_path / "emu")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "1 winner" in result.stdout
    assert "object survives emulator restart" in result.stdout and "yes" in result.stdout
    assert (tmp_path / "emu" / "spotsim-demo").is_dir()  # the bucket persisted on disk
