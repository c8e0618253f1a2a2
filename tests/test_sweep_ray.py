"""`spotsim sweep --ray`: the local pool's table from Ray tasks, a dead worker's run retried and reported, bad input.

Each sweep here starts a local Ray runtime (a few seconds), so the module is in the slow tier; it is skipped
where Ray is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import assert_one_error_line, spotsim

pytestmark = pytest.mark.slow
pytest.importorskip("ray", reason="Ray is not installed: pip install 'spotsim[ray]'")

from spotsim.harness.ray_pool import CONNECT_TIMEOUT_S  # noqa: E402 - only once Ray is known to be there

JOB = Path(__file__).parent / "jobs" / "watched_loop.py"
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]
# No token file in ~/.ray, no usage report.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
GRID = ["--intervals", "5s,20s", "--rates", "400", "--repeats", "1", "--time-scale", "10"]
# What the grid and the seeds decide; the other columns are measured (timings, where each kill fell).
DETERMINISTIC = [
    "run",
    "interval_s",
    "preempt_rate",
    "kill",
    "repeat",
    "retries",
    "completed",
    "final_step",
    "identity_holds",
    "crashes",
    "time_scale",
    "machine",
    "spot_usd_per_hour",
    "on_demand_usd_per_hour",
    "interrupted",
]


def sweep(out: Path, *args: str, job: Path = JOB, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = os.environ | RAY_ENV | {"TOTAL_STEPS": "150", "STEP_SLEEP": "0.01"} | (env or {})
    cmd = [*SPOTSIM, "sweep", *args, "--json", "--out", str(out), "--", sys.executable, str(job)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> Path:
    """The same grid through the local pool and through `--ray local`, into ``local/`` and ``ray/``."""
    root = tmp_path_factory.mktemp("pools")
    for name, extra in (("local", []), ("ray", ["--ray", "local"])):
        done = sweep(root / name, *GRID, *extra)
        assert done.returncode == 0, done.stdout + done.stderr
        # stdout is the table alone: what Ray prints of its own is kept off it
        assert [row["run"] for row in json.loads(done.stdout)] == ["i5-r400-sigkill-0", "i20-r400-sigkill-0"]
    return root


def test_ray_gives_the_local_pools_table(pools):
    local, on_ray = (pd.read_csv(pools / name / "sweep.csv") for name in ("local", "ray"))
    assert list(on_ray.columns) == list(local.columns)
    pd.testing.assert_frame_equal(on_ray[DETERMINISTIC], local[DETERMINISTIC])
    assert on_ray["completed"].all() and (on_ray["retries"] == 0).all()
    for plot in ("cost_vs_interval.png", "lost_vs_interval.png", "overhead_vs_interval.png"):
        assert (pools / "ray" / plot).stat().st_size > 10_000
    assert "| preempt_rate | kill | interval_s |" in (pools / "ray" / "report.md").read_text()


def test_ray_runs_carry_the_local_pools_settings(pools):
    """Seeds included: each task ran exactly the run the local pool ran, in the run's own directory."""
    for run in ("i5-r400-sigkill-0", "i20-r400-sigkill-0"):
        local, on_ray = (
            json.loads((pools / name / "runs" / run / "run.json").read_text()) for name in ("local", "ray")
        )
        assert on_ray["run"].pop("out") == str(pools / "ray" / "runs" / run)
        local["run"].pop("out")
        assert on_ray == local
        assert (pools / "ray" / "runs" / run / "summary.json").exists()


KILLS_ITS_RAY_WORKER = """
import os, runpy, signal, sys, time
marker = os.environ["KILL_WORKER_MARKER"]
if not os.path.exists(marker):  # the task's first attempt only
    open(marker, "w").close()
    with open(f"/proc/{os.getppid()}/stat") as stat:  # the run's process; its parent is the Ray worker
        worker = int(stat.read().rpartition(")")[2].split()[1])
    os.kill(worker, signal.SIGKILL)  # as the OOM killer, or the cloud taking the worker's VM, would
    time.sleep(30)
sys.argv = [JOB]
runpy.run_path(JOB, run_name="__main__")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the Ray worker through /proc")
def test_a_run_whose_worker_dies_is_retried_and_reported(tmp_path):
    killer = tmp_path / "kills_its_ray_worker.py"
    killer.write_text(f"JOB = {str(JOB)!r}\n" + KILLS_ITS_RAY_WORKER)
    marker = tmp_path / "killed"
    grid = ["--intervals", "5s", "--rates", "0", "--repeats", "1", "--time-scale", "10", "--ray", "local"]
    done = sweep(tmp_path / "sweep", *grid, job=killer, env={"KILL_WORKER_MARKER": str(marker), "TOTAL_STEPS": "60"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert marker.exists(), "the first attempt never ran"
    retried = [line for line in done.stderr.splitlines() if "Ray worker" in line]
    assert retried == [
        "warning: run i5-r0-sigkill-0: its Ray worker (or the node under it) died; Ray is running it again, "
        "attempt 2 of 3"
    ], done.stderr
    table = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    assert table["retries"].tolist() == [1] and table["final_step"].tolist() == [60] and table["completed"].all()
    assert json.loads(done.stdout)[0]["retries"] == 1  # stdout stays JSON though Ray announced the dead worker


BAD_INPUT = {
    "nothing listens there": ["--ray", "127.0.0.1:1"],
    "Ray Client address": ["--ray", "ray://head:10001"],
    "no port": ["--ray", "head"],
    "with --parallel": ["--ray", "local", "--parallel", "2"],
}


@pytest.mark.parametrize("args", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_ray_input_is_one_line_and_exit_2(tmp_path, args):
    out = tmp_path / "sweep"
    started = time.monotonic()
    assert_one_error_line(spotsim("sweep", "--intervals", "5s", "--rates", "1", *args, "--out", str(out), "--", "true"))
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 2
    assert not out.exists(), "refused before anything was written"


def test_without_ray_the_sweep_says_what_to_install(tmp_path):
    # None in sys.modules is how Python itself marks a module as not importable: `import ray` raises ImportError.
    code = "import sys; sys.modules['ray'] = None; from spotsim.cli import main; main()"
    args = ["sweep", "--intervals", "5s", "--rates", "1", "--ray", "local", "--out", str(tmp_path / "sweep"), "--"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args, "true"],
        env=os.environ | RAY_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == ["spotsim: error: --ray needs Ray: pip install 'spotsim[ray]'"]
    assert not (tmp_path / "sweep").exists()
