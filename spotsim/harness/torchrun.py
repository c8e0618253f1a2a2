"""torchrun commands: recognising one, and writing the rendezvous of a ``--nodes`` group into it.

The harness runs each node of a group as ``torchrun`` with ``--nnodes=N:N --rdzv-backend=c10d`` on a TCP
store the harness hosts; a command given with ``-- CMD`` keeps every argument of its own, and only the
rendezvous options are the harness's (a command that sets one is refused, ``--standalone`` is dropped).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from spotsim.errors import InvalidOption

TORCHRUN_MODULE = "torch.distributed.run"
MAX_RESTARTS = 100  # each loss costs every survivor's agent one restart of its workers
# The options the harness writes itself; a command that sets one would fight it.
RENDEZVOUS_OPTIONS = (
    "--nnodes",
    "--rdzv-backend",
    "--rdzv-endpoint",
    "--rdzv-id",
    "--master-addr",
    "--master-port",
    "--node-rank",
    "--local-addr",
    "--max-restarts",
)
_TORCHRUN_FLAGS = {"--standalone", "-m", "--module", "--no-python", "--run-path", "--virtual-local-rank"}  # no value


def torchrun_launcher(command: tuple[str, ...]) -> int | None:
    """How many leading words launch torchrun (``torchrun`` or ``python -m torch.distributed.run``), or None."""
    if command and Path(command[0]).name == "torchrun":
        return 1
    for i, word in enumerate(command[:-1]):
        if word == "-m" and command[i + 1] == TORCHRUN_MODULE:
            return i + 2
    return None


def _launcher_options(command: tuple[str, ...], at: int) -> Iterator[tuple[int, str]]:
    """(index, word) of torchrun's own options: the words after the launcher, up to the training script."""
    i = at
    while i < len(command) and command[i].startswith("-"):
        word = command[i]
        yield i, word
        takes_value = "=" not in word and word.replace("_", "-") not in _TORCHRUN_FLAGS
        i += 2 if takes_value else 1


def _spelled(word: str) -> str:
    return word.split("=", 1)[0].replace("_", "-")


def check_torchrun(command: tuple[str, ...], nodes: int) -> None:
    """A multi-node command must be a torchrun invocation that leaves the rendezvous to the harness."""
    at = torchrun_launcher(command)
    if at is None:
        raise InvalidOption(
            f"--nodes {nodes} needs a torchrun command (torchrun … or python -m {TORCHRUN_MODULE} …), "
            f"got: {' '.join(command[:3])}…"
        )
    for _, word in _launcher_options(command, at):
        if _spelled(word) in RENDEZVOUS_OPTIONS:
            raise InvalidOption(
                f"drop {_spelled(word)} from the torchrun command: with --nodes spotsim supplies the rendezvous"
            )


def node_command(
    command: tuple[str, ...], nodes: int, endpoint: str, rdzv_id: str, join_timeout_real_s: float
) -> tuple[str, ...]:
    """The torchrun command with the group's rendezvous arguments (``--standalone`` removed)."""
    at = torchrun_launcher(command)
    assert at is not None  # check_torchrun ran first
    conf = {"join_timeout": str(math.ceil(join_timeout_real_s)), "last_call_timeout": "1", "read_timeout": "60"}
    dropped = set()
    for i, word in _launcher_options(command, at):
        if word == "--standalone":
            dropped.add(i)
        elif _spelled(word) == "--rdzv-conf":  # the job's own tuning (e.g. keep_alive_interval) is kept
            text = word.split("=", 1)[1] if "=" in word else command[i + 1]
            dropped |= {i} if "=" in word else {i, i + 1}
            conf |= dict(item.split("=", 1) for item in text.split(",") if "=" in item)
    conf["is_host"] = "false"  # the harness hosts the store: no node's loss takes it along
    own = tuple(w for i, w in enumerate(command[at:], at) if i not in dropped)
    rendezvous = (
        f"--nnodes={nodes}:{nodes}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={rdzv_id}",
        "--rdzv-conf=" + ",".join(f"{k}={v}" for k, v in conf.items()),
        "--local-addr=127.0.0.1",
        f"--max-restarts={MAX_RESTARTS}",
        "--monitor-interval=0.5",
    )
    return (*command[:at], *rendezvous, *own)


def standalone_command(command: tuple[str, ...]) -> tuple[str, ...]:
    """The torchrun command as one node on its own (``--standalone``: a free port, no fixed 29500), for
    measuring the job before a group run."""
    at = torchrun_launcher(command)
    if at is None or any(word == "--standalone" for _, word in _launcher_options(command, at)):
        return command
    return (*command[:at], "--standalone", *command[at:])
