"""`spotsim sweep`: a small live grid end to end, its table, plots and report; bad input; each run's settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import assert_one_error_line, spotsim

from spotsim.errors import InvalidOption
from spotsim.harness.config import RunConfig
from spotsim.harness.sweep import SweepConfig
from spotsim.preemption import KillMode, parse_schedule
from spotsim.preemption.providers import parse_provider
from spotsim.report.sweep_report import write_report
from spotsim.sim import daly_interval, sweep_curves
from spotsim.sim.calibration import Calibration

JOB = Path(__file__).parent / "jobs" / "watched_loop.py"
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]


def sweep(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"TOTAL_STEPS": "150", "STEP_SLEEP": "0.01"}
    cmd = [*SPOTSIM, "sweep", *args, "--out", str(tmp_path / "sweep"), "--", sys.executable, str(JOB)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_a_small_grid_gives_the_table_plots_and_report(tmp_path):
    done = sweep(
        tmp_path,
        "--intervals",
        "5s,20s",
        "--rates",
        "400",
        "--kills",
        "sigkill,sigterm",
        "--repeats",
        "1",
        "--time-scale",
        "10",
        "--json",
    )
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


def test_the_report_draws_the_curves_it_is_given(tmp_path):
    """The report only draws and writes: the simulated curves are the caller's, written as they came."""
    pytest.importorskip("matplotlib")
    measured = {"step_time_s": 1.0, "checkpoints": 10, "checkpoint_blocking_s": 20.0, "restart_overhead_s": 30.0}
    runs = [
        measured
        | {"interval_s": tau, "preempt_rate": 12.0, "kill": "sigkill", "repeat": repeat, "final_step": 3600}
        | {"machine": "test", "spot_usd_per_hour": 0.5, "on_demand_usd_per_hour": 2.0, "on_demand_cost_usd": 2.1}
        | {"wall_s": 9.0, "sim_wall_s": 4000.0 + tau, "lost_steps": 50.0, "checkpoint_overhead": 0.01}
        | {"spot_cost_usd": 0.5 + tau / 6000 + repeat / 100, "savings": 0.6, "time_scale": 10.0, "startup_s": 40.0}
        for tau in (60.0, 600.0)
        for repeat in range(2)
    ]
    simulated = sweep_curves(runs, grace_s=0.0, restart_delay_s=0.0, trials=100)
    path, too_few = write_report(pd.DataFrame(runs), simulated, tmp_path, command="spotsim sweep")
    assert pd.read_csv(tmp_path / "simulated.csv").equals(pd.DataFrame(simulated.rows))
    for plot in ("cost_vs_interval.png", "lost_vs_interval.png", "overhead_vs_interval.png"):
        assert (tmp_path / plot).stat().st_size > 10_000
    text = path.read_text()
    assert "checkpoint cost C =\n2 s" in text and "| preempt_rate | kill | interval_s |" in text
    assert too_few == []  # 0.09 USD apart, 0.01 of noise


BAD_INPUT = {
    "no interval": ["--intervals", ",", "--rates", "1"],
    "NaN rate": ["--intervals", "5s", "--rates", "nan"],
    "rate not a number": ["--intervals", "5s", "--rates", "x"],
    "unknown kill mode": ["--intervals", "5s", "--rates", "1", "--kills", "sigstop"],
    "zero interval": ["--intervals", "0", "--rates", "1"],
    "negative seed": ["--intervals", "5s", "--rates", "1", "--seed", "-1"],
    "zero repeats": ["--intervals", "5s", "--rates", "1", "--repeats", "0"],
    "zero time scale": ["--intervals", "5s", "--rates", "1", "--time-scale", "0"],
    "unknown machine": ["--intervals", "5s", "--rates", "1", "--machine", "gcp-tpu-v9"],
    "work shorter than an interval": ["--intervals", "1h", "--rates", "1", "--work", "30m", "--steps", "100"],
}


@pytest.mark.parametrize("args", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_line_and_exit_2(tmp_path, args):
    out = tmp_path / "sweep"
    assert_one_error_line(spotsim("sweep", *args, "--out", str(out), "--", sys.executable, str(JOB)))
    assert not out.exists(), "refused before anything was written"


def test_the_library_refuses_what_the_command_line_refuses(tmp_path):
    grid = {"command": (sys.executable, str(JOB)), "out": tmp_path, "intervals_s": (5.0,), "rates": (1.0,)}
    bad = [
        {"intervals_s": ()},
        {"intervals_s": (0.0,)},
        {"rates": (float("nan"),)},
        {"kills": ("sigstop",)},
        {"seed": -1},
        {"time_scale": 0.0},
        {"restart_delay_s": -1.0},
        {"machine": "gcp-tpu-v9"},
        {"work_s": 1.0, "total_steps": 100},  # shorter than the interval
        {"total_steps": 0},
    ]
    for options in bad:
        with pytest.raises(InvalidOption):
            SweepConfig(**grid | options)


def test_each_run_is_a_run_config_that_survives_json(tmp_path):
    config = SweepConfig(
        command=(sys.executable, str(JOB)),
        out=tmp_path,
        intervals_s=(5.0, 1 / 3),
        rates=(0.1234567891,),
        kills=("sigkill", "mixed:0.123456789"),
        repeats=2,
        provider=parse_provider("aws-spot", grace_s=12.3456789),
        restart_delay_s=7.5,
        time_scale=1234.56789,
        total_steps=150,
        seed=4,
    )
    runs = [config.run_config(point, i) for i, point in enumerate(config.grid())]
    assert len({run.out for run in runs}) == 8
    assert [run.seed for run in runs] == list(range(400012, 400020))  # seed × 100,003 + the run's index
    run = runs[-1]
    assert run.interval_s == 1 / 3 and run.time_scale == 1234.56789 and run.kill == KillMode.parse("mixed:0.123456789")
    assert run.schedule == parse_schedule("poisson", 0.1234567891) and run.provider.grace_s == 12.3456789
    for run in runs:
        assert RunConfig.from_dict(json.loads(json.dumps(run.to_dict()))) == run


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
        return subprocess.run(
            [*SPOTSIM, "sweep", *grid, "--", *job], env=env, capture_output=True, text=True, timeout=120
        )

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
