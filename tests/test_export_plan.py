"""``--export-plan``: the files written for each cloud, and the replay scripts run against fake cloud CLIs.

The scripts are syntax-checked by real bash and then run end to end with stand-ins for ``gcloud``, ``aws`` and
``az`` on PATH: the real CLIs need a real Spot VM and an account, so fakes that log their arguments and keep a VM
state in a file are the only way to run the scripts' waits, polls and restarts here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from spotsim.errors import InvalidOption
from spotsim.export_plan import EXPORT_KINDS, LocalMeasurements, MeasuredPreemption, PlannedPreemption, export_plan

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

PLAN = [
    PlannedPreemption(attempt=1, uptime_s=100.4, notice_s=120, grace_s=30, sigkill=False),
    PlannedPreemption(attempt=2, uptime_s=250.6, notice_s=120, grace_s=30, sigkill=False),
    PlannedPreemption(attempt=3, uptime_s=30, notice_s=0, grace_s=30, sigkill=True),
    PlannedPreemption(attempt=4, uptime_s=400, notice_s=120, grace_s=30, sigkill=False),
]
MEASURED = LocalMeasurements(
    provider="aws-spot",
    command="python train.py --steps 500",
    interval_s=60.0,
    preemptions=4,
    lost_steps=17,
    lost_work_s=42.25,
    restart_overhead_s=3.5,
    checkpoint_blocking_s=None,
    emergency_saves=2,
    interruptions=[
        MeasuredPreemption(attempt=1, noticed_after_s=0.4, emergency_committed=True, exit="inside_grace"),
        MeasuredPreemption(attempt=2, noticed_after_s=None, emergency_committed=False, exit="killed"),
    ],
)
SCRIPT = {"gcloud": "replay-gcloud.sh", "aws-fis": "replay-aws.sh", "azure": "replay-azure.sh"}
COMMAND = {
    "gcloud": 'gcloud compute instances simulate-maintenance-event "$VM" --zone "$ZONE"',
    "aws-fis": "interrupt ",
    "azure": 'az vm simulate-eviction --resource-group "$RG" --name "$VM"',
}
ARN = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"
ROLE = "arn:aws:iam::123456789012:role/fis-spot"
ARGS = {"gcloud": ["my-vm", "us-central1-a"], "aws-fis": [ARN, ROLE], "azure": ["my-rg", "my-vm"]}


def _waits_and_commands(script: str, kind: str) -> list[tuple[int, str]]:
    """(wait, cloud command) per preemption, in the order the script runs them."""
    lines = [line.strip() for line in script.splitlines()]
    return [
        (int(line.split()[1]), lines[n + 1])
        for n, line in enumerate(lines)
        if re.fullmatch(r"wait_uptime \d+", line) and lines[n + 1].startswith(COMMAND[kind])
    ]


@pytest.mark.parametrize("kind", EXPORT_KINDS)
def test_each_kind_writes_its_files_and_a_readme(kind, tmp_path):
    paths = export_plan(kind, tmp_path / "plan", PLAN, MEASURED)
    names = {p.name for p in paths}
    expected = {"README.md", SCRIPT[kind]} | (
        {f"fis-template-{i}.json" for i in (1, 2, 3)} if kind == "aws-fis" else set()
    )
    assert names == expected
    assert all(p.parent == tmp_path / "plan" and p.is_file() for p in paths)
    assert os.stat(tmp_path / "plan" / SCRIPT[kind]).st_mode & 0o777 == 0o755
    assert not list((tmp_path / "plan").glob(".*.tmp"))
    readme = (tmp_path / "plan" / "README.md").read_text()
    assert "The local plan had 4 preemption(s); these files replay the first 3" in readme
    assert "| lost steps | 17 |" in readme and "| lost work | 42.2 s |" in readme
    assert "| 1 | 0.4 s | yes | inside_grace |" in readme and "| 2 | — | no | killed |" in readme
    assert "Does the job see the notice?" in readme and "emergency checkpoint commit before the kill" in readme
    assert "SIGKILL and no notice" in readme  # attempt 3 of the plan


@pytest.mark.parametrize("kind", EXPORT_KINDS)
def test_scripts_pass_bash_syntax_check(kind, tmp_path):
    export_plan(kind, tmp_path, PLAN, MEASURED)
    result = subprocess.run(["bash", "-n", str(tmp_path / SCRIPT[kind])], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / SCRIPT[kind]).read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text


@pytest.mark.parametrize("kind", ["gcloud", "azure"])
def test_scripts_wait_the_whole_uptime_before_each_command(kind, tmp_path):
    export_plan(kind, tmp_path, PLAN, MEASURED)
    script = (tmp_path / SCRIPT[kind]).read_text()
    assert _waits_and_commands(script, kind) == [(100, COMMAND[kind]), (251, COMMAND[kind]), (30, COMMAND[kind])]
    assert script.count("restart_vm\n") == 3  # one restart after each preemption
    restart = "gcloud compute instances start" if kind == "gcloud" else "az vm start"
    assert restart in script


def test_aws_script_starts_each_experiment_one_fis_duration_before_the_local_sigterm(tmp_path):
    plan = [
        PlannedPreemption(attempt=1, uptime_s=500, notice_s=120, grace_s=30, sigkill=False),  # PT2M: start at t0
        PlannedPreemption(attempt=2, uptime_s=500, notice_s=30, grace_s=30, sigkill=False),  # PT2M: SIGTERM at 530
        PlannedPreemption(attempt=3, uptime_s=500, notice_s=300, grace_s=30, sigkill=False),  # PT5M: start at t0
        PlannedPreemption(attempt=4, uptime_s=10, notice_s=0, grace_s=30, sigkill=True),  # too early for FIS
    ]
    export_plan("aws-fis", tmp_path, plan, MEASURED, limit=4)
    waits = _waits_and_commands((tmp_path / "replay-aws.sh").read_text(), "aws-fis")
    assert waits == [(500, "interrupt 1"), (410, "interrupt 2"), (500, "interrupt 3"), (0, "interrupt 4")]
    readme = (tmp_path / "README.md").read_text()
    assert (
        "Preemption 4: FIS cannot interrupt before 120 s of uptime, so the real interruption comes at 120 s" in readme
    )
    assert "Preemption 1: FIS cannot" not in readme


def test_fis_templates_follow_the_fis_schema(tmp_path):
    export_plan("aws-fis", tmp_path, PLAN, MEASURED)
    template = json.loads((tmp_path / "fis-template-1.json").read_text())
    assert set(template) == {"description", "targets", "actions", "stopConditions", "roleArn", "tags"}
    (action,) = template["actions"].values()
    assert action["actionId"] == "aws:ec2:send-spot-instance-interruptions"
    assert action["parameters"] == {"durationBeforeInterruption": "PT2M"}
    target = template["targets"][action["targets"]["SpotInstances"]]
    assert target == {
        "resourceType": "aws:ec2:spot-instance",
        "resourceArns": ["REPLACE_WITH_INSTANCE_ARN"],
        "selectionMode": "ALL",
    }
    assert template["stopConditions"] == [{"source": "none"}]
    assert template["roleArn"] == "REPLACE_WITH_ROLE_ARN"
    assert "python train.py" in template["description"]


@pytest.mark.parametrize(
    ("notice_s", "iso", "warned"), [(120, "PT2M", False), (30, "PT2M", True), (1200, "PT15M", True)]
)
def test_fis_duration_is_clamped_to_two_to_fifteen_minutes(notice_s, iso, warned, tmp_path):
    plan = [PlannedPreemption(attempt=1, uptime_s=2000, notice_s=notice_s, grace_s=30, sigkill=False)]
    export_plan("aws-fis", tmp_path, plan, MEASURED)
    template = json.loads((tmp_path / "fis-template-1.json").read_text())
    assert template["actions"]["interrupt"]["parameters"]["durationBeforeInterruption"] == iso
    readme = (tmp_path / "README.md").read_text()
    assert (f"the local notice was {notice_s} s; FIS accepts 2 to 15 whole minutes" in readme) is warned


def test_gcloud_readme_names_the_beta_notice_field_and_the_rate_limit(tmp_path):
    export_plan("gcloud", tmp_path, PLAN, MEASURED)
    readme = (tmp_path / "README.md").read_text()
    assert "--preemption-notice-duration" in readme and "scheduling.preemptionNoticeDuration" in readme
    assert "Beta and not confirmed on the primary documentation page" in readme
    assert "rate-limited per region" in readme and "real Spot VM" in readme
    assert "The local run emulated aws-spot, not GCP" in readme


@pytest.mark.parametrize("limit", [1, 2, 10])
def test_limit_is_honoured(limit, tmp_path):
    export_plan("aws-fis", tmp_path / "aws", PLAN, MEASURED, limit=limit)
    export_plan("gcloud", tmp_path / "gcp", PLAN, MEASURED, limit=limit)
    replayed = min(limit, len(PLAN))
    assert len(list((tmp_path / "aws").glob("fis-template-*.json"))) == replayed
    script = (tmp_path / "gcp" / "replay-gcloud.sh").read_text()
    assert len(_waits_and_commands(script, "gcloud")) == replayed
    assert f"these files replay the first {replayed}" in (tmp_path / "gcp" / "README.md").read_text()


# --- the scripts, run against fake cloud CLIs -------------------------------------------------------------------------

FAKE_CLIS = {
    "gcloud": r"""
