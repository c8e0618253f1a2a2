"""``--export-plan``: replay the first preemptions of a local run once on a real cloud VM.

The plan's times are simulated seconds, which are real seconds on a real VM, so a local run's plan can be replayed
with each cloud's own test tool: ``gcloud compute instances simulate-maintenance-event``, AWS Fault Injection
Service's ``aws:ec2:send-spot-instance-interruptions`` and ``az vm simulate-eviction``. This module only writes
files (a bash script per cloud, FIS experiment templates for AWS, and a README saying what the local run measured
and what to compare): nothing is sent to any cloud and no cloud SDK is imported.

Where the moment of each real preemption is chosen: the ``wait_uptime`` line before each cloud command, and
:class:`_FisTiming` for AWS, whose interruption comes a whole FIS duration after the experiment starts.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spotsim.errors import InvalidOption

logger = logging.getLogger(__name__)

FIS_MIN_S, FIS_MAX_S = 120, 900  # FIS durationBeforeInterruption: 2 to 15 minutes
GCP_SPOT_GRACE_S = 30  # ACPI soft-off to hard power-off on a Spot VM (providers.md)
GCP_NOTICES_S = (0, 120)  # preemption notice durations a GCP Spot VM offers (Beta field)
CLOUD_PROVIDERS = {"gcloud": ("gcp-spot", "gcp-preemptible", "gke"), "aws-fis": ("aws-spot",), "azure": ("azure-spot",)}


@dataclass(frozen=True)
class PlannedPreemption:
    """One preemption of the local plan, in simulated seconds (real seconds on a real VM).

    The notice comes at ``uptime_s`` of VM uptime (t0); SIGTERM at t0 + ``notice_s``; SIGKILL ``grace_s`` later.
    ``sigkill``: the local run killed the job with no notice at all.
    """

    attempt: int
    uptime_s: float
    notice_s: float
    grace_s: float
    sigkill: bool

    def __post_init__(self) -> None:
        for name in ("uptime_s", "notice_s", "grace_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InvalidOption(f"planned preemption of attempt {self.attempt}: {name} must be >= 0, got {value!r}")


@dataclass(frozen=True)
class MeasuredPreemption:
    """How the job met one local preemption: the columns the real run is compared with."""

    attempt: int
    noticed_after_s: float | None  # simulated seconds from the notice to the job seeing it; None: never seen
    emergency_committed: bool  # its emergency checkpoint committed before the kill
    exit: str  # before_signal | inside_grace | killed


@dataclass(frozen=True)
class LocalMeasurements:
    """What the local run measured, written into the README so the real run can be compared with it."""

    provider: str
    command: str
    interval_s: float | None
    preemptions: int
    lost_steps: int
    lost_work_s: float
    restart_overhead_s: float | None
    checkpoint_blocking_s: float | None
    emergency_saves: int
    interruptions: list[MeasuredPreemption] = field(default_factory=list)


@dataclass
class _Bundle:
    """What one kind exports, before anything is written."""

    files: dict[str, str]  # file name -> text; names ending in .sh become executable
    cloud_action: list[str]  # per replayed preemption: what the cloud does, for the README's plan table
    steps: list[str]  # README: what to run on the real cloud, in order
    assumptions: list[str]  # README: what differs from the local run, or is assumed


def export_plan(
    kind: str, directory: Path, plan: Sequence[PlannedPreemption], measured: LocalMeasurements, *, limit: int = 3
) -> list[Path]:
    """Write the replay files for the first ``limit`` preemptions of ``plan`` into ``directory``.

    Returns:
        The paths written, README.md last.
    Raises:
        InvalidOption: an unknown kind, an empty plan, a limit below 1, or a directory that is a file or not writable.
    """
    if kind not in _KINDS:
        raise InvalidOption(f"--export-plan: unknown kind {kind!r}; choose one of {', '.join(EXPORT_KINDS)}")
    if not plan:
        raise InvalidOption("--export-plan: the run's plan has no preemptions, so there is nothing to replay")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidOption(f"--export-plan: limit must be a whole number >= 1, got {limit!r}")
    replayed = list(plan[:limit])
    bundle = _KINDS[kind](replayed, measured)
    files = {**bundle.files, "README.md": _readme(kind, replayed, measured, bundle, len(plan))}
    directory = _writable_directory(Path(directory))
    paths = [_write(directory / name, text) for name, text in files.items()]
    logger.info("export-plan %s: wrote %d preemption(s) of %d to %s", kind, len(replayed), len(plan), directory)
    return paths


def _writable_directory(directory: Path) -> Path:
    if directory.exists() and not directory.is_dir():
        raise InvalidOption(f"--export-plan: {directory} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidOption(f"--export-plan: cannot create directory {directory}: {e.strerror or e}") from e
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InvalidOption(f"--export-plan: directory {directory} is not writable")
    return directory


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o755 if path.suffix == ".sh" else 0o644)
        os.replace(tmp, path)  # a half-written script is never visible under its real name
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise InvalidOption(f"--export-plan: cannot write {path}: {e.strerror or e}") from e
    return path


def _whole(seconds: float) -> int:
    return int(math.floor(seconds + 0.5))


def _notice_s(p: PlannedPreemption) -> float:
    return 0.0 if p.sigkill else p.notice_s


# --- bash pieces shared by every script -----------------------------------------------------------------------------

_SHARED_HELPERS = r"""
POLL_S="${POLL_S:-10}"                  # seconds between state polls
POLL_TIMEOUT_S="${POLL_TIMEOUT_S:-3600}"  # give up waiting for a state after this long
# Waits count from the VM's start: the first from now (or set UPTIME_AT_START to the VM's uptime now), later ones
# from the moment the script sees the VM running again after a restart.
VM_STARTED=$(( SECONDS - ${UPTIME_AT_START:-0} ))

