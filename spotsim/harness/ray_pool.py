"""``spotsim sweep --ray``: a sweep's runs as Ray tasks, on a local Ray runtime or an existing cluster.

Each run is one task that reserves the cores its run needs and carries it out exactly as the local pool
does (:func:`spotsim.harness.sweep.run_in_process`: ``python -m spotsim.harness.sweep_run`` in the run's
own directory, on the worker), returning its summary to the driver. A task whose worker dies (the
worker's VM preempted by the cloud, the worker killed for memory) is retried up to ``max_retries`` times.
Ray tells a task nothing of its attempt, so a small actor on the driver's node counts each run's
attempts: a retry is reported (a warning as soon as the driver sees it, and the row's ``retries``) even
when it lands on another node.

Ray is imported only here, and only when a pool is made, so that the rest of spotsim works without it.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

from spotsim.errors import InvalidOption, SpotsimError
from spotsim.harness.sweep import (
    Finished,
    RunPool,
    RunProcesses,
    SweepRun,
    SweepRunFailed,
    SweepStopped,
    run_in_process,
)

log = logging.getLogger(__name__)

INSTALL = "pip install 'spotsim[ray]'"
MAX_RETRIES = 2  # a task's attempts lost to a dead worker or node before its run counts as failed
CONNECT_TIMEOUT_S = 3.0  # an address that does not answer this fast is refused (ray.init would wait minutes)
WAIT_S = 1.0  # how often the driver looks for retries; an interrupt gets in as often
STOP_WAIT_S = 60.0  # after an interrupt, how long the runs under way get to end their jobs


def parse_address(text: str) -> str:
    """``local`` (a Ray runtime started here), ``auto`` (the cluster this machine is a node of) or
    ``HOST:PORT`` (a cluster's GCS address, as ``ray start --head`` prints it).

    Raises:
        InvalidOption: anything else, Ray Client's ``ray://`` included.
    """
    address = text.strip()
    if address in ("local", "auto"):
        return address
    if address.startswith("ray://"):
        raise InvalidOption(
            "--ray: Ray Client (ray://) addresses are not supported: run the sweep on a node of the cluster, "
            "with --ray auto or --ray HOST:PORT"
        )
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidOption(f"--ray takes local, auto or HOST:PORT (a Ray cluster's GCS address), got {text!r}")
    return address


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A plain TCP connection to the GCS at ``HOST:PORT``; ``ray.init`` would wait minutes for a dead one.

    Raises:
        InvalidOption: nothing answers there within ``timeout_s``.
    """
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise InvalidOption(
            f"--ray {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
            "`ray start --head`, or give --ray local"
        ) from None


class RayPool(RunPool):
    """Each run a Ray task on ``address`` (see :func:`parse_address`), reserving ``run.cpus`` cores.

    Made before anything runs, so that a missing Ray or a dead address is refused at once; ``with pool:``
    connects (``local`` starts a runtime, which leaving the block stops). ``warn`` gets one line for each
    retry and for runs no node can take yet (default: this module's logger).

    Raises:
        InvalidOption: Ray is not installed, or the address is malformed or does not answer.
    """

    def __init__(
        self, address: str, *, max_retries: int = MAX_RETRIES, warn: Callable[[str], None] | None = None
    ) -> None:
        self.address = parse_address(address)
        self._ray = _import_ray()
        if self.address not in ("local", "auto"):
            check_reachable(self.address)
        self.max_retries = max_retries
        self._warn = warn or log.warning
        self._pending: dict[Any, SweepRun] = {}  # a task's ObjectRef → its run
        self._attempts: Any = None  # the _Attempts actor
        self._undo_divert: Callable[[], None] | None = None

    def __enter__(self) -> RayPool:
        self._undo_divert = _divert_pushed_messages()
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            self._ray.init(address=self.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:  # `auto` with no cluster on this machine, …
            self._undo()
            if self.address == "auto" and isinstance(e, ConnectionError):
                raise InvalidOption(
                    "--ray auto: no Ray cluster runs on this machine (start one with `ray start --head`, set "
                    "RAY_ADDRESS, or give --ray local)"
                ) from None
            raise InvalidOption(f"--ray {self.address}: {_first_line(e)}") from None
        finally:
            _reinstall(signal.SIGTERM, sigterm)
        try:
            self._attempts = _attempt_counter(self._ray)
        except BaseException:
            self.close()
            raise
        return self

    def run(self, runs: Sequence[SweepRun]) -> Iterator[Finished]:
        ray = self._ray
        task = ray.remote(max_retries=self.max_retries)(_carry_out)
        self._warn_unplaceable(runs)
        self._pending = {task.options(num_cpus=run.cpus).remote(run, self._attempts): run for run in runs}
        told: dict[str, int] = {}  # run → the attempt the user was last told of
        while self._pending:
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=WAIT_S)
            self._report_retries(told)  # after the wait: a finished task's attempt is already counted
            for ref in ready:
                run = self._pending.pop(ref)
                summary, attempt = self._result(ref, run)
                yield Finished(run.point, summary, retries=attempt - 1)

    def close(self) -> None:
        """Cancel the tasks (a running one's run gets SIGTERM and ends its job), give them ``STOP_WAIT_S`` to
        end, then disconnect; a runtime started for ``local`` stops with it."""
        ray = self._ray
        if not ray.is_initialized():
            self._undo()
            return
        pending, self._pending = list(self._pending), {}
        try:
            for ref in pending:
                ray.cancel(ref)  # KeyboardInterrupt inside a running task; a task not started never starts
            deadline = time.monotonic() + STOP_WAIT_S
            while pending and time.monotonic() < deadline:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_S)
        finally:
            ray.shutdown()
            self._undo()

    def _undo(self) -> None:
        if self._undo_divert is not None:
            self._undo_divert()
            self._undo_divert = None

    def _result(self, ref: Any, run: SweepRun) -> tuple[dict[str, Any], int]:
        """The task's summary and attempt number, or its failure as one line."""
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(ref)
        except exceptions.RayTaskError as e:  # the task raised: the run failed, or the sweep is stopping
            if isinstance(e.cause, SpotsimError | SweepStopped):
                raise e.cause from None
            raise SweepRunFailed(f"run {run.point.name} failed on its worker: {_first_line(e)}") from None
        except exceptions.WorkerCrashedError:
            raise SweepRunFailed(
                f"run {run.point.name} failed: its Ray worker died on each of its {self.max_retries + 1} attempts"
            ) from None
        except exceptions.RayError as e:  # the node died with the retries spent, the object was lost, …
            raise SweepRunFailed(f"run {run.point.name} failed: {type(e).__name__}: {_first_line(e)}") from None

    def _report_retries(self, told: dict[str, int]) -> None:
        for name, attempt in self._ray.get(self._attempts.counts.remote()).items():
            if attempt > told.get(name, 1):
                told[name] = attempt
                self._warn(
                    f"run {name}: its Ray worker (or the node under it) died; Ray is running it again, "
                    f"attempt {attempt} of {self.max_retries + 1}"
                )

    def _warn_unplaceable(self, runs: Sequence[SweepRun]) -> None:
        """Ray waits silently for a node with enough cores; say so (an autoscaler may still add one)."""
        needs = max((run.cpus for run in runs), default=0)
        largest = max((node["Resources"].get("CPU", 0) for node in self._ray.nodes() if node["Alive"]), default=0)
        if needs > largest:
            self._warn(
                f"some runs need {needs} cores on one node and the largest node of the cluster has {largest:g}: "
                "they wait until a node that large joins"
            )


