"""The ``spotsim`` command line.

Every expected failure is a :class:`~spotsim.errors.SpotsimError`; ``main``
prints it as one line on stderr and exits 2, never with a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from spotsim.errors import SpotsimError

app = typer.Typer(
    name="spotsim",
    help="Measure what preemption really costs ML training on spot / preemptible VMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
emulator_app = typer.Typer(help="Run the embedded GCS emulator (fake-gcs-server) in the background.", no_args_is_help=True)
app.add_typer(emulator_app, name="emulator")

console = Console()


@emulator_app.command("start")
def emulator_start(
    root: Optional[Path] = typer.Option(None, help="Persistent data directory [default: $SPOTSIM_HOME/emulator]."),
    port: int = typer.Option(4443, min=1, max=65535, help="TCP port on 127.0.0.1."),
) -> None:
    """Start the emulator detached; buckets and objects persist in ROOT across restarts."""
    from spotsim.storage.emulator import start_daemon

    state, started = start_daemon(root.absolute() if root else None, port)
    verb = "started" if started else "already running"
    console.print(f"emulator {verb}: {state.url} (pid {state.pid}, data in {state.root})")
    console.print(f"export STORAGE_EMULATOR_HOST={state.url}", highlight=False)


@emulator_app.command("status")
def emulator_status() -> None:
    """Say whether the emulator runs; exit 0 if it does, 1 if not."""
    from spotsim.storage.emulator import daemon_status

    state = daemon_status()
    if state is None:
        console.print("emulator not running")
        raise typer.Exit(1)
    console.print(f"emulator running: {state.url} (pid {state.pid}, data in {state.root})")


@emulator_app.command("stop")
def emulator_stop() -> None:
    """Stop the emulator; its data stays on disk for the next start."""
    from spotsim.storage.emulator import stop_daemon

    state = stop_daemon()
    console.print("emulator stopped" if state else "emulator was not running")


@app.command()
def demo(
    size_mib: int = typer.Option(256, min=1, max=4096, help="Size of the object to round-trip."),
    root: Optional[Path] = typer.Option(None, help="Emulator data directory [default: a temporary one]."),
) -> None:
    """Storage demo on the embedded emulator: parallel round trip, commit race, restart survival."""
    from spotsim.demo import run_demo

    run_demo(console, size_mib=size_mib, root=root)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except SpotsimError as e:
        print(f"spotsim: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("spotsim: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
