"""One run of a sweep, in a process of its own: ``python -m spotsim.harness.sweep_run RUN.json``.

``RUN.json`` (written by :mod:`spotsim.harness.sweep` into the run's directory)
holds the run's :class:`~spotsim.harness.config.RunConfig` and the machine it
is priced on. The process runs it as ``spotsim run`` does and exits as
``spotsim run`` would: 0 done, 1 gave up after crashes, 2 could not run (one
``spotsim: error:`` line on stderr), 130 interrupted (SIGINT or SIGTERM: the job
is ended and a partial summary written). :func:`run_one` is the same run as a
plain function, for callers that isolate runs another way.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from spotsim.cost import load_prices
from spotsim.errors import InvalidOption, SpotsimError
from spotsim.harness.config import RunConfig
from spotsim.harness.live import RunOutcome, run_live
from spotsim.lifeline import sigterm_interrupts

RUN_FILE = "run.json"


def run_one(config: RunConfig, machine: str) -> RunOutcome:
    """Run ``config`` on the embedded emulator, priced as ``machine``; its outputs go to ``config.out``.

    Raises:
        InvalidOption: the run could not be carried out (an unknown machine, no attempt long enough…).
    """
    outcome = run_live(config, load_prices().machine(machine))
    if outcome.gave_up:
        raise InvalidOption(outcome.gave_up)
    return outcome


def read_run(path: Path) -> tuple[RunConfig, str]:
    """The run's settings and machine, as :mod:`spotsim.harness.sweep` wrote them."""
    settings = json.loads(path.read_text())
    return RunConfig.from_dict(settings["run"]), settings["machine"]


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sigterm_interrupts()  # the sweep stops a run with SIGTERM: end the job, keep a summary
    try:
        outcome = run_one(*read_run(Path(argv[0])))
    except SpotsimError as e:
        print(f"spotsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spotsim: interrupted", file=sys.stderr)
        return 130
    if outcome.interrupted:
        return 130
    return 1 if outcome.crash is not None else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
