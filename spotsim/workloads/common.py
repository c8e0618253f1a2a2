"""What every reference workload shares: arguments, the contract's environment, the loop.

A workload module supplies a :class:`TrainingJob` (its model, data and optimizer
behind six methods) and calls :func:`main`, which runs the contract's structure:

1. warm the job up: a step's one-off costs, paid and discarded before the
   ``start`` event, after which the harness counts time as training (× K);
2. ``restore_latest()`` and load it into the job, or start fresh;
3. per step: train; on a preemption notice save an ``emergency`` checkpoint and
   exit 0; else save a periodic checkpoint when ``should_save`` says so;
4. at the end: a ``final`` checkpoint, the model in ``$SPOTSIM_OUTPUT_DIR``,
   then ``mark_done``.

Expected failures (no ``SPOTSIM_CHECKPOINT_URI``, a checkpoint of another job)
print one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from spotsim.checkpoint import CheckpointManager, PreemptionWatcher
from spotsim.checkpoint.tree import TrainingState
from spotsim.errors import CheckpointError, MissingDependency, SpotsimError

log = logging.getLogger(__name__)

OUTPUT_DIR_ENV = "SPOTSIM_OUTPUT_DIR"
DIGITS_TRAIN_SIZE = 1500  # of scikit-learn's 1,797 digits; the other 297 are held out


class TrainingJob(TrainingState, Protocol):
    """The framework half of a workload: live training objects, one step at a time."""

    steps_per_epoch: int

    def warm_up(self) -> None:
        """Pay the first step's one-off costs (lazy initialisation, tracing) and keep nothing of it.

        Called before the restore, so before the ``start`` event. Afterwards every
        weight, gradient, optimizer slot, RNG and the data position must be exactly
        as before: a resume stays bit-exact, and so does a fresh start.
        """

    def train_step(self) -> float:
        """Train one optimizer step on the next batch; return its loss."""

    def state_dict(self) -> Any:
        """The checkpoint state of everything training depends on (weights, optimizer, data position, RNG)."""

    def load_state_dict(self, state: Any) -> None:
        """Put a restored checkpoint state into the live objects."""

    def write_outputs(self, out_dir: Path) -> None:
        """Write the trained model into ``out_dir`` (atomically: no half-written model file)."""

    def evaluate(self) -> float:
        """Accuracy on held-out data, for the summary line."""


# -- arguments -------------------------------------------------------------------


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is not {bounds}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a non-negative number of seconds")
    return value


def parser(module: str, doc: str, *, steps: int, batch_size: int, max_batch_size: int) -> argparse.ArgumentParser:
    """The arguments every workload takes; a module adds its own before parsing."""
    p = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc.strip().splitlines()[0],
        epilog="Checkpoints go to $SPOTSIM_CHECKPOINT_URI (required); see spotsim's docs/contract.md for the contract.",
    )
    p.add_argument("--steps", type=int_in(1), default=steps, help=f"optimizer steps in all (default {steps})")
    p.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0, help="seed of weights, data order and data")
    p.add_argument(
        "--batch-size",
        type=int_in(1, max_batch_size),
        default=batch_size,
        help=f"examples per step (default {batch_size})",
    )
    p.add_argument("--step-sleep", type=seconds, default=0.0, help="extra seconds of sleep per step (default 0)")
    return p


# -- data -------------------------------------------------------------------------


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The CNN workloads' data: (x_train, y_train, x_held_out, y_held_out), pixels in [0, 1], shape (n, 8, 8).

    scikit-learn ships the digits inside its wheel: nothing is downloaded. The
    file is read directly, as ``load_digits`` does, because importing scikit-learn
    costs over a second, paid again by every attempt's restart. The split is
    fixed (not drawn from ``--seed``), so every seed trains on the same digits.
    """
    table = np.loadtxt(_digits_file(), delimiter=",", dtype=np.float64)
    images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    order = np.random.RandomState(0).permutation(len(target))
    x, y = (images[order] / 16.0).astype(np.float32), target[order]
    n = DIGITS_TRAIN_SIZE
    return x[:n], y[:n], x[n:], y[n:]


def _digits_file() -> Path:
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("the digits data ships with scikit-learn: pip install 'spotsim[torch]'")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"


# -- the contract's environment ---------------------------------------------------


def output_dir() -> Path | None:
    return Path(path) if (path := os.environ.get(OUTPUT_DIR_ENV)) else None


# -- the loop ---------------------------------------------------------------------