class _Attempts:
    """A Ray actor on the driver's node: each run's attempts so far."""

    def __init__(self) -> None:
        self._attempts: dict[str, int] = {}

    def begin(self, name: str) -> None:
        self._attempts[name] = self._attempts.get(name, 0) + 1

    def of(self, name: str) -> int:
        return self._attempts[name]

    def counts(self) -> dict[str, int]:
        return dict(self._attempts)


def _carry_out(run: SweepRun, attempts: Any) -> tuple[dict[str, Any], int]:
    """The Ray task: ``run``, carried out on this worker as the local pool does; its summary and attempt.

    It runs in the worker's main thread, so the run's parent-death signal follows the worker, and a
    cancel's KeyboardInterrupt reaches the polling wait of :func:`run_in_process`. It asks for its attempt
    number only once the run is over: a task blocked in ``ray.get`` lends its cores to the next task, and
    would then run beside it on cores the run counted as its own. The actor runs one caller's calls in order,
    so ``of`` sees this attempt's ``begin``.
    """
    import ray

    attempts.begin.remote(run.point.name)
    summary = run_in_process(run, RunProcesses())
    return summary, ray.get(attempts.of.remote(run.point.name))


def _attempt_counter(ray: ModuleType) -> Any:
    """The :class:`_Attempts` actor, on the driver's node: it lives exactly as long as the sweep."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, max_restarts=0)(_Attempts).options(scheduling_strategy=here).remote()


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise InvalidOption(f"--ray needs Ray: {INSTALL}") from None
    return ray


def _divert_pushed_messages() -> Callable[[], None]:
    """Send what the cluster pushes to the driver (a worker died, a task will be retried…) to this module's
    logger; returns the undo.

    Ray prints those messages on stdout, whatever ``log_to_driver`` says, from a thread of its own: stdout
    must stay the table's under ``--json``, and the pool reports retries itself, once each, on stderr.
    The hook is Ray's private ``print_to_stdstream``; where a Ray release lacks it, nothing is diverted.
    """
    from ray._private import worker

    original = getattr(worker, "print_to_stdstream", None)
    if original is None:
        return lambda: None

    def to_log(data: dict[str, Any], ignore_prefix: bool) -> None:
        for line in data.get("lines", []):
            log.info("ray (%s): %s", data.get("pid"), line)

    setattr(worker, "print_to_stdstream", to_log)  # noqa: B010 - a module attribute mypy would call a function
    return lambda: setattr(worker, "print_to_stdstream", original)  # noqa: B010


def _reinstall(signum: int, handler: Any) -> None:
    """Put back the Python handler ``ray.init`` replaced: Ray's own exits on SIGTERM (its C++ core, loaded by
    then, aborts the driver), where spotsim's stops the runs and keeps the finished ones, as Ctrl-C does."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return  # not installed from Python, or not ours to change from here
    signal.signal(signum, handler)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
