"""`spotsim sweep`: a small live grid end to end, its table, plots and report; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from spotsim.sim import daly_interval
from spotsim.sim.calibration import Calibration

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
    c = Calibration.from_summaries(table.to_dict("records")).checkpoint_s
    assert simulated["interval_s"].min() <= daly_interval(c, 3600 / 400) <= simulated["interval_s"].max()
    # one repeat per point has no standard error: the sweep says it cannot resolve the curve
    assert "too few to tell them apart" in done.stderr and "## Can the live repeats resolve the curve?" in report


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


# -- no stale results -------------------------------------------------------------------------------

KILLS_ITS_HARNESS = """
import os, signal, time
os.kill(os.getppid(), signal.SIGKILL)  # the run dies before it writes a summary (as if OOM-killed)
time.sleep(30)
"""


def test_a_sweep_never_reuses_results_left_in_out(tmp_path):
    """An earlier sweep's summary.json must never become a row of a later one, nor a failed sweep a success."""
    out, tmp = tmp_path / "sweep", tmp_path / "tmp"  # a run killed outright leaves its temporary directories
    tmp.mkdir()
    env = os.environ | {"TOTAL_STEPS": "60", "STEP_SLEEP": "0.01", "TMPDIR": str(tmp)}
    grid = ["--intervals", "5s", "--rates", "0", "--repeats", "1", "--out", str(out)]

    def sweep_with(*job: str) -> subprocess.CompletedProcess:
        return subprocess.run([*SPOTSIM, "sweep", *grid, "--", *job], env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    def one_error_line(done: subprocess.CompletedProcess) -> str:
        assert done.returncode == 2, done.stdout + done.stderr
        assert "wrote" not in done.stdout and "Traceback" not in done.stderr, done.stdout + done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("spotsim: error:"), done.stderr
        return lines[0]

    done = sweep_with(sys.executable, str(JOB))
    assert done.returncode == 0, done.stdout + done.stderr
    table = pd.read_csv(out / "sweep.csv")
    assert table["final_step"].tolist() == [60]
    before = (out / "sweep.csv").read_bytes(), (out / "sweep.csv").stat().st_mtime_ns

    # A command that does not exist: refused up front, the old table left as it was, not rewritten as a success.
    assert "/nonexistent/cmd" in one_error_line(sweep_with("/nonexistent/cmd"))
    assert ((out / "sweep.csv").read_bytes(), (out / "sweep.csv").stat().st_mtime_ns) == before

    # A run that dies without writing a summary, next to the summary an earlier sweep left: a failure, not a row.
    [run_dir] = (out / "runs").iterdir()
    stale = json.loads((run_dir / "summary.json").read_text()) | {"final_step": 999999}
    (run_dir / "summary.json").write_text(json.dumps(stale))
    killer = tmp_path / "kills_its_harness.py"
    killer.write_text(KILLS_ITS_HARNESS)
    line = one_error_line(sweep_with(sys.executable, str(killer)))
    assert f"run {run_dir.name} failed" in line, line
    assert "999999" not in (out / "sweep.csv").read_text(), "the stale summary became a row"
    assert not (run_dir / "summary.json").exists()

    # A successful sweep over a planted summary: the row is the new run's.
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(stale))
    done = sweep_with(sys.executable, str(JOB))
    assert done.returncode == 0, done.stdout + done.stderr
    assert pd.read_csv(out / "sweep.csv")["final_step"].tolist() == [60]