def main(
    args: argparse.Namespace, build: Callable[[argparse.Namespace], TrainingJob], *, name: str, framework: str
) -> int:
    """Run a workload under the contract; return the process exit status."""
    _configure_logging(name)
    try:
        with PreemptionWatcher(approve=True) as watcher, CheckpointManager.from_env(framework=framework) as manager:
            job = build(args)
            return train(job, manager, watcher, args)
    except SpotsimError as e:
        print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def train(job: TrainingJob, manager: CheckpointManager, watcher: PreemptionWatcher, args: argparse.Namespace) -> int:
    """Warm up, restore, train to ``args.steps`` (or to a preemption notice), finish; return the exit status."""
    # Before the restore: the harness counts everything after its `start` event as
    # training compute (× K), so a one-off cost left in the first step is multiplied.
    job.warm_up()
    start = step = resume(job, manager, args.steps)
    loss = math.nan
    while step < args.steps:
        loss = job.train_step()
        step += 1
        if args.step_sleep:
            time.sleep(args.step_sleep)
        if watcher.preempted:
            manager.save(step, job.state_dict(), kind="emergency", metadata=_metadata(job, step, loss))
            log.warning("preemption notice (%s): saved an emergency checkpoint at step %d", watcher.reason, step)
            watcher.approve()  # Azure: evict now rather than at NotBefore (elsewhere a no-op)
            return 0
        # The last step gets the final checkpoint below instead of a periodic one.
        if step < args.steps and manager.should_save(step):
            manager.save(step, job.state_dict(), metadata=_metadata(job, step, loss))
    if step > start:
        manager.save(step, job.state_dict(), kind="final", metadata=_metadata(job, step, loss))
    finish(job, manager, step, loss)
    return 0


def resume(job: TrainingJob, manager: CheckpointManager, steps: int) -> int:
    """Load the newest usable checkpoint into ``job``; return its step (0 when starting fresh)."""
    restored = manager.restore_latest()
    if restored is None:
        log.info("no checkpoint yet: starting at step 0")
        return 0
    if restored.step > steps:
        raise CheckpointError(
            f"the checkpoint at step {restored.step} is past --steps {steps}; use a new SPOTSIM_CHECKPOINT_URI"
        )
    try:
        job.load_state_dict(restored.state)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:  # what torch/numpy raise on a mismatched state
        raise CheckpointError(
            f"the checkpoint at step {restored.step} does not fit this job (another workload or size?): {e}"
        ) from e
    log.info("resumed from the checkpoint at step %d", restored.step)
    return restored.step


def finish(job: TrainingJob, manager: CheckpointManager, step: int, loss: float) -> None:
    """Write the model to the output directory (if any) and tell the harness the job is done."""
    if (out := output_dir()) is not None:
        out.mkdir(parents=True, exist_ok=True)
        job.write_outputs(out)
    manager.mark_done(step)
    trained = f", last loss {loss:.4f}" if math.isfinite(loss) else ""
    print(f"done: step {step}{trained}, held-out accuracy {job.evaluate():.4f}", flush=True)


def _metadata(job: TrainingJob, step: int, loss: float) -> dict[str, Any]:
    return {"epoch": step // job.steps_per_epoch, "loss": loss}


def exit_now(status: int) -> None:
    """End the process at once, once everything is flushed and the checkpoints are closed.

    The interpreter's own teardown with torch or TensorFlow loaded takes about a
    second that does no work, yet counts against a preemption's grace period
    and inflates every attempt's measured wall time.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)


def _configure_logging(name: str) -> None:
    run_id, attempt = os.environ.get("SPOTSIM_RUN_ID", "-"), os.environ.get("SPOTSIM_ATTEMPT", "0")
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s {name} run={run_id} attempt={attempt} %(levelname)s %(message)s"
    )
    logging.getLogger("spotsim").setLevel(logging.INFO)  # ours; frameworks stay at WARNING


def _one_line(error: BaseException, limit: int = 400) -> str:
    """Errors from torch span many lines (one per mismatched tensor); the contract wants one clear line."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def atomic_path(final: Path, suffix: str = "") -> Path:
    """A temporary sibling of ``final`` to write first and ``os.replace`` onto it (keeps ``suffix`` last)."""
    return final.with_name(f".{final.name}.{os.getpid()}.partial{suffix}")


__all__ = ["TrainingJob", "atomic_path", "digits", "int_in", "main", "output_dir", "parser", "seconds", "train"]
