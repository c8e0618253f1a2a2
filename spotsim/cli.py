"""The ``spotsim`` command line.

Every expected failure is a :class:`~spotsim.errors.SpotsimError`; ``main``
prints it as one line on stderr and exits 2, never with a traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from spotsim.cost.prices import DEFAULT_MACHINE
from spotsim.errors import InvalidOption, SpotsimError

app = typer.Typer(
    name="spotsim",
    help="Measure what preemption really costs ML training on spot / preemptible VMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
emulator_app = typer.Typer(
    help="Run the embedded GCS emulator (fake-gcs-server) in the background.", no_args_is_help=True
)
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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    workload: Optional[str] = typer.Option(None, help="Built-in workload [default: torch-cnn]; or give -- CMD ARGS…"),
    steps: Optional[int] = typer.Option(
        None, help="Total steps of the built-in workload (also sizes the progress bar)."
    ),
    interval: Optional[str] = typer.Option(None, help="Checkpoint interval, simulated (90, 90s, 5m, 1h)."),
    interval_steps: Optional[int] = typer.Option(
        None, help="Checkpoint every N steps (with or instead of --interval)."
    ),
    preempt_rate: float = typer.Option(0.0, help="Mean preemptions per hour of VM uptime (λ)."),
    schedule: str = typer.Option("poisson", help="poisson | weibull:SHAPE | fixed:T1,T2,… | trace:FILE"),
    trace_invert: bool = typer.Option(False, help="Read trace values as 1 = preempted, 0 = running."),
    kill: str = typer.Option(
        "sigterm", help="sigterm (notice, grace, SIGKILL) | sigkill | mixed:P (P = SIGKILL share)."
    ),
    grace: str = typer.Option("30s", help="Time from SIGTERM to SIGKILL, simulated (GCP Spot: 30 s, AWS: 120 s)."),
    restart_delay: str = typer.Option("0", help="Time to get a new VM after a preemption, simulated (billed)."),
    time_scale: float = typer.Option(1.0, help="K: one real second stands for K simulated seconds."),
    bucket: Optional[str] = typer.Option(
        None, help="Checkpoint here (gs://… or file:///…) instead of the embedded emulator."
    ),
    seed: int = typer.Option(0, help="Seed of the preemption draws."),
    max_preemptions: Optional[int] = typer.Option(None, help="Stop preempting after N preemptions."),
    max_crashes: int = typer.Option(3, help="Give up after N crashes (exits the harness did not cause)."),
    machine: str = typer.Option(DEFAULT_MACHINE, help="Price-table row(s), e.g. gcp-n1-standard-8+gcp-t4."),
    prices: Optional[Path] = typer.Option(None, help="CSV price table replacing the shipped one."),
    out: Path = typer.Option(Path("spotsim-run"), help="Output directory (events.jsonl, summary.json, timeline.png)."),
) -> None:
    """Run a training job under preemptions; measure lost work, overheads and the projected spot bill."""
    from spotsim.cost import load_prices
    from spotsim.harness import KillMode, RunConfig, parse_duration, parse_schedule
    from spotsim.workloads import command as command_for

    chosen = load_prices(prices).machine(machine)
    command = _job_command(ctx.args, workload, steps, command_for)
    config = RunConfig(
        command=tuple(command), out=out.absolute(),
        schedule=parse_schedule(schedule, preempt_rate, trace_invert=trace_invert).seed(seed),
        interval_s=parse_duration(interval, "--interval") if interval is not None else None,
        interval_steps=interval_steps, kill=KillMode.parse(kill), grace_s=parse_duration(grace, "--grace"),
        restart_delay_s=parse_duration(restart_delay, "--restart-delay"), time_scale=time_scale, seed=seed,
        max_preemptions=max_preemptions, max_crashes=max_crashes,
    )  # fmt: skip
    signal.signal(signal.SIGTERM, _interrupt)  # a kill of the harness ends the job and the emulator too
    outcome = _run_with_progress(config, chosen, bucket, steps)
    _print_summary(outcome.summary, outcome.out)
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.crash is not None:
        console.print(f"[red]gave up after {outcome.summary['crashes']} crashes: {outcome.crash}[/red]")
        raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def verify(
    ctx: typer.Context,
    workload: Optional[str] = typer.Option(None, help="Built-in workload [default: torch-cnn]; or give -- CMD ARGS…"),
    steps: Optional[int] = typer.Option(None, help="Total steps of the built-in workload."),
    preemptions: int = typer.Option(3, help="Number of preempted-and-resumed runs compared with the reference."),
    kills_per_run: int = typer.Option(2, help="Preemptions within each of those runs."),
    kill: str = typer.Option("sigkill", help="sigkill | sigterm | mixed:P"),
    interval_steps: int = typer.Option(100, help="Checkpoint every N steps (SPOTSIM_CHECKPOINT_INTERVAL_STEPS)."),
    grace: str = typer.Option("30s", help="SIGTERM → SIGKILL window (real seconds here)."),
    seed: int = typer.Option(0, help="Seed of the kill points."),
    kill_steps: Optional[str] = typer.Option(None, help="Replay one run's kill points, e.g. 120,480 (from a verdict)."),
    artifact: Optional[str] = typer.Option(
        None, help="Compare this file under SPOTSIM_OUTPUT_DIR instead of the final checkpoint."
    ),
    bucket: Optional[str] = typer.Option(
        None, help="gs://… or file:///… for the runs' checkpoints [default: embedded emulator]."
    ),
    out: Path = typer.Option(Path("spotsim-verify"), help="Keeps every run, its events, and verdict.json."),
) -> None:
    """Prove the job resumes bit-exactly: exit 0 if every preempted run matches the reference, 1 if not."""
    from spotsim.cost import load_prices
    from spotsim.harness import KillMode, parse_duration
    from spotsim.harness.verify import VerifyConfig
    from spotsim.harness.verify import verify as run_verify
    from spotsim.workloads import command as command_for

    config = VerifyConfig(
        command=tuple(_job_command(ctx.args, workload, steps, command_for)), out=out.absolute(), runs=preemptions,
        kills_per_run=kills_per_run, kill=KillMode.parse(kill), seed=seed, artifact=artifact, bucket=bucket,
        interval_steps=interval_steps, grace_s=parse_duration(grace, "--grace"),
        kill_plans=(_steps_list(kill_steps),) if kill_steps else (),
    )  # fmt: skip
    if interval_steps < 1:
        raise InvalidOption(f"--interval-steps must be ≥ 1, got {interval_steps}")
    signal.signal(signal.SIGTERM, _interrupt)
    verdict = run_verify(
        config, load_prices().machine(DEFAULT_MACHINE), on_run=lambda name: console.print(f"running {name}…")
    )
    for check in verdict.checks:
        where = f"{check.name}: kills at steps {', '.join(map(str, check.kill_steps))} ({check.kill})"
        if check.difference is None and not check.diagnosis:
            console.print(f"[green]✓[/green] {where}: identical to the reference")
            continue
        what = check.difference.describe() if check.difference else "final result identical, but"
        console.print(f"[red]✗[/red] {where}: {what}")
        for note in check.diagnosis:
            console.print(f"    {note}")
    console.print(f"wrote {config.out / 'verdict.json'}")
    if not verdict.ok:
        console.print("[red]NOT resume-correct[/red]")
        raise typer.Exit(1)
    console.print(
        f"[green]resume-correct[/green]: {len(verdict.checks)} preempted runs match the reference bit for bit"
    )


def _steps_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise InvalidOption(f"--kill-steps {text!r} is not a comma-separated list of steps") from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _job_command(args: list[str], workload: str | None, steps: int | None, command_for) -> list[str]:
    if args and workload:
        raise InvalidOption("give either --workload NAME or -- CMD ARGS…, not both")
    if args:
        if steps is not None:
            raise InvalidOption("--steps applies to built-in workloads; pass your script its own options")
        return list(args)
    if steps is not None and steps < 1:
        raise InvalidOption(f"--steps must be ≥ 1, got {steps}")
    return command_for(workload or "torch-cnn", ["--steps", str(steps)] if steps else [])


def _run_with_progress(config, machine, bucket, total_steps):
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from spotsim.harness import run_live

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn()]  # fmt: skip
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("training", total=total_steps, status="starting")

        def show(p) -> None:
            status = (f"step {p.step} · attempt {p.attempt} · preemptions {p.preemptions} · lost {p.lost_steps} steps"
                      f" · checkpoints {p.checkpoints} · {p.state}")  # fmt: skip
            bar.update(task, completed=p.step, status=status)

        return run_live(config, machine, bucket=bucket, on_progress=show)


def _grace_verdict(preemption: dict) -> str:
    if not preemption["emergency_checkpoint"]:
        return "no emergency checkpoint"
    saved = f"emergency checkpoint after {preemption['emergency_after_s']:.1f} s"
    if not preemption["emergency_in_grace"]:
        return f"{saved}: NOT inside the grace period"
    return f"{saved}: inside the grace period" + ("" if preemption["exited_in_grace"] else ", but exit was late")


def _print_summary(summary: dict, out: Path) -> None:
    from rich.table import Table

    k = summary["time_scale"]
    table = Table(
        title=f"spotsim run — {'completed' if summary['completed'] else 'NOT completed'} (time scale K = {k:g})"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("final step", f"{summary['final_step']}"),
        (
            "attempts / preemptions / crashes",
            f"{summary['attempts']} / {summary['preemptions']} / {summary['crashes']}",
        ),
        ("lost steps (lost time, simulated)", f"{summary['lost_steps']} ({summary['lost_time_s']:.1f} s)"),
        (
            "steps computed = final + lost",
            f"{summary['steps_computed']} {'✓' if summary['identity_holds'] else '✗ MISMATCH'}",
        ),
        ("checkpoints (blocking, simulated)", f"{summary['checkpoints']} ({summary['checkpoint_blocking_s']:.2f} s)"),
        ("checkpoint overhead", f"{summary['checkpoint_overhead']:.2%}"),
        (
            "restart overhead R (simulated)",
            "—" if summary["restart_overhead_s"] is None else f"{summary['restart_overhead_s']:.1f} s",
        ),
        ("wall (real) / simulated hours", f"{summary['wall_s']:.1f} s / {summary['sim_hours']:.3f} h"),
        (f"spot cost ({summary['machine']})", f"${summary['spot_cost_usd']:.4f}"),
        ("on-demand cost, uninterrupted", f"${summary['on_demand_cost_usd']:.4f}"),
        ("savings", f"{summary['savings']:.1%}"),
    ]
    for preemption in summary["interruptions"]:
        if "emergency_in_grace" in preemption:
            rows.append((f"attempt {preemption['attempt']} SIGTERM", _grace_verdict(preemption)))
    rows += [("[red]anomaly[/red]", text) for text in summary["anomalies"]]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    console.print(f"wrote {out / 'summary.json'}, {out / 'events.jsonl'}, {out / 'timeline.png'}")


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
