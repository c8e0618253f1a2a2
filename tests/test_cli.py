"""The command line: bad input is one line and exit 2; the demo runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys


def spotsim(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPOTSIM_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "spotsim.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_emulator_on_unusable_root_is_one_line_exit_2(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    result = spotsim("emulator", "start", "--root", str(tmp_path / "file" / "root"), "--port", "1", home=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spotsim: error:") and "data directory" in lines[0]


def test_invalid_option_value_exits_2_without_traceback(tmp_path):
    result = spotsim("demo", "--size-mib", "0", home=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_demo_end_to_end(tmp_path):
    result = spotsim("demo", "--size-mib", "8", "--root", str(tmp_path / "emu"), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 winner" in result.stdout
    assert "object survives emulator restart" in result.stdout and "yes" in result.stdout
    assert (tmp_path / "emu" / "spotsim-demo").is_dir()  # the bucket persisted on disk