log() { echo "[replay $(date -u +%H:%M:%SZ)] $*" >&2; }

# wait_uptime S: sleep until the VM has been up S seconds.
wait_uptime() {
  local left=$(( $1 - (SECONDS - VM_STARTED) ))
  log "waiting ${left} s, until the VM has been up ${1} s"
  if (( left > 0 )); then sleep "$left"; fi
}

# poll REGEX CMD...: run CMD every POLL_S seconds until its output matches REGEX; fail after POLL_TIMEOUT_S.
poll() {
  local want=$1 deadline=$(( SECONDS + POLL_TIMEOUT_S )) got=""
  shift
  until got=$("$@") && [[ "$got" =~ ^($want)$ ]]; do
    if (( SECONDS >= deadline )); then
      log "gave up after ${POLL_TIMEOUT_S} s waiting for '$want' (last seen: '$got')"
      exit 1
    fi
    sleep "$POLL_S"
  done
}

job_ready() { if bash -c "$JOB_READY_CMD" >/dev/null 2>&1; then echo yes; else echo no; fi; }

# vm_up: the VM runs again, so the next wait counts from now; then wait for the job if JOB_READY_CMD is set.
vm_up() {
  VM_STARTED=$SECONDS
  log "VM running again"
  if [[ -n "${JOB_READY_CMD:-}" ]]; then poll yes job_ready; fi
}
"""


def _script(title: str, how: str, args: str, helpers: str, steps: list[str], count: int) -> str:
    header = "\n".join(f"# {line}".rstrip() for line in [title, "", *how.strip("\n").splitlines()])
    footer = f'log "replayed {count} preemption(s); now compare the job\'s log with README.md"\n'
    parts = ["#!/usr/bin/env bash", header, "set -euo pipefail", args.strip("\n"), _SHARED_HELPERS.strip("\n")]
    return "\n\n".join([*parts, helpers.strip("\n"), *steps, footer])


def _preemption_comment(i: int, count: int, p: PlannedPreemption, tool: str) -> str:
    head = f"# Preemption {i}/{count} (local attempt {p.attempt}):"
    if p.sigkill:
        return f"{head} SIGKILL without notice at {_whole(p.uptime_s)} s of uptime.\n# ({tool} gives notice anyway.)"
    return (
        f"{head} notice at {_whole(p.uptime_s)} s of uptime, SIGTERM {_whole(p.notice_s)} s later, "
        f"SIGKILL after {_whole(p.grace_s)} s of grace."
    )


# --- gcloud ---------------------------------------------------------------------------------------------------------

_GCLOUD_HOW = """
Usage: ./replay-gcloud.sh VM ZONE   (or set VM and ZONE in the environment)
Run it from your workstation, not on the VM. Before: a Spot VM with termination action STOP whose startup script
starts the training job, resuming from its checkpoint, on every boot. Start the VM and the job, then this script.
Before each preemption it waits the uptime at which the local run was preempted; after it, it waits for the VM to
stop, starts it again (gcloud compute instances start) and waits for it, and the job if JOB_READY_CMD is set (a
command that succeeds once the job runs, e.g. gcloud compute ssh "$VM" --zone "$ZONE" --command 'pgrep -f train').
"""

_GCLOUD_ARGS = r"""
VM="${1:-${VM:-}}"
ZONE="${2:-${ZONE:-}}"
if [[ -z "$VM" || -z "$ZONE" ]]; then
  echo "usage: $0 VM ZONE   (or set VM and ZONE in the environment)" >&2
  exit 2
