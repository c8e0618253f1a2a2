"""Nothing outlives the harness, and nothing is shared between commands or attempts.

- ``kill -9`` of ``spotsim run`` / ``spotsim verify`` takes the job's whole process group (grandchildren
  included) and the embedded fake-gcs-server with it: the Reaper and the parent-death signal.
- ``spotsim sweep`` interrupted by Ctrl-C or SIGTERM stops its runs, writes the table of those that
  finished and exits 130, leaving no process behind.
- A second command on the same ``--out`` is refused in one line (the lock file).
- Each attempt gets a fresh local disk as ``SPOTSIM_LOCAL_DIR`` and ``TMPDIR``; ``--local-disk keep`` keeps it.

Real subprocesses and real signals; processes are found by scanning ``/proc``, so these tests need Linux.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="scans /proc; parent-death signal")

JOBS = Path(__file__).parent / "jobs"
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]
GONE_WITHIN_S = 5.0


# -- /proc -------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of ``pid``, or None if it no longer exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[2])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def alive(pid: int) -> bool:
    """Running or stopped, not a zombie: an orphaned zombie is dead, whoever is left to reap it."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def live_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and alive(int(entry)):
            yield int(entry)


def job_pids(job: Path) -> set[int]:
    """Live processes running the script ``job`` (a path unique to the test), not the spotsim commands naming it."""
    return {pid for pid in live_pids() if str(job) in (cmd := _cmdline(pid)) and "spotsim.cli" not in cmd}


def descendants(root: int) -> dict[int, str]:
    """{pid: command line} of every live process below ``root``."""
    children: dict[int, list[int]] = {}
    for pid in live_pids():
        if (stat := _stat(pid)) is not None:
            children.setdefault(stat[1], []).append(pid)
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = _cmdline(child)
            todo.append(child)
    return found


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def assert_all_gone(pids: dict[int, str], timeout: float = GONE_WITHIN_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)
    survivors = {pid: cmd for pid, cmd in pids.items() if alive(pid)}
    assert not survivors, f"still running {timeout:g} s after the harness died: {survivors}"