case "$*" in
  *simulate-maintenance-event*) echo TERMINATED >"$FAKE_DIR/state" ;;
  *"instances start "*) echo RUNNING >"$FAKE_DIR/state" ;;
  *describe*) cat "$FAKE_DIR/state" ;;
esac
""",
    "aws": r"""
case "$*" in
  *create-experiment-template*) for arg in "$@"; do
      if [[ $arg == file://* ]]; then cp "${arg#file://}" "$FAKE_DIR/input-$(ls "$FAKE_DIR" | grep -c ^input-).json"; fi
    done
    echo EXT1 ;;
  *start-experiment*) echo stopping >"$FAKE_DIR/state"; echo EXP1 ;;
  *describe-instances*) state=$(cat "$FAKE_DIR/state"); echo "$state"
    [[ $state == stopping ]] && echo stopped >"$FAKE_DIR/state"
    [[ $state == stopped ]] && echo running >"$FAKE_DIR/state"; true ;;
esac
""",
    "az": r"""
case "$*" in
  *simulate-eviction*) echo PowerState/deallocated >"$FAKE_DIR/state" ;;
  *"vm start "*) echo PowerState/running >"$FAKE_DIR/state" ;;
  *get-instance-view*) cat "$FAKE_DIR/state" ;;
esac
""",
}
RUNNING = {"gcloud": "RUNNING", "aws-fis": "running", "azure": "PowerState/running"}


def _fake_env(tmp_path: Path, kind: str) -> dict[str, str]:
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    (fake / "log").touch()
    (fake / "state").write_text(RUNNING[kind] + "\n")
    for cli, body in FAKE_CLIS.items():
        path = fake / "bin" / cli
        path.write_text(f'#!/usr/bin/env bash\necho "{cli} $*" >>"$FAKE_DIR/log"\n{body}')
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    path_var = f"{fake / 'bin'}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path_var, "FAKE_DIR": str(fake), "POLL_S": "0", "POLL_TIMEOUT_S": "5"}


@pytest.mark.parametrize("kind", EXPORT_KINDS)
def test_script_replays_each_preemption_and_restarts_the_vm(kind, tmp_path):
    plan = [
        PlannedPreemption(attempt=1, uptime_s=0, notice_s=120, grace_s=30, sigkill=False),
        PlannedPreemption(attempt=2, uptime_s=0, notice_s=120, grace_s=30, sigkill=False),
    ]
    export_plan(kind, tmp_path / "plan", plan, MEASURED)
    env = _fake_env(tmp_path, kind)
    cmd = [str(tmp_path / "plan" / SCRIPT[kind]), *ARGS[kind]]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert "replayed 2 preemption(s)" in result.stderr
    log = (tmp_path / "fake" / "log").read_text().splitlines()
    if kind == "gcloud":
        triggers = [line for line in log if "simulate-maintenance-event my-vm --zone us-central1-a" in line]
        starts = [line for line in log if line == "gcloud compute instances start my-vm --zone us-central1-a"]
    elif kind == "azure":
        triggers = [line for line in log if line == "az vm simulate-eviction --resource-group my-rg --name my-vm"]
        starts = [line for line in log if line == "az vm start --resource-group my-rg --name my-vm"]
    else:
        triggers = [
            line for line in log if "fis start-experiment --region us-east-1 --experiment-template-id EXT1" in line
        ]
        starts = [line for line in log if "describe-instances" in line and "i-0123456789abcdef0" in line]
        inputs = sorted((tmp_path / "fake").glob("input-*.json"))
        assert len(inputs) == 2
        filled = json.loads(inputs[0].read_text())
        assert filled["roleArn"] == ROLE and filled["targets"]["SpotInstance"]["resourceArns"] == [ARN]
    assert len(triggers) == 2 and len(starts) >= 2


def test_script_waits_the_planned_uptime(tmp_path):
    plan = [PlannedPreemption(attempt=1, uptime_s=1.2, notice_s=0, grace_s=30, sigkill=False)]
    export_plan("gcloud", tmp_path / "plan", plan, MEASURED)
    env = _fake_env(tmp_path, "gcloud")
    result = subprocess.run(
        [str(tmp_path / "plan" / "replay-gcloud.sh"), *ARGS["gcloud"]], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "waiting 1 s, until the VM has been up 1 s" in result.stderr
    # Already up longer than planned: no wait at all.
    env["UPTIME_AT_START"] = "5"
    (tmp_path / "fake" / "state").write_text("RUNNING\n")
    result = subprocess.run(
        [str(tmp_path / "plan" / "replay-gcloud.sh"), *ARGS["gcloud"]], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0 and "waiting -4 s" in result.stderr


@pytest.mark.parametrize("kind", EXPORT_KINDS)
def test_script_without_arguments_prints_usage(kind, tmp_path):
    export_plan(kind, tmp_path, PLAN, MEASURED)
    env = {k: v for k, v in os.environ.items() if k not in {"VM", "ZONE", "RG", "INSTANCE_ARN", "ROLE_ARN"}}
    result = subprocess.run([str(tmp_path / SCRIPT[kind])], env=env, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("usage: ")


# --- bad input --------------------------------------------------------------------------------------------------------


def test_unknown_kind_is_invalid(tmp_path):
    with pytest.raises(InvalidOption, match="unknown kind 'ibm'; choose one of gcloud, aws-fis, azure"):
        export_plan("ibm", tmp_path, PLAN, MEASURED)


def test_empty_plan_is_invalid(tmp_path):
    with pytest.raises(InvalidOption, match="no preemptions"):
        export_plan("gcloud", tmp_path, [], MEASURED)
    assert not list(tmp_path.iterdir())


def test_file_as_directory_is_invalid(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidOption, match="is a file, not a directory"):
        export_plan("gcloud", tmp_path / "f", PLAN, MEASURED)
    with pytest.raises(InvalidOption, match="cannot create directory"):
        export_plan("gcloud", tmp_path / "f" / "sub", PLAN, MEASURED)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_is_invalid(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(InvalidOption, match="not writable"):
        export_plan("gcloud", tmp_path / "ro", PLAN, MEASURED)


def test_bad_limit_and_bad_plan_entries_are_invalid(tmp_path):
    with pytest.raises(InvalidOption, match="limit must be a whole number >= 1"):
        export_plan("gcloud", tmp_path, PLAN, MEASURED, limit=0)
    with pytest.raises(InvalidOption, match="uptime_s must be >= 0"):
        PlannedPreemption(attempt=1, uptime_s=float("nan"), notice_s=0, grace_s=30, sigkill=False)
    with pytest.raises(InvalidOption, match="grace_s must be >= 0"):
        PlannedPreemption(attempt=1, uptime_s=1, notice_s=0, grace_s=-1, sigkill=False)