fi
"""

_GCLOUD_HELPERS = r"""
vm_status() { gcloud compute instances describe "$VM" --zone "$ZONE" --format='value(status)'; }

# restart_vm: a Spot VM with termination action STOP ends TERMINATED; start it again so the job resumes.
restart_vm() {
  poll TERMINATED vm_status
  gcloud compute instances start "$VM" --zone "$ZONE"
  poll RUNNING vm_status
  vm_up
}
"""


def _gcloud(plan: list[PlannedPreemption], measured: LocalMeasurements) -> _Bundle:
    steps = [
        f"{_preemption_comment(i, len(plan), p, 'simulate-maintenance-event')}\nwait_uptime {_whole(p.uptime_s)}\n"
        'gcloud compute instances simulate-maintenance-event "$VM" --zone "$ZONE"\nrestart_vm'
        for i, p in enumerate(plan, 1)
    ]
    title = f"Replays the first {len(plan)} preemption(s) of a spotsim run on a real GCP Spot VM."
    script = _script(title, _GCLOUD_HOW, _GCLOUD_ARGS, _GCLOUD_HELPERS, steps, len(plan))
    notices = sorted({_whole(p.notice_s) for p in plan if not p.sigkill})
    assumptions = [
        "`simulate-maintenance-event` needs a real Spot VM and is rate-limited per region: if a call is refused, "
        "wait and rerun the rest by hand.",
        "A 120 s notice needs the VM created with `--preemption-notice-duration` (the Beta field "
        "`scheduling.preemptionNoticeDuration`). That field is Beta and not confirmed on the primary documentation "
        "page; without it the notice is 0 s (`preempted` turns TRUE together with SIGTERM).",
        f"Spot VMs get SIGTERM (ACPI soft-off) and are powered off {GCP_SPOT_GRACE_S} s later.",
        "Waits count from the moment the script sees the VM RUNNING (polled every POLL_S = 10 s), so real uptimes "
        "can be a few seconds longer than planned.",
    ]
    assumptions += [
        f"Local notice {n} s: a GCP Spot VM offers only 0 or 120 s." for n in notices if n not in GCP_NOTICES_S
    ]
    graces = sorted({_whole(p.grace_s) for p in plan} - {GCP_SPOT_GRACE_S})
    if graces and measured.provider != "gke":
        local = ", ".join(f"{g} s" for g in graces)
        assumptions.append(f"Local grace {local}: a real Spot VM is powered off {GCP_SPOT_GRACE_S} s after SIGTERM.")
    if measured.provider == "gke":
        assumptions.append("On GKE the script preempts the node VM; non-system pods get 15 s of graceful shutdown.")
    notice_flag = "a 120 s preemption notice (Beta, see the assumptions)" if any(notices) else "no preemption notice"
    steps_md = [
        "Create a Spot VM with `gcloud compute instances create VM --zone ZONE --provisioning-model=SPOT "
        f"--instance-termination-action=STOP` and {notice_flag}, with a startup script or "
        "systemd unit that starts the training job on every boot, resuming from its latest checkpoint.",
        "Start the VM and the job. At once, from your workstation (not the VM), run `./replay-gcloud.sh VM ZONE` "
        "(`UPTIME_AT_START=S` if the VM has already been up S seconds).",
        "The script waits each uptime in the table above, runs `gcloud compute instances simulate-maintenance-event`, "
        "waits for the VM to be TERMINATED, starts it with `gcloud compute instances start` and waits for it to run "
        "again (and the job, with `JOB_READY_CMD`).",
    ]
    actions = [f"`simulate-maintenance-event` at {_whole(p.uptime_s)} s" for p in plan]
    return _Bundle({"replay-gcloud.sh": script}, actions, steps_md, assumptions)


# --- AWS Fault Injection Service ------------------------------------------------------------------------------------


def _fis_duration_s(notice_s: float) -> int:
    """durationBeforeInterruption for a local notice: whole minutes, clamped to what FIS accepts."""
    return min(FIS_MAX_S, max(FIS_MIN_S, 60 * _whole(notice_s / 60)))


@dataclass(frozen=True)
class _FisTiming:
    """When to start one FIS experiment, in whole seconds of uptime.

    FIS sends the rebalance recommendation at once and interrupts ``duration_s`` later (its 2-minute notice comes
    2 minutes before that): the experiment starts ``duration_s`` before the local SIGTERM, or at once if that is
    earlier than the VM's start.
    """

    duration_s: int
    local_sigterm_s: int

    @property
    def start_s(self) -> int:
        return max(0, self.local_sigterm_s - self.duration_s)

    @property
    def interrupt_s(self) -> int:
        return self.start_s + self.duration_s

    @property
    def iso(self) -> str:
        return f"PT{self.duration_s // 60}M"


def _fis_timing(p: PlannedPreemption) -> _FisTiming:
    return _FisTiming(_fis_duration_s(_notice_s(p)), _whole(p.uptime_s + _notice_s(p)))


def _fis_template(i: int, p: PlannedPreemption, measured: LocalMeasurements) -> dict:
    description = f"spotsim replay {i}: interrupt the Spot Instance like attempt {p.attempt} of: {measured.command}"
    return {
        "description": description[:512],  # the FIS limit
        "targets": {
            "SpotInstance": {
                "resourceType": "aws:ec2:spot-instance",
                "resourceArns": ["REPLACE_WITH_INSTANCE_ARN"],
                "selectionMode": "ALL",
            }
        },
        "actions": {
            "interrupt": {
                "actionId": "aws:ec2:send-spot-instance-interruptions",
                "description": "Rebalance recommendation now, 2-minute notice 2 minutes before the interruption",
                "parameters": {"durationBeforeInterruption": _fis_timing(p).iso},
                "targets": {"SpotInstances": "SpotInstance"},
            }
        },
        "stopConditions": [{"source": "none"}],
        "roleArn": "REPLACE_WITH_ROLE_ARN",
        "tags": {"Name": f"spotsim-replay-{i}"},
    }


_AWS_HOW = """
Usage: ./replay-aws.sh INSTANCE_ARN ROLE_ARN   (or set them in the environment)
Run it from your workstation, not on the instance. Before: a Spot Instance from a persistent Spot request with
interruption behavior "stop" whose user data starts the training job, resuming from its checkpoint, on every boot,
and an IAM role that FIS can assume with ec2:SendSpotInstanceInterruptions. Start the instance and the job, then
this script. Before each preemption it waits the uptime of its wait_uptime line, fills the placeholders of
fis-template-N.json, runs aws fis create-experiment-template --cli-input-json file://... and aws fis
start-experiment. The rebalance
recommendation comes at once, the 2-minute notice 2 minutes before the interruption. Only EC2 can restart an
interrupted Spot Instance (when capacity is back): the script waits for that, and for the job if JOB_READY_CMD is
set (a command that succeeds once the job runs).
"""

_AWS_ARGS = r"""
INSTANCE_ARN="${1:-${INSTANCE_ARN:-}}"
ROLE_ARN="${2:-${ROLE_ARN:-}}"
if [[ ! "$INSTANCE_ARN" =~ ^arn:aws[a-z-]*:ec2:[a-z0-9-]+:[0-9]+:instance/i-[0-9a-f]+$ || -z "$ROLE_ARN" ]]; then
  echo "usage: $0 INSTANCE_ARN ROLE_ARN   (or set them in the environment);" \
    "INSTANCE_ARN looks like arn:aws:ec2:REGION:ACCOUNT:instance/i-0123456789abcdef0" >&2
  exit 2
