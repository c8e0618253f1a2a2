"""``--nodes N``: a torchrun job on N VMs, each preempted on its own, the group re-formed after every loss.

The live tests run a data-parallel job spotsim did not write (``tests/jobs/ddp_dcp_job.py``: DDP on gloo,
checkpoints with torch.distributed.checkpoint) under real torchrun agents, with the rendezvous's dead-node
heartbeat shortened through the job's own ``--rdzv-conf`` (torchrun's default takes ~15 s to give up on
a killed node, which the harness rightly counts as restart overhead, but which would slow the suite).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from spotsim.errors import InvalidOption
from spotsim.events import Cause, fold_attempts, fold_nodes, read_events
from spotsim.harness.torchrun import check_torchrun, node_command, torchrun_launcher
from tests.cli_runner import assert_one_error_line, spotsim

JOBS = Path(__file__).parent / "jobs"
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]
TORCHRUN = (sys.executable, "-m", "torch.distributed.run")
QUICK_RDZV = "--rdzv-conf=keep_alive_interval=1,keep_alive_max_attempt=2"
DDP_JOB = (*TORCHRUN, QUICK_RDZV, "--nproc-per-node=1", str(JOBS / "ddp_dcp_job.py"))
FAST = {"TOTAL_STEPS": "200", "STEP_SLEEP": "0.02", "PG_TIMEOUT": "15", "COLUMNS": "300"}


# -- the command ----------------------------------------------------------------------------------------


def test_torchrun_is_recognised_in_both_spellings():
    assert torchrun_launcher(("torchrun", "--nproc-per-node=2", "train.py")) == 1
    assert torchrun_launcher(("/venv/bin/torchrun", "train.py")) == 1
    assert torchrun_launcher(("python", "-m", "torch.distributed.run", "train.py")) == 3
    assert torchrun_launcher(("python", "train.py", "-m", "torch.distributed.run")) == 4  # last words: not a launcher
    assert torchrun_launcher(("python", "-m", "spotsim.workloads.torch_mlp")) is None


def test_the_harness_writes_the_rendezvous_and_keeps_the_jobs_arguments():
    command = (
        "torchrun",
        "--standalone",
        "--rdzv_conf",
        "keep_alive_interval=1",
        "--nproc-per-node",
        "2",
        "-m",
        "pkg.train",
        "--steps",
        "5",
    )
    written = node_command(command, 3, "127.0.0.1:4000", "run1", 120.4)
    assert (
        written[0] == "torchrun" and written[-5:] == ("--nproc-per-node", "2", "-m", "pkg.train", "--steps", "5")[-5:]
    )
    assert "--standalone" not in written and "--nnodes=3:3" in written
    assert "--rdzv-endpoint=127.0.0.1:4000" in written and "--rdzv-id=run1" in written
    conf = next(w for w in written if w.startswith("--rdzv-conf="))
    assert "keep_alive_interval=1" in conf and "join_timeout=121" in conf and conf.endswith("is_host=false")
    assert written.count("--steps") == 1 and written[written.index("--nproc-per-node") + 1] == "2"


@pytest.mark.parametrize(
    "command, says",
    [
        (("python", "train.py"), "needs a torchrun command"),
        (("torchrun", "--nnodes=2", "train.py"), "drop --nnodes"),
        (("torchrun", "--master_port", "29500", "train.py"), "drop --master-port"),
    ],
)
def test_commands_the_harness_cannot_run_as_a_group_are_refused(command, says):
    with pytest.raises(InvalidOption, match=says):
        check_torchrun(command, 2)


def test_a_script_argument_that_looks_like_a_rendezvous_option_is_the_jobs():
    check_torchrun(("torchrun", "train.py", "--nnodes", "4"), 2)  # after the script: the job's own argument


# -- bad input, in one line ---------------------------------------------------------------------------------


def test_zero_nodes_is_one_line(tmp_path):
    result = spotsim("run", "--nodes", "0", "--interval", "60", "--out", str(tmp_path / "o"), "--", *DDP_JOB)
    assert_one_error_line(result, "--nodes must be a whole number ≥ 1, got 0")


def test_a_command_that_is_not_torchrun_is_one_line(tmp_path):
    args = ("--nodes", "2", "--interval", "60", "--out", str(tmp_path / "o"), "--", sys.executable, "train.py")
    assert_one_error_line(spotsim("run", *args), "--nodes 2 needs a torchrun command")
    assert_one_error_line(spotsim("verify", *args), "--nodes 2 needs a torchrun command")


# -- live groups --------------------------------------------------------------------------------------------


def run(
    tmp_path: Path, *args: str, job: tuple[str, ...] = DDP_JOB, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    cmd = [*SPOTSIM, "run", "--nodes", "2", "--interval-steps", "20", "--bucket", f"file://{tmp_path / 'ck'}"]
    done = subprocess.run(
        [*cmd, *args, "--out", str(out), "--", *job],
        env=os.environ | FAST | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, out


def test_per_node_preemptions_and_lost_work_agree_with_the_run_log(tmp_path):
    """Kill points at steps 70, 150 and 180 (node 0, node 1, node 0), each between two checkpoints, so each
    node's loss costs the group work; --max-preemptions 2 leaves the third unused. Seeded mixed kills."""
    _, out = run(
        tmp_path,
        "--schedule",
        "steps:70,150,180",
        "--time-scale",
        "60",
        "--restart-delay",
        "30",
        "--seed",
        "3",
        "--max-preemptions",
        "2",
        "--kill",
        "mixed:0.5",
    )
    summary = json.loads((out / "summary.json").read_text())
    events = read_events(out / "events.jsonl")
    vms, attempts = fold_nodes(events), fold_attempts(events)
    preempted = Counter(vm.node for vm in vms if vm.cause == Cause.PREEMPTED)
    assert preempted == {0: 1, 1: 1}, "one loss per node; --max-preemptions 2 stops preempting after the second"
    lost_by_node = Counter()
    for before, after in itertools.pairwise(attempts):
        lost_by_node[before.node] += before.last_step - after.first_step
    assert lost_by_node[0] > 0 and lost_by_node[1] > 0, "each node's loss cost the group its steps since a save"
    for node in summary["nodes"]:
        assert node["preemptions"] == preempted[node["node"]]
        assert node["lost_steps"] == lost_by_node[node["node"]]
        assert node["vms"] == sum(vm.node == node["node"] for vm in vms)
    assert sum(n["lost_steps"] for n in summary["nodes"]) == summary["lost_steps"]
    assert summary["final_step"] == 200 and summary["identity_holds"]
    # every node is billed: the group's node-hours are the nodes' own, and at least 2 × the wall
    assert sum(n["billed_hours"] for n in summary["nodes"]) == pytest.approx(summary["billed_hours"], rel=0.02)
    assert summary["billed_hours"] == pytest.approx(2 * summary["sim_wall_s"] / 3600, rel=0.02)
    assert (out / "timeline.png").stat().st_size > 0