@pytest.fixture(autouse=True)
def harness_tmpdir(tmp_path, monkeypatch) -> Path:
    """The commands' TMPDIR: a killed harness cannot remove its temporary directories (bucket, VM disk)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    return tmp


@pytest.fixture
def kill_leftovers():
    """Register pids this test started (directly or below); any still alive at the end are SIGKILLed."""
    pids: set[int] = set()
    yield pids
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def job_copy(tmp_path) -> Path:
    """watched_loop.py under a name no other process has, so its processes can be found in /proc."""
    path = tmp_path / f"watched_loop_{uuid.uuid4().hex[:10]}.py"
    shutil.copy(JOBS / "watched_loop.py", path)
    return path


def start(cmd: list[str], env: dict[str, str], kill_leftovers: set[int], *, session: bool = False) -> subprocess.Popen:
    process = subprocess.Popen(
        cmd,
        env=os.environ | env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=session,  # a group of its own, as a terminal gives a foreground command
    )
    kill_leftovers.add(process.pid)
    return process


def has_event(path: Path, event: str) -> bool:
    return path.exists() and f'"event": "{event}"' in path.read_text().replace('"event":"', '"event": "')


def sigkill_and_check(harness: subprocess.Popen, job: Path, kill_leftovers: set[int], *, grandchild: str = "") -> None:
    """SIGKILL ``harness``; everything below it (job, job's group, emulator, reaper) must be gone within 5 s."""
    below = descendants(harness.pid)
    kill_leftovers.update(below)
    jobs = {pid for pid, cmd in below.items() if str(job) in cmd}
    emulators = {pid for pid, cmd in below.items() if "fake-gcs-server" in cmd}
    reapers = {pid for pid, cmd in below.items() if "groups = set()" in cmd}
    assert jobs, f"the job is not running under the harness: {below}"
    assert emulators, f"no fake-gcs-server under the harness: {below}"
    assert reapers, f"no reaper under the harness: {below}"
    job_groups = {_stat(pid)[2] for pid in jobs}
    assert all(group not in (os.getpgid(0), _stat(harness.pid)[2]) for group in job_groups), "a group of its own"
    if grandchild:
        [job_pid] = [pid for pid in jobs if _stat(pid)[1] == harness.pid]
        sleepers = {pid for pid, cmd in below.items() if cmd.startswith(grandchild)}
        assert sleepers, f"the job's grandchild {grandchild!r} is not running: {below}"
        assert all(_stat(pid)[2] == job_pid for pid in sleepers), "the grandchild is in the job's process group"

    harness.kill()
    harness.wait(timeout=10)
    assert_all_gone(below)
    assert not job_pids(job), "no process of the job survives, wherever it was"


# -- kill -9 of the harness --------------------------------------------------------------------


def test_kill_9_of_spotsim_run_takes_the_job_and_the_emulator_with_it(tmp_path, job_copy, kill_leftovers):
    out = tmp_path / "out"
    harness = start(
        [*SPOTSIM, "run", "--interval-steps", "20", "--out", str(out), "--", sys.executable, str(job_copy)],
        {"STEP_SLEEP": "0.01", "TOTAL_STEPS": "100000"},
        kill_leftovers,
    )
    wait_for(lambda: has_event(out / "events.jsonl", "checkpoint") or harness.poll() is not None, 30, "a checkpoint")
    assert harness.poll() is None, harness.stderr.read().decode()
    sigkill_and_check(harness, job_copy, kill_leftovers)

    # The lock died with the harness: the next run on the same --out goes ahead.
    again = subprocess.run(
        [*SPOTSIM, "run", "--interval-steps", "20", "--out", str(out), "--", sys.executable, str(job_copy)],
        env=os.environ | {"STEP_SLEEP": "0.001", "TOTAL_STEPS": "20"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((out / "summary.json").read_text())["final_step"] == 20


def test_kill_9_of_spotsim_verify_during_the_reference_takes_everything_with_it(tmp_path, job_copy, kill_leftovers):
    out = tmp_path / "verify"
    harness = start(
        [*SPOTSIM, "verify", "--interval-steps", "20", "--out", str(out), "--", sys.executable, str(job_copy)],
        {"STEP_SLEEP": "0.01", "TOTAL_STEPS": "100000"},
        kill_leftovers,
    )
    events = out / "reference" / "events.jsonl"
    wait_for(lambda: has_event(events, "checkpoint") or harness.poll() is not None, 30, "a reference checkpoint")
    assert harness.poll() is None, harness.stderr.read().decode()
    sigkill_and_check(harness, job_copy, kill_leftovers)


def test_kill_9_of_spotsim_run_takes_the_jobs_grandchildren_too(tmp_path, job_copy, kill_leftovers):
    """The parent-death signal alone reaches one process; the reaper kills the job's whole group."""
    out = tmp_path / "out"
    sleeper = f"sleep {300 + int(uuid.uuid4().int % 1000)}"  # a grandchild with a recognizable command line
    shell = f'{sleeper} & exec "{sys.executable}" "{job_copy}"'
    harness = start(
        [*SPOTSIM, "run", "--interval-steps", "20", "--out", str(out), "--", "sh", "-c", shell],
        {"STEP_SLEEP": "0.01", "TOTAL_STEPS": "100000"},
        kill_leftovers,
    )
    wait_for(lambda: has_event(out / "events.jsonl", "checkpoint") or harness.poll() is not None, 30, "a checkpoint")
    assert harness.poll() is None, harness.stderr.read().decode()
    sigkill_and_check(harness, job_copy, kill_leftovers, grandchild=sleeper)


# -- sweep: Ctrl-C and SIGTERM -----------------------------------------------------------------


def start_sweep(
    out: Path, job: Path, kill_leftovers: set[int], *, session: bool = False
) -> tuple[subprocess.Popen, dict[int, str]]:
    """A sweep of 4 never-ending runs, 2 at a time; returns once both are training, with everything below it."""
    cmd = [
        *SPOTSIM,
        "sweep",
        "--intervals",
        "5s",
        "--rates",
        "0",
        "--repeats",
        "4",
        "--parallel",
        "2",
        "--time-scale",
        "1",
        "--out",
        str(out),
        "--",
        sys.executable,
        str(job),
    ]
    sweep = start(cmd, {"STEP_SLEEP": "0.01", "TOTAL_STEPS": "100000"}, kill_leftovers, session=session)

    def two_runs_training() -> bool:
        logs = list((out / "runs").glob("*/events.jsonl"))
        return sweep.poll() is not None or (
            len(logs) == 2 and all(has_event(log, "step") for log in logs) and len(job_pids(job)) == 2
        )

    wait_for(two_runs_training, 45, "two runs of the sweep training")
    assert sweep.poll() is None, sweep.stderr.read().decode()
    below = descendants(sweep.pid)
    kill_leftovers.update(below)
    assert sum("fake-gcs-server" in cmd for cmd in below.values()) == 2, below
    return sweep, below


@pytest.mark.parametrize(
    "sig, terminal",
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigint", "sigterm", "ctrl-c-at-a-terminal"],
)
def test_an_interrupted_sweep_stops_its_runs_writes_the_table_and_exits_130(
    tmp_path, job_copy, kill_leftovers, sig, terminal
):
    """SIGINT or SIGTERM to the sweep; or Ctrl-C at a terminal: SIGINT to its whole group (its runs and their
    emulators too)."""
    out = tmp_path / "sweep"
    sweep, below = start_sweep(out, job_copy, kill_leftovers, session=terminal)
    if terminal:
        os.killpg(sweep.pid, sig)
    else:
        sweep.send_signal(sig)
    try:
        _, stderr = sweep.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the sweep did not exit within 45 s of {sig.name}")
    assert sweep.returncode == 130, f"exit status {sweep.returncode}: {stderr.decode()}"
    assert b"Traceback" not in stderr, stderr.decode()
    assert (out / "sweep.csv").exists(), "the table of the runs that finished (none) is written"
    assert (out / "sweep.csv").read_text().strip() == "", "no run finished, so no row"
    assert_all_gone(below)
    assert not job_pids(job_copy), "no run was started after the interrupt"
    logs = list((out / "runs").glob("*/events.jsonl"))
    assert len(logs) == 2, "the runs not yet started were cancelled"
    for log in logs:  # each run ended its job itself, and said so
        assert has_event(log, "interrupted"), log


def test_kill_9_of_a_sweep_ends_its_runs_and_their_jobs(tmp_path, job_copy, kill_leftovers):
    """The runs get SIGTERM when the sweep dies (parent-death signal) and stop their jobs and emulators."""
    out = tmp_path / "sweep"
    sweep, below = start_sweep(out, job_copy, kill_leftovers)
    sweep.kill()
    sweep.wait(timeout=10)
    assert_all_gone(below, timeout=20)  # each run still writes its partial summary and timeline first
    assert not job_pids(job_copy)
    for log in (out / "runs").glob("*/events.jsonl"):
        assert has_event(log, "interrupted"), log


# -- one command per --out -------------------------------------------------------------------------


def test_a_second_command_on_the_same_out_is_refused_in_one_line(tmp_path, job_copy):
    out = tmp_path / "out"
    out.mkdir()
    job = ["--", sys.executable, str(job_copy)]
    commands = {
        "run": [*SPOTSIM, "run", "--interval-steps", "5", "--out", str(out), *job],
        "verify": [*SPOTSIM, "verify", "--interval-steps", "5", "--out", str(out), *job],
        "sweep": [*SPOTSIM, "sweep", "--intervals", "5s", "--rates", "0", "--repeats", "1", "--out", str(out), *job],
    }
    env = os.environ | {"STEP_SLEEP": "0.001", "TOTAL_STEPS": "10"}  # quick to finish if the lock did not hold
    with open(out / ".spotsim.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another spotsim command, as far as they can tell
        for name, cmd in commands.items():
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert done.returncode == 2, f"{name}: {done.stdout}{done.stderr}"
            assert len(lines) == 1 and lines[0].startswith("spotsim: error:"), f"{name}: {done.stderr}"
            assert f"another spotsim command is writing to {out}" in lines[0], f"{name}: {done.stderr}"
    assert sorted(p.name for p in out.iterdir()) == [".spotsim.lock"], "nothing was written while refused"


# -- the VM's local disk -----------------------------------------------------------------------------

LOCAL_DISK_JOB = """
import json, os, sys, tempfile, time

attempt = os.environ["SPOTSIM_ATTEMPT"]
local = os.environ["SPOTSIM_LOCAL_DIR"]
marker = os.path.join(local, "left-by-an-earlier-attempt")


def emit(event, **fields):
    with open(os.environ["SPOTSIM_EVENTS"], "a") as f:
        f.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\\n")


out = os.environ["SPOTSIM_OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
seen = {
    "local": local, "tmpdir": os.environ.get("TMPDIR"), "gettempdir": tempfile.gettempdir(),
    "marker": os.path.exists(marker), "local_exists": os.path.isdir(local),
}
with open(os.path.join(out, f"attempt-{attempt}.json"), "w") as f:
    json.dump(seen, f)
with open(marker, "w") as f:
    f.write(attempt)
emit("start", attempt=int(attempt), resumed_step=None)
for step in range(1, 6):
    time.sleep(0.05 if attempt == "1" else 2.0)  # attempt 0 outlives its 1 s VM
    emit("step", step=step)
emit("done", step=5)
"""


@pytest.mark.parametrize("mode", ["wipe", "keep", None], ids=["wipe", "keep", "default"])
def test_each_attempt_gets_a_local_disk_as_SPOTSIM_LOCAL_DIR_and_TMPDIR(tmp_path, mode):
    job = tmp_path / "local_disk_job.py"
    job.write_text(LOCAL_DISK_JOB)
    out = tmp_path / "out"
    cmd = [
        *SPOTSIM,
        "run",
        "--interval",
        "60",
        "--schedule",
        "fixed:1",
        "--kill",
        "sigkill",
        "--bucket",
        (tmp_path / "ckpt").as_uri(),
        "--out",
        str(out),
        *(["--local-disk", mode] if mode else []),
        "--",
        sys.executable,
        str(job),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attempts"] == 2 and summary["preemptions"] == 1 and summary["completed"], summary
    first, second = (json.loads((out / "output" / f"attempt-{a}.json").read_text()) for a in (0, 1))
    for seen in (first, second):
        assert seen["local_exists"], "the local disk exists when the attempt starts"
        assert seen["tmpdir"] == seen["local"] == seen["gettempdir"], "TMPDIR is the local disk"
        local = Path(seen["local"])
        assert local.is_absolute()
        assert not local.is_relative_to(out) and not out.is_relative_to(local), "local disk apart from --out"
        assert not local.is_relative_to(tmp_path / "ckpt"), "local disk apart from the bucket"
    assert not first["marker"], "the first attempt starts on an empty disk"
    assert second["marker"] is (mode == "keep"), "wiped between attempts unless --local-disk keep"
    assert not Path(first["local"]).exists(), "the local disk is removed when the run ends"
