"""Nothing outlives the harness: a job's process group and the emulator die with it, even on ``kill -9``.

Two mechanisms, because a SIGKILLed harness runs no clean-up code of its own:

- :func:`die_with_parent` arms Linux's parent-death signal in a child (the
  emulator, a sweep's ``spotsim run``): the kernel signals it when its parent dies.
- :class:`Reaper` is a tiny watchdog process holding the read end of a pipe
  from the harness. The harness registers each attempt's process group; when
  the pipe reaches end-of-file — the harness exited, however it died — the
  reaper SIGKILLs every group still registered. The parent-death signal alone
  would reach only the job's first process, not the workers it started.

Elsewhere than Linux, :func:`die_with_parent` does nothing and the reaper still works.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

_REAPER_SOURCE = """
import os, signal, sys
groups = set()
for line in sys.stdin:
    verb, _, pgid = line.partition(" ")
    (groups.add if verb == "+" else groups.discard)(int(pgid))
def below(roots):
    # every process under the groups' leaders, even in sessions of their own (torchrun's workers)
    by_parent = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
            by_parent.setdefault(int(stat[stat.rindex(b")") + 2 :].split()[1]), []).append(int(name))
        except (OSError, ValueError):
            pass
    found, todo = [], list(roots)
    while todo:
        for child in by_parent.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
strays = below(groups)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
for pid in strays:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


def sigterm_interrupts() -> None:
    """SIGTERM raises KeyboardInterrupt in the main thread, so a killed harness ends its job and keeps a
    summary, as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when the thread that started it dies.

    Start such children from a thread that lives as long as they should (the main thread)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os.kill(os.getpid(), int(sig))

    return arm


class Reaper:
    """Kills the registered process groups when the harness dies; see the module docstring."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _REAPER_SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in our group
        )

    def watch(self, pgid: int) -> None:
        self._send(f"+ {pgid}\n")

    def release(self, pgid: int) -> None:
        self._send(f"- {pgid}\n")

    def close(self) -> None:
        """End the reaper (it kills any group still registered, as if the harness had died)."""
        if self._process.stdin and not self._process.stdin.closed:
            self._process.stdin.close()
        self._process.wait()

    def _send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line.encode())
        self._process.stdin.flush()

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _children_by_parent() -> dict[int, list[int]]:
    """Every live process's children, from ``/proc`` (empty without procfs)."""
    children: dict[int, list[int]] = {}
    if not os.path.isdir("/proc"):
        return children
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def children(parent: int) -> list[int]:
    """The live processes ``parent`` started (a torchrun agent's: its workers)."""
    return _children_by_parent().get(parent, [])


def process_tree(root: int) -> list[int]:
    """Every live process below ``root`` (children, grandchildren…)."""
    by_parent, found, todo = _children_by_parent(), [], [root]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"  # a zombie has exited


def signal_tree(pid: int, sig: int) -> None:
    """Signal a process group and every process below its leader, even those in sessions of their own
    (torchrun's workers): a VM's shutdown reaches them all."""
    below = process_tree(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for child in below:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, sig)