def test_a_node_lost_during_rendezvous_and_a_second_kill_during_recovery(tmp_path):
    """fixed:2: each node's first VM lives 2 simulated s, inside the group's rendezvous; both die, the second
    while the group recovers from the first. Later VMs live 1000 s: the job then finishes."""
    _, out = run(tmp_path, "--schedule", "fixed:2,1000", "--restart-delay", "1", "--kill", "sigkill")
    events = read_events(out / "events.jsonl")
    attempts, vms = fold_attempts(events), fold_nodes(events)
    first = attempts[0]
    assert first.cause == Cause.PREEMPTED and not first.started, "lost before the group ever started training"
    recovery = [vm for vm in vms if vm.vm == 0 and vm.exit_t is not None and vm.exit_t > first.exit_t]
    assert len(recovery) == 1 and recovery[0].cause == Cause.PREEMPTED, "the second node died during the recovery"
    assert attempts[-1].cause == Cause.DONE and attempts[-1].done_step == 200
    assert all(a.cause == Cause.PREEMPTED for a in attempts[:-1])


def test_a_worker_that_fails_is_the_jobs_crash_even_when_torchrun_restarts_it(tmp_path):
    """Rank 1 raises once; torchrun's agents restart every worker by themselves (up to --max-restarts) and the
    job goes on from its checkpoint. The harness sees a second start with no node lost: a crash, not hidden."""
    done, out = run(tmp_path, "--time-scale", "1", job=DDP_JOB, env={"CRASH_ONCE_AT": "50"})
    events = read_events(out / "events.jsonl")
    attempts = fold_attempts(events)
    assert [a.cause for a in attempts] == [Cause.CRASH, Cause.DONE]
    assert attempts[1].first_step == 40, "the restarted workers resumed from the checkpoint at step 40"
    stops = [e["reason"] for e in events if e["event"] == "stop"]
    assert stops == ["the workers restarted with no node lost: torchrun restarted them after one failed"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["crashes"] == 1 and summary["lost_steps"] == attempts[0].last_step - 40


def test_verify_passes_a_group_killed_while_it_saves(tmp_path):
    """A kill point at a save step: node 0 is killed as the group begins its DCP save of step 40, node 1
    saving on. A torn directory has no .metadata and is skipped; torn or not, the resume is bit-exact."""
    cmd = [
        *SPOTSIM,
        "verify",
        "--nodes",
        "2",
        "--kill-steps",
        "40",
        "--interval-steps",
        "20",
        "--artifact",
        "model.pt",
    ]
    done = subprocess.run(
        [*cmd, "--bucket", f"file://{tmp_path / 'ck'}", "--out", str(tmp_path / "v"), "--", *DDP_JOB],
        env=os.environ | FAST,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    verdict = json.loads((tmp_path / "v" / "verdict.json").read_text())
    assert verdict["outcome"] == "pass" and verdict["ok"]
    events = read_events(tmp_path / "v" / "run-1" / "events.jsonl")
    killed = [(e["node"], e["step"]) for e in events if e["event"] == "signal"]
    assert killed == [(0, 40)], "kill point k falls on node k mod 2"


def test_a_save_that_waits_for_a_lost_node_is_reported_as_a_hang_not_waited_on(tmp_path, monkeypatch):
    """Node 0 dies inside a save whose ranks wait for each other's files with no deadline: node 1's worker
    would wait until a replacement joins (its agent then restarts it), here longer than the harness waits.
    The harness reports the hang, stops node 1, and counts the job's crash (--max-crashes 1 ends the run)."""
    from spotsim.cost import load_prices
    from spotsim.harness import group
    from spotsim.harness.config import RunConfig
    from spotsim.harness.live import run_live
    from spotsim.preemption import Sigkill, parse_schedule

    monkeypatch.setattr(group, "DRAIN_REAL_S", 4.0)  # the real wait is 120 s; the hang is the same
    monkeypatch.setenv("SLOW_SAVE", "5")
    monkeypatch.setenv("TOTAL_STEPS", "60")
    job = (*TORCHRUN, QUICK_RDZV, "--nproc-per-node=1", str(JOBS / "waits_for_peers_job.py"))
    config = RunConfig(
        command=job,
        out=tmp_path / "out",
        schedule=parse_schedule("steps:20", 0),
        interval_steps=20,
        kill=Sigkill(),
        nodes=2,
        max_crashes=1,
        restart_delay_s=60,  # K = 1: the replacement would come 60 s later
    )
    outcome = run_live(config, load_prices().machine("gcp-n1-standard-8"), bucket=f"file://{tmp_path / 'ck'}")
    events = read_events(tmp_path / "out" / "events.jsonl")
    stops = [e for e in events if e["event"] == "stop"]
    assert len(stops) == 1 and stops[0]["node"] == 1, stops
    assert "still running 4 s after a node was lost: they hang waiting for it" in stops[0]["reason"]
    assert outcome.crash is not None and not outcome.summary.accounting.completed
    assert [a.cause for a in fold_attempts(events)] == [Cause.PREEMPTED]
    causes = {(vm.node, vm.vm): vm.cause for vm in fold_nodes(events)}
    assert causes[(0, 0)] == Cause.PREEMPTED and causes[(1, 0)] == Cause.CRASH
    assert {n["node"]: n["crashes"] for n in outcome.summary.to_dict()["nodes"]} == {0: 0, 1: 1}


# -- the built-in torch-ddp workload ------------------------------------------------------------------------

TORCH_DDP = (*TORCHRUN, "--standalone", QUICK_RDZV, "--nproc-per-node=1", "-m", "spotsim.workloads.torch_ddp")


@pytest.mark.parametrize("kill", ["sigkill", "sigterm"])
def test_verify_passes_torch_ddp_with_one_node_killed_mid_training(tmp_path, kill):
    """The issue's proof: 2 nodes, one killed mid-training, bit-exact. With SIGTERM, the node's notice reaches
    every rank through the per-step flag, the group takes an emergency checkpoint, and nothing is lost."""
    cmd = [*SPOTSIM, "verify", "--nodes", "2", "--preemptions", "1", "--kills-per-run", "1", "--kill", kill]
    done = subprocess.run(
        [*cmd, "--interval-steps", "100", "--artifact", "model.npz", "--out", str(tmp_path / "v"), "--", *TORCH_DDP]
        + ["--steps", "500"],
        env=os.environ | {"COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "identical to the reference" in done.stdout
    attempts = fold_attempts(read_events(tmp_path / "v" / "run-1" / "events.jsonl"))
    assert [a.cause for a in attempts] == [Cause.PREEMPTED, Cause.DONE] and attempts[0].node == 0
    saved = [c for c in attempts[0].checkpoints if c.get("kind") == "emergency"]
    if kill == "sigterm":
        assert saved and saved[-1]["step"] == attempts[0].last_step, "the emergency save holds the last step"
        assert attempts[1].first_step == attempts[0].last_step, "nothing lost"
    else:
        assert not saved and attempts[1].first_step < attempts[0].last_step
