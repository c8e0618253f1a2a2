"""`spotsim sweep`: a small live grid end to end, its table, plots and report; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

JOB = Path(__file__).parent / "jobs" / "watched_loop.py"
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]


def sweep(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"TOTAL_STEPS": "150", "STEP_SLEEP": "0.01"}
    cmd = [*SPOTSIM, "sweep", *args, "--out", str(tmp_path / "sweep"), "--", sys.executable, str(JOB)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_a_small_grid_gives_the_table_plots_and_report(tmp_path):
    done = sweep(tmp_path, "--intervals", "5s,20s", "--rates", "400", "--kills", "sigkill,sigterm", "--repeats", "1",
                 "--time-scale", "10", "--json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "sweep"
    table = pd.read_parquet(out / "sweep.parquet")
    assert len(table) == 4 and set(table["kill"]) == {"sigkill", "sigterm"}
    assert pd.read_csv(out / "sweep.csv")["run"].tolist() == table["run"].tolist()
    assert [row["run"] for row in json.loads(done.stdout)] == table["run"].tolist()
    assert table["completed"].all() and table["identity_holds"].all()
    assert {"interval_s", "preempt_rate", "repeat", "spot_cost_usd", "lost_steps", "checkpoint_overhead"} <= set(table)
    for plot in ("cost_vs_interval.png", "lost_vs_interval.png", "overhead_vs_interval.png"):
        assert (out / plot).stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "![cost](cost_vs_interval.png)" in report and "| preempt_rate | kill | interval_s |" in report
    simulated = pd.read_csv(out / "simulated.csv")
    assert len(simulated) == 2 * 40 and (simulated["wall_s_mean"] > 0).all()


@pytest.mark.parametrize(
    "args",
    [
        ["--intervals", ",", "--rates", "1"],
        ["--intervals", "5s", "--rates", "nan"],
        ["--intervals", "5s", "--rates", "x"],
        ["--intervals", "5s", "--rates", "1", "--kills", "sigstop"],
        ["--intervals", "0", "--rates", "1"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args):
    done = sweep(tmp_path, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("spotsim: error:") and "Traceback" not in done.stderr
