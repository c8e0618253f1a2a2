"""Bad input on the command line: one ``spotsim: error:`` line, exit 2, no traceback, no hang, no OOM.

Each case runs the app in process (typer's ``CliRunner``) under a timeout, so a hang fails the
test instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from cli_runner import assert_one_error_line, spotsim

from spotsim.errors import InvalidOption, StoreError
from spotsim.preemption import parse_schedule
from spotsim.sim import Job
from spotsim.sim.montecarlo import check_budget
from spotsim.storage import open_store
from spotsim.storage.emulator import free_port

pytestmark = pytest.mark.timeout(120)


# -- 1. `optimal` where no interval can work ----------------------------------


def test_optimal_with_checkpoints_far_beyond_the_mtbf_says_the_job_never_finishes():
    # C = 2 h against M = 10 s: e^{(τ+C)/M} overflows a float; the answer is that no interval works.
    result = spotsim("optimal", "--checkpoint-cost", "2h", "--preempt-rate", "360")
    assert_one_error_line(result, "no checkpoint interval lets this job finish", "10^313")


# -- 2. `simulate --calibrate` on a malformed summary.json --------------------


@pytest.mark.parametrize(
    ("summary", "says"),
    [
        ('{"step_time_s": "fast"}', "step_time_s must be a number"),
        ('{"checkpoints": "x", "checkpoint_blocking_s": 3}', "checkpoints must be a count"),
        ('{"checkpoints": 2}', "no checkpoint_blocking_s"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"restart_overhead_s": -5}', "restart_overhead_s must be a number of seconds ≥ 0"),
        ('{"step_time_s": NaN}', "got nan"),
        ('{"step_time_s": true}', "got True"),
        ("{not json", "cannot calibrate from"),
    ],
)
def test_calibrate_from_a_malformed_summary(tmp_path, summary, says):
    (tmp_path / "summary.json").write_text(summary)
    result = spotsim("simulate", "--intervals", "1h", "--trials", "10", "--calibrate", str(tmp_path))
    assert_one_error_line(result, says)


# -- 3. `simulate` beyond memory or time --------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--intervals", "24h"], "VM lifetimes"),  # one 24 h segment against 2 h uptimes
        (["--intervals", "1e-6"], "VM lifetimes"),  # 8.6e10 checkpoints
        (["--intervals", "1h", "--preempt-rate", "1e9"], "practically infinitely many"),
        (["--intervals", "1h", "--work-hours", "1e9"], "VM lifetimes"),
        (["--intervals", "1h", "--trials", "1000000000"], "GiB"),
        (["--intervals", "1h", "--schedule", "weibull:0.001"], "VM lifetimes"),  # Γ(1001) overflowed
    ],
)
def test_simulate_out_of_reach_is_refused_at_once(args, says):
    started = time.monotonic()
    result = spotsim("simulate", *args)
    assert_one_error_line(result, says, "bound")
    assert time.monotonic() - started < 15  # refused before simulating, not after


def test_the_loop_limit_backs_up_the_estimate(monkeypatch):
    # Where the estimate misjudges a schedule, the loop still stops, with the same kind of line.
    from spotsim.sim import montecarlo, simulate

    monkeypatch.setattr(montecarlo, "_LOOP_LIMIT", 3)
    job = Job(work_s=24 * 3600, checkpoint_s=30, restart_s=60)
    with pytest.raises(InvalidOption, match="stopped after 3 VM lifetimes"):
        simulate(job, [3600.0], parse_schedule("poisson", 2), trials=100)


def test_sensible_simulations_are_not_refused():
    # The example in docs/cli.md, end to end.
    args = [
        "--intervals",
        "5m,15m,30m,1h,2h",
        "--work-hours",
        "24",
        "--checkpoint-cost",
        "1m",
        "--restart",
        "2m",
        "--preempt-rate",
        "0.5",
        "--trials",
        "10000",
        "--json",
    ]
    result = spotsim("simulate", *args)
    assert result.exit_code == 0, result.stderr
    # benchmarks/sim_speed.py: 50 intervals × 10,000 trials; and a week-long job at 6 preemptions an hour.
    check_budget(
        Job(work_s=24 * 3600, checkpoint_s=60, restart_s=120),
        list(np.linspace(300, 7200, 50)),
        parse_schedule("poisson", 0.5),
        10_000,
    )
    check_budget(Job(work_s=168 * 3600, checkpoint_s=30, restart_s=60), [600.0], parse_schedule("poisson", 6), 10_000)
    # A 24 h interval is fine when every preemption gives notice enough for an emergency save.
    sigterm = Job(work_s=24 * 3600, checkpoint_s=30, restart_s=60, grace_s=30, sigkill_fraction=0.0)
    check_budget(sigterm, [24 * 3600.0], parse_schedule("poisson", 0.5), 10_000)
    with pytest.raises(InvalidOption):
        check_budget(Job(work_s=24 * 3600, checkpoint_s=30), [24 * 3600.0], parse_schedule("poisson", 0.5), 10)


# -- 4. `emulator start` on a read-only root ----------------------------------


def test_emulator_start_on_a_read_only_root(tmp_path, unwritable_root):
    home = {"SPOTSIM_HOME": str(tmp_path / "home")}
    try:
        result = spotsim("emulator", "start", "--root", str(unwritable_root), "--port", str(free_port()), env=home)
        assert_one_error_line(result, "cannot use", "as the emulator's data directory")
    finally:  # had it started after all, do not leave it running
        spotsim("emulator", "stop", env=home)


# -- 5. an endpoint that is some other HTTP server ----------------------------


@pytest.fixture
def plain_http_server(tmp_path):
    """``python -m http.server`` on a loopback port: it answers 404/501 HTML, not GCS JSON."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=1).close()
                break
            assert time.monotonic() < deadline, "http.server did not start"
            time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_open_store_on_a_server_that_is_not_gcs(plain_http_server):
    with pytest.raises(StoreError, match=f"{plain_http_server} does not answer like a GCS JSON API") as info:
        open_store("gs://some-bucket/x", endpoint=plain_http_server)
    assert "\n" not in str(info.value)


def test_run_with_storage_emulator_host_that_is_not_gcs(tmp_path, plain_http_server):
    result = spotsim(
        "run",
        "--interval",
        "60",
        "--bucket",
        "gs://some-bucket/x",
        "--out",
        str(tmp_path / "out"),
        "--",
        sys.executable,
        "-c",
        "pass",
        env={"STORAGE_EMULATOR_HOST": plain_http_server},
    )
    assert_one_error_line(result, f"{plain_http_server} does not answer like a GCS JSON API")