fi
REGION=$(cut -d: -f4 <<<"$INSTANCE_ARN")
INSTANCE_ID=${INSTANCE_ARN##*/}
HERE=$(cd "$(dirname "$0")" && pwd)
"""

_AWS_HELPERS = r"""
instance_state() {
  aws ec2 describe-instances --region "$REGION" --instance-ids "$INSTANCE_ID" \
    --query 'Reservations[0].Instances[0].State.Name' --output text
}

# interrupt N: create the experiment template of fis-template-N.json for this instance, and start it.
interrupt() {
  local input id
  input=$(mktemp)
  sed -e "s|REPLACE_WITH_INSTANCE_ARN|$INSTANCE_ARN|" -e "s|REPLACE_WITH_ROLE_ARN|$ROLE_ARN|" \
    "$HERE/fis-template-$1.json" >"$input"
  id=$(aws fis create-experiment-template --region "$REGION" --cli-input-json "file://$input" \
    --query 'experimentTemplate.id' --output text)
  rm -f "$input"
  log "experiment template $id (delete it afterwards: aws fis delete-experiment-template --id $id)"
  aws fis start-experiment --region "$REGION" --experiment-template-id "$id" --query 'experiment.id' --output text
}

# restart_wait: wait for the interruption to stop the instance, then for EC2 to start it again.
restart_wait() {
  poll 'stopping|stopped|shutting-down|terminated' instance_state
  if [[ "$(instance_state)" =~ shutting-down|terminated ]]; then
    log "the instance was terminated: replaying more than one preemption needs interruption behavior 'stop'"
    exit 1
  fi
  poll running instance_state
  vm_up
}
"""


_AWS_STEPS = [
    "Launch the Spot Instance from a persistent Spot request with interruption behavior `stop` (with `terminate` "
    "only the first preemption can be replayed), with user data or a systemd unit that starts the training job on "
    "every boot, resuming from its latest checkpoint.",
    "Create an IAM role that `fis.amazonaws.com` can assume, allowed `ec2:SendSpotInstanceInterruptions` and "
    "`ec2:DescribeInstances`.",
    "Start the instance and the job. At once, from your workstation, run `./replay-aws.sh INSTANCE_ARN ROLE_ARN` "
    "(`UPTIME_AT_START=S` if it has already been up S seconds).",
    "By hand instead: replace `REPLACE_WITH_INSTANCE_ARN` and `REPLACE_WITH_ROLE_ARN` in `fis-template-N.json`, "
    "then `aws fis create-experiment-template --cli-input-json file://fis-template-N.json` and "
    "`aws fis start-experiment --experiment-template-id ID` at the start uptime in the table. To select the instance "
    'by tag, replace `resourceArns` with `"resourceTags": {"KEY": "VALUE"}`.',
    "Afterwards delete the templates: `aws fis delete-experiment-template --id ID`.",
]

_AWS_ASSUMPTIONS = [
    "FIS sends the rebalance recommendation as soon as the experiment starts, and the 2-minute interruption notice "
    "2 minutes before the end of `durationBeforeInterruption`; each experiment starts that long before the local "
    "SIGTERM, so the real interruption falls where the local one did.",
    "`durationBeforeInterruption` must be 2 to 15 minutes; the templates use whole minutes.",
    "The script polls the instance state every POLL_S = 10 s; EC2 may take long to restart the instance when "
    "capacity is short (the script gives up after POLL_TIMEOUT_S = 3600 s).",
]


def _fis_warnings(i: int, p: PlannedPreemption, t: _FisTiming) -> list[str]:
    warnings = []
    if _whole(_notice_s(p)) != t.duration_s:
        warnings.append(
            f"Preemption {i}: the local notice was {_whole(_notice_s(p))} s; FIS accepts 2 to 15 whole minutes, so "
            f"fis-template-{i}.json uses {t.iso} ({t.duration_s} s): the real notice differs."
        )
    if t.interrupt_s != t.local_sigterm_s:
        warnings.append(
            f"Preemption {i}: FIS cannot interrupt before {t.duration_s} s of uptime, so the real interruption comes "
            f"at {t.interrupt_s} s, not at the local SIGTERM's {t.local_sigterm_s} s."
        )
    return warnings


def _aws_fis(plan: list[PlannedPreemption], measured: LocalMeasurements) -> _Bundle:
    timings = [_fis_timing(p) for p in plan]
    files = {
        f"fis-template-{i}.json": json.dumps(_fis_template(i, p, measured), indent=2) + "\n"
        for i, p in enumerate(plan, 1)
    }
    steps = [
        f"{_preemption_comment(i, len(plan), p, 'FIS')}\n"
        f"# FIS interrupts {t.duration_s} s after the start: at {t.interrupt_s} s of uptime "
        f"(local SIGTERM: {t.local_sigterm_s} s).\nwait_uptime {t.start_s}\ninterrupt {i}\nrestart_wait"
        for i, (p, t) in enumerate(zip(plan, timings, strict=True), 1)
    ]
    title = f"Replays the first {len(plan)} preemption(s) of a spotsim run on a real EC2 Spot Instance with AWS FIS."
    files["replay-aws.sh"] = _script(title, _AWS_HOW, _AWS_ARGS, _AWS_HELPERS, steps, len(plan))
    graces = ", ".join(sorted({f"{_whole(p.grace_s)} s" for p in plan}))
    assumptions = [
        *_AWS_ASSUMPTIONS,
        "The SIGTERM-to-SIGKILL gap of a stopping instance depends on the image's init system: the local grace "
        f"({graces}) is an assumption; measure it here.",
    ]
    for i, (p, t) in enumerate(zip(plan, timings, strict=True), 1):
        assumptions += _fis_warnings(i, p, t)
    actions = [f"`fis-template-{i}.json` ({t.iso}) started at {t.start_s} s" for i, t in enumerate(timings, 1)]
    return _Bundle(files, actions, _AWS_STEPS, assumptions)


# --- Azure ----------------------------------------------------------------------------------------------------------

_AZURE_HOW = """
Usage: ./replay-azure.sh RESOURCE_GROUP VM   (or set RG and VM in the environment)
Run it from your workstation, not on the VM. Before: a Spot VM with eviction policy Deallocate whose startup starts
the training job, resuming from its checkpoint, on every boot. Start the VM and the job, then this script. Before
each preemption it waits its uptime and runs az vm simulate-eviction, which really evicts the VM within about
30 minutes (so the real times are approximate), then waits for the eviction, starts the VM again (az vm start) and
waits for it, and for the job if JOB_READY_CMD is set (a command that succeeds once the job runs).
"""

_AZURE_ARGS = r"""
RG="${1:-${RG:-}}"
VM="${2:-${VM:-}}"
if [[ -z "$RG" || -z "$VM" ]]; then
  echo "usage: $0 RESOURCE_GROUP VM   (or set RG and VM in the environment)" >&2
  exit 2
fi
"""

_AZURE_HELPERS = r"""
power_state() {
  az vm get-instance-view --resource-group "$RG" --name "$VM" \
    --query "instanceView.statuses[?starts_with(code, 'PowerState/')].code | [0]" --output tsv
}

# restart_vm: wait for the eviction (up to about 30 min after simulate-eviction), then start the VM again.
restart_vm() {
  poll 'PowerState/(deallocated|stopped)' power_state
  az vm start --resource-group "$RG" --name "$VM"
  poll PowerState/running power_state
  vm_up
}
"""


def _azure(plan: list[PlannedPreemption], measured: LocalMeasurements) -> _Bundle:
    steps = [
        f"{_preemption_comment(i, len(plan), p, 'simulate-eviction')}\nwait_uptime {_whole(p.uptime_s)}\n"
        'az vm simulate-eviction --resource-group "$RG" --name "$VM"\nrestart_vm'
        for i, p in enumerate(plan, 1)
    ]
    title = f"Replays the first {len(plan)} preemption(s) of a spotsim run on a real Azure Spot VM."
    script = _script(title, _AZURE_HOW, _AZURE_ARGS, _AZURE_HELPERS, steps, len(plan))
    assumptions = [
        "`az vm simulate-eviction` really evicts the VM, but within about 30 minutes, not at once: the real "
        "preemptions come later than planned, so compare what happens at each one, not when.",
        "The Preempt scheduled event comes at least 30 s before the eviction (best effort).",
        "The SIGTERM-to-kill gap of an evicted VM is an assumption of the local run; measure it here.",
    ]
    steps_md = [
        "Create a Spot VM with `az vm create … --priority Spot --eviction-policy Deallocate` (with `Delete` it "
        "cannot be started again), with a startup script or systemd unit that starts the training job on every "
        "boot, resuming from its latest checkpoint.",
        "Start the VM and the job. At once, from your workstation, run `./replay-azure.sh RESOURCE_GROUP VM` "
        "(`UPTIME_AT_START=S` if it has already been up S seconds).",
        "The script waits each uptime in the table above, runs `az vm simulate-eviction`, waits for the eviction, "
        "starts the VM with `az vm start` and waits for it to run again (and the job, with `JOB_READY_CMD`).",
    ]
    actions = [f"`simulate-eviction` at {_whole(p.uptime_s)} s (eviction within ~30 min)" for p in plan]
    return _Bundle({"replay-azure.sh": script}, actions, steps_md, assumptions)


_KINDS: dict[str, Callable[[list[PlannedPreemption], LocalMeasurements], _Bundle]] = {
    "gcloud": _gcloud,
    "aws-fis": _aws_fis,
    "azure": _azure,
}
EXPORT_KINDS = tuple(_KINDS)


# --- README ---------------------------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f} s"
    return str(value).replace("|", "\\|")


def _measured_section(m: LocalMeasurements, replayed: int) -> list[str]:
    rows = [
        ("command", f"`{m.command}`"),
        ("provider profile", m.provider),
        ("checkpoint interval", m.interval_s),
        ("preemptions", f"{m.preemptions} (these files replay the first {replayed})"),
        ("lost steps", m.lost_steps),
        ("lost work", m.lost_work_s),
        ("restart overhead", m.restart_overhead_s),
        ("checkpoint blocking", m.checkpoint_blocking_s),
        ("emergency checkpoints committed before the kill", f"{m.emergency_saves} of {m.preemptions}"),
    ]
    lines = ["## What the local run measured", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in rows]
    lines += ["", "| attempt | notice seen after | emergency checkpoint committed | exit |", "|---|---|---|---|"]
    for row in m.interruptions:
        cells = (row.attempt, row.noticed_after_s, row.emergency_committed, row.exit)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if not m.interruptions:
        lines.append("| — | — | — | — |")
    return lines


def _plan_section(plan: list[PlannedPreemption], bundle: _Bundle, total: int, cloud: str) -> list[str]:
    lines = [
        "## The replayed plan",
        "",
        f"The local plan had {total} preemption(s); these files replay the first {len(plan)}. Uptimes count from the "
        "VM's start, or from its restart after the previous preemption.",
        "",
        f"| # | attempt | uptime at notice | notice | grace | local kill | on {cloud} |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (p, action) in enumerate(zip(plan, bundle.cloud_action, strict=True), 1):
        kill = "SIGKILL, no notice" if p.sigkill else "SIGTERM"
        notice = "—" if p.sigkill else f"{_whole(p.notice_s)} s"
        lines.append(
            f"| {i} | {p.attempt} | {_whole(p.uptime_s)} s | {notice} | {_whole(p.grace_s)} s | {kill} | {action} |"
        )
    return lines


_COMPARE = [
    "Does the job see the notice? Compare its log with the local *notice seen after* column.",
    "Does the emergency checkpoint commit before the kill? Compare with the local *emergency checkpoint committed* "
    "column and *exit* (before_signal, inside_grace or killed).",
    "Lost steps: count the steps redone after each restart and compare with the local lost steps.",
    "Restart overhead: the time from the VM's restart to the job's first new step.",
]


def _readme(kind: str, plan: list[PlannedPreemption], m: LocalMeasurements, bundle: _Bundle, total: int) -> str:
    cloud = {"gcloud": "GCP", "aws-fis": "AWS", "azure": "Azure"}[kind]
    assumptions = list(bundle.assumptions)
    if any(p.sigkill for p in plan):
        assumptions.append(
            "The local run killed some attempts with SIGKILL and no notice; the cloud's tool always gives notice, "
            "so those real preemptions are gentler than the local ones."
        )
    if m.provider not in CLOUD_PROVIDERS[kind]:
        assumptions.append(f"The local run emulated {m.provider}, not {cloud}: notice and grace differ.")
    lines = [
        f"# Replaying spotsim's first {len(plan)} preemption(s) on a real {cloud} VM",
        "",
        f"Written by `spotsim run … --export-plan {kind}`. Nothing here was sent to any cloud: these files let you "
        "check once, on a real Spot VM, what the local run measured. The plan's times are simulated seconds, which "
        "are real seconds on a real VM.",
        "",
        *_measured_section(m, len(plan)),
        "",
        *_plan_section(plan, bundle, total, cloud),
        "",
        "## On the real cloud, step by step",
        "",
        *(f"{i}. {step}" for i, step in enumerate(bundle.steps, 1)),
        f"{len(bundle.steps) + 1}. Keep the job's log (its events) and compare it with the tables above.",
        "",
        "## What to compare",
        "",
        *(f"- {item}" for item in _COMPARE),
        "",
        "## Assumptions and limits",
        "",
        *(f"- {item}" for item in assumptions),
    ]
    return "\n".join(lines) + "\n"
