"""The ``spotsim`` command line: it parses options into typed values and builds the configs that check them.

Every expected failure is a :class:`~spotsim.errors.SpotsimError`; the app
prints it as one line on stderr and exits 2, never with a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import typer
from rich.console import Console
from typer.core import TyperGroup

from spotsim.cost.prices import DEFAULT_MACHINE
from spotsim.errors import InvalidOption, SpotsimError
from spotsim.export_plan import EXPORT_KINDS
from spotsim.lifeline import sigterm_interrupts


class _OneLineErrors(TyperGroup):
    """The ``spotsim`` group: an expected failure is one ``spotsim: error:`` line on stderr and exit status 2.

    Here rather than in :func:`main`, so that the app invoked in process (typer's ``CliRunner``) answers
    exactly as the installed command does.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            status = super().main(
                args, prog_name, complete_var, standalone_mode=False, windows_expand_args=windows_expand_args, **extra
            )
        except SpotsimError as e:
            print(f"spotsim: error: {e}", file=sys.stderr)
            status = 2
        except (KeyboardInterrupt, typer.Abort):
            print("spotsim: interrupted", file=sys.stderr)
            status = 130
        except Exception as e:
            if not _is_usage_error(e):
                raise
            help_only = type(e).__name__ == "NoArgsIsHelpError"  # `spotsim` alone: the help, as click prints it
            print(e.format_message() if help_only else f"spotsim: error: {e.format_message()}", file=sys.stderr)
            status = 2
        finally:
            signal.signal(signal.SIGTERM, sigterm)  # a command's SIGTERM handler ends with the command
        if standalone_mode:
            sys.exit(status)
        return status


app = typer.Typer(
    cls=_OneLineErrors,
    name="spotsim",
    help="Measure what preemption really costs ML training on spot / preemptible VMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say "[default: …]" literally
)
emulator_app = typer.Typer(
    help="Run the embedded GCS emulator (fake-gcs-server) in the background.", no_args_is_help=True
)
app.add_typer(emulator_app, name="emulator")

console = Console()
DEFAULT_WORK_S = 24 * 3600.0  # what a built-in workload stands for without --work or --time-scale

# Options that mean the same in several commands, defined once.
TAKES_A_COMMAND = {"allow_extra_args": True, "ignore_unknown_options": True}  # run, verify, sweep: -- CMD ARGS…
WORKLOAD = typer.Option(None, help="Built-in workload [default: torch-cnn]; or give -- CMD ARGS…")
LOCAL_DISK = typer.Option("wipe", help="The VM's local disk between attempts: wipe (a new VM) or keep.")
PROVIDER = typer.Option(
    "gcp-spot",
    help="Preemption timeline: gcp-spot | gcp-preemptible | gke | aws-spot | azure-spot (metadata "
    "notice, SIGTERM, SIGKILL, as that cloud does).",
)
NOTICE = typer.Option(
    None, help="Metadata-only lead before the SIGTERM, simulated [gcp-spot, gke: 0; aws-spot: 120s; azure-spot: 30s]."
)
GRACE = typer.Option(
    None, help="SIGTERM → SIGKILL window, simulated (runs at 1×) [gcp: 30s; gke: 15s; aws: 30s, assumed; azure: 0]."
)
REBALANCE_LEAD = typer.Option(None, help="aws-spot: the rebalance recommendation comes this long before the notice.")


@emulator_app.command("start")
def emulator_start(
    root: Path | None = typer.Option(None, help="Persistent data directory [default: $SPOTSIM_HOME/emulator]."),
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


@app.command("storage-demo")
def storage_demo(
    size_mib: int = typer.Option(256, min=1, max=4096, help="Size of the object to round-trip."),
    root: Path | None = typer.Option(None, help="Emulator data directory [default: a temporary one]."),
) -> None:
    """Storage demo on the embedded emulator: parallel round trip, commit race, restart survival."""
    from spotsim.demo import run_demo

    run_demo(console, size_mib=size_mib, root=root)


NODES = typer.Option(
    1,
    help="VMs of a data-parallel group: N torchrun agents joined by c10d rendezvous, each preempted on its own "
    "(the job must be a torchrun command; spotsim supplies the rendezvous).",
)


@app.command(context_settings=TAKES_A_COMMAND)
def run(
    ctx: typer.Context,
    workload: str | None = WORKLOAD,
    steps: int | None = typer.Option(
        None,
        help="Total steps: the built-in workload's, or what a -- CMD job runs (tells spotsim, for --work and "
        "the progress bar).",
    ),
    interval: str | None = typer.Option(None, help="Checkpoint interval, simulated (90, 90s, 5m, 1h)."),
    work: str | None = typer.Option(
        None,
        help="Simulated training compute the job stands for (e.g. 24h); K = work ÷ its measured compute "
        "time [built-in workloads: 24h].",
    ),
    startup: str | None = typer.Option(
        None,
        help="Simulated start-up per attempt (VM boot, container pull, imports), charged in place of the measured one.",
    ),
    interval_steps: int | None = typer.Option(None, help="Checkpoint every N steps (with or instead of --interval)."),
    preempt_rate: float = typer.Option(0.0, help="Mean preemptions per hour of VM uptime (λ)."),
    schedule: str = typer.Option("poisson", help="poisson | weibull:SHAPE | fixed:T1,T2,… | trace:FILE"),
    trace_invert: bool = typer.Option(False, help="Read trace values as 1 = preempted, 0 = running."),
    kill: str = typer.Option(
        "sigterm",
        help="sigterm (the provider's notice, SIGTERM, grace, SIGKILL) | sigkill (no notice) | mixed:P "
        "(P = SIGKILL share).",
    ),
    provider: str = PROVIDER,
    notice: str | None = NOTICE,
    grace: str | None = GRACE,
    rebalance_lead: str | None = REBALANCE_LEAD,
    restart_delay: str = typer.Option("0", help="Time to get a new VM after a preemption, simulated (billed)."),
    time_scale: float | None = typer.Option(
        None, help="K: one real second of compute stands for K simulated seconds (instead of --work) [-- CMD: 1]."
    ),
    bucket: str | None = typer.Option(
        None, help="Checkpoint here (gs://… or file:///…) instead of the embedded emulator."
    ),
    storage_faults: str | None = typer.Option(
        None,
        help="The bucket fails too: none | flaky | slow | outage | hostile, or latency=50ms,bandwidth=20MB/s,"
        "503=0.05,429=0.02,reset=0.01,outage=START+LENGTH,seed=N (embedded emulator only; times simulated).",
    ),
    seed: int = typer.Option(0, help="Seed of the preemption draws."),
    max_preemptions: int | None = typer.Option(None, help="Stop preempting after N preemptions."),
    max_crashes: int = typer.Option(3, help="Give up after N crashes (exits the harness did not cause)."),
    attempt_timeout: str | None = typer.Option(
        None, help="Stop an attempt running longer than this (simulated) and count it as a crash."
    ),
    local_disk: str = LOCAL_DISK,
    nodes: int = NODES,
    machine: str = typer.Option(DEFAULT_MACHINE, help="Price-table row(s), e.g. gcp-n1-standard-8+gcp-t4."),
    prices: Path | None = typer.Option(None, help="CSV price table replacing the shipped one."),
    export_plan: tuple[str, str] = typer.Option(
        ("", ""),
        metavar="KIND DIR",
        show_default=False,
        help="Also write what replays the run's first preemptions on a real VM: gcloud | aws-fis | azure, into DIR "
        "(nothing is sent to a cloud).",
    ),
    out: Path = typer.Option(Path("spotsim-run"), help="Output directory (events.jsonl, summary.json, timeline.png)."),
) -> None:
    """Run a training job under preemptions; measure lost work, overheads and the projected spot bill."""
    from spotsim.cost import load_prices
    from spotsim.harness import KillMode, RunConfig, parse_duration, parse_schedule
    from spotsim.workloads import command as command_for

    chosen = load_prices(prices).machine(machine)
    job = _job(ctx.args, workload, steps, command_for)
    config = RunConfig(
        command=job.command,
        out=out.absolute(),
        schedule=parse_schedule(schedule, preempt_rate, trace_invert=trace_invert),
        interval_s=_duration(interval, "--interval"),
        interval_steps=interval_steps,
        kill=KillMode.parse(kill),
        provider=_provider(provider, notice, grace, rebalance_lead),
        restart_delay_s=parse_duration(restart_delay, "--restart-delay"),
        seed=seed,
        startup_s=_duration(startup, "--startup"),
        **_clock_options(work, time_scale, job),
        max_preemptions=max_preemptions,
        max_crashes=max_crashes,
        local_disk=local_disk,
        attempt_timeout_s=_duration(attempt_timeout, "--attempt-timeout"),
        nodes=nodes,
    )
    export_kind, export_dir = export_plan
    if export_kind and export_kind not in EXPORT_KINDS:
        raise InvalidOption(f"--export-plan: unknown kind {export_kind!r}; choose one of {', '.join(EXPORT_KINDS)}")
    sigterm_interrupts()  # a kill of the harness ends the job and the emulator too
    faults = _storage_faults(storage_faults, bucket)
    outcome = _run_with_progress(config, chosen, bucket, job.total_steps, faults)
    _print_summary(outcome.summary, outcome.out)
    if export_kind:
        _export(export_kind, Path(export_dir).absolute(), config, outcome)
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.gave_up:
        raise InvalidOption(outcome.gave_up)
    if outcome.crash is not None:
        console.print(f"[red]gave up after {outcome.summary.accounting.crashes} crashes: {outcome.crash}[/red]")
        raise typer.Exit(1)


@app.command(context_settings=TAKES_A_COMMAND)
def verify(
    ctx: typer.Context,
    workload: str | None = WORKLOAD,
    steps: int | None = typer.Option(None, help="Total steps of the built-in workload."),
    preemptions: int = typer.Option(3, help="Number of preempted-and-resumed runs compared with the reference."),
    kills_per_run: int = typer.Option(2, help="Preemptions within each of those runs."),
    kill: str = typer.Option("sigkill", help="sigkill | sigterm | mixed:P"),
    interval: str | None = typer.Option(
        None,
        help="Checkpoint interval in real seconds (SPOTSIM_CHECKPOINT_INTERVAL); simulated with --work "
        "[default: two or more checkpoints within the reference run].",
    ),
    work: str | None = typer.Option(
        None,
        help="Simulated compute the job stands for: K is measured once and every run uses it (needs "
        "--interval or --interval-steps).",
    ),
    interval_steps: int | None = typer.Option(
        None, help="Checkpoint every N steps (SPOTSIM_CHECKPOINT_INTERVAL_STEPS)."
    ),
    provider: str = PROVIDER,
    notice: str | None = NOTICE,
    grace: str | None = GRACE,
    seed: int = typer.Option(0, help="Seed of the kill points."),
    kill_steps: str | None = typer.Option(
        None,
        help="Replay one run's kill points, e.g. 120,480:save (from a verdict; :save = inside the first save "
        "from that step on).",
    ),
    attempt_timeout: str | None = typer.Option(
        None, help="Stop an attempt running longer than this [reference: 2 h; runs: 3 × the reference, ≥ 60 s]."
    ),
    local_disk: str = LOCAL_DISK,
    nodes: int = NODES,
    artifact: str | None = typer.Option(
        None, help="Compare this file under SPOTSIM_OUTPUT_DIR instead of the final checkpoint."
    ),
    bucket: str | None = typer.Option(
        None, help="gs://… or file:///… for the runs' checkpoints [default: embedded emulator]."
    ),
    out: Path = typer.Option(Path("spotsim-verify"), help="Keeps every run, its events, and verdict.json."),
) -> None:
    """Prove the job resumes bit-exactly: exit 0 resume-correct, 1 not, 2 set-up error, 3 inconclusive (no resume
    was really tested)."""
    from spotsim.cost import load_prices
    from spotsim.harness import KillMode
    from spotsim.harness.verify import VerifyConfig
    from spotsim.harness.verify import verify as run_verify
    from spotsim.workloads import command as command_for

    job = _job(ctx.args, workload, steps, command_for)
    if not job.builtin and job.steps_given and work is None:
        raise InvalidOption("--steps applies to built-in workloads (or, with --work, tells spotsim a command's steps)")
    config = VerifyConfig(
        command=job.command,
        out=out.absolute(),
        runs=preemptions,
        work_s=_duration(work, "--work"),
        total_steps=job.total_steps,
        steps_adjustable=job.builtin and not job.steps_given,
        kills_per_run=kills_per_run,
        kill=KillMode.parse(kill),
        seed=seed,
        artifact=artifact,
        bucket=bucket,
        interval_s=_duration(interval, "--interval"),
        interval_steps=interval_steps,
        provider=_provider(provider, notice, grace, None),
        kill_plans=(kill_steps,) if kill_steps else (),
        attempt_timeout_s=_duration(attempt_timeout, "--attempt-timeout"),
        local_disk=local_disk,
        nodes=nodes,
    )
    sigterm_interrupts()
    verdict = run_verify(
        config, load_prices().machine(DEFAULT_MACHINE), on_run=lambda name: console.print(f"running {name}…")
    )
    _print_verdict(verdict, config.out)
    raise typer.Exit(verdict.exit_code)


@app.command()
def optimal(
    checkpoint_cost: str = typer.Option(..., help="C: time one checkpoint blocks training (90, 90s, 5m, 1h)."),
    mtbf: str | None = typer.Option(None, help="M: mean time between preemptions."),
    preempt_rate: float | None = typer.Option(None, help="λ per hour (M = 1/λ); instead of --mtbf."),
    restart: str = typer.Option("0", help="R: restart overhead after a preemption."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """The best checkpoint interval in theory: Young's √(2CM), Daly's higher-order one, and the exact optimum."""
    from dataclasses import asdict

    from spotsim.durations import parse_duration
    from spotsim.sim import optimum

    c, m, r = (
        parse_duration(checkpoint_cost, "--checkpoint-cost"),
        _mtbf_s(mtbf, preempt_rate),
        parse_duration(restart, "--restart"),
    )
    if r < 0:
        raise InvalidOption(f"--restart must be ≥ 0, got {restart}")
    best = optimum(c, m, r)
    if as_json:
        print(json.dumps({**asdict(best), "checkpoint_cost_s": c, "mtbf_s": m, "restart_s": r}))
        return
    from rich.table import Table

    table = Table(title=f"checkpoint interval for C = {c:g} s, M = {m:g} s, R = {r:g} s")
    for column in ("rule", "interval", "expected waste"):
        table.add_column(column, justify="right" if column != "rule" else "left")
    rules = [
        ("Young (1974)", best.young_s, best.young_waste),
        ("Daly (2006)", best.daly_s, best.daly_waste),
        ("exact optimum (renewal model)", best.exact_s, best.exact_waste),
    ]
    for rule, tau, waste in rules:
        table.add_row(rule, f"{tau:,.1f} s ({tau / 60:,.1f} min)", f"{waste:.2%}")
    console.print(table)


@app.command()
def simulate(
    intervals: str = typer.Option(..., help="Checkpoint intervals to compare, e.g. 5m,15m,30m,1h."),
    work_hours: float = typer.Option(24.0, help="Compute the job needs, in hours, without preemptions or checkpoints."),
    step_time: str | None = typer.Option(None, help="Time per step (to report lost work in steps) [1s]."),
    checkpoint_cost: str | None = typer.Option(None, help="C: blocking time per checkpoint [30s]."),
    persist_time: str = typer.Option("0", help="Background persist after each snapshot (async saves)."),
    restart: str | None = typer.Option(None, help="R: restore time after a preemption [1m]."),
    restart_delay: str = typer.Option("0", help="D: time to get a new VM (billed: boot)."),
    preempt_rate: float = typer.Option(0.5, help="λ: preemptions per hour of uptime."),
    schedule: str = typer.Option("poisson", help="poisson | weibull:SHAPE | trace:FILE"),
    trace_invert: bool = typer.Option(False, help="Read trace values as 1 = preempted."),
    kill: str = typer.Option("sigkill", help="sigkill | sigterm | mixed:P"),
    grace: str = typer.Option("30s", help="Notice before the SIGKILL, for sigterm preemptions."),
    nodes: int = typer.Option(
        1, help="VMs of a data-parallel job, each preempted on its own; R is then the group's rendezvous and restore."
    ),
    elastic: bool = typer.Option(
        False, help="With --nodes: compute on the VMs that are up (torchrun --nnodes=1:N) instead of waiting for all."
    ),
    trials: int = typer.Option(10_000, help="Trajectories per interval."),
    seed: int = typer.Option(0),
    calibrate: Path | None = typer.Option(None, help="A `spotsim run` output dir: take step time, C and R from it."),
    machine: str = typer.Option(DEFAULT_MACHINE, help="Price-table row(s)."),
    prices: Path | None = typer.Option(None, help="CSV price table replacing the shipped one."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Monte Carlo of the job on spot VMs: wall time, lost work, cost and savings per checkpoint interval."""
    from spotsim.cost import load_prices
    from spotsim.durations import parse_duration, parse_durations
    from spotsim.preemption import KillMode, parse_schedule
    from spotsim.sim import Job, interval_rows
    from spotsim.sim import simulate as run_simulation
    from spotsim.sim.calibration import calibration_from_run

    measured = calibration_from_run(calibrate) if calibrate else {}
    taus = list(parse_durations(intervals, "--intervals"))
    kill_mode = KillMode.parse(kill)
    c = parse_duration(checkpoint_cost, "--checkpoint-cost") if checkpoint_cost else measured.get("c", 30.0)
    job = Job(
        work_s=work_hours * 3600,
        checkpoint_s=c,
        persist_s=parse_duration(persist_time, "--persist-time"),
        restart_s=parse_duration(restart, "--restart") if restart else measured.get("r", 60.0),
        restart_delay_s=parse_duration(restart_delay, "--restart-delay"),
        step_s=parse_duration(step_time, "--step-time") if step_time else measured.get("step", 1.0),
        grace_s=parse_duration(grace, "--grace"),
        sigkill_fraction=kill_mode.sigkill_fraction,
        nodes=nodes,
        elastic=elastic,
    )
    chosen = load_prices(prices).machine(machine)
    plan = parse_schedule(schedule, preempt_rate, trace_invert=trace_invert)
    outcome = run_simulation(job, taus, plan, trials=trials, seed=seed)
    rows = interval_rows(outcome, job, taus, chosen)
    if as_json:
        print(json.dumps(rows))
        return
    _print_simulation(rows, job, plan.describe(), chosen.name, trials)


@app.command(context_settings=TAKES_A_COMMAND)
def sweep(
    ctx: typer.Context,
    intervals: str = typer.Option(..., help="Checkpoint intervals, simulated (e.g. 1m,3m,10m)."),
    rates: str = typer.Option(..., help="Preempt rates per hour (e.g. 6,12)."),
    kills: str = typer.Option("sigkill", help="Kill modes, comma-separated (sigkill, sigterm, mixed:P)."),
    repeats: int = typer.Option(3, help="Runs per grid point."),
    workload: str | None = WORKLOAD,
    steps: int | None = typer.Option(None, help="Total steps of the built-in workload (or a -- CMD job's)."),
    work: str | None = typer.Option(
        None, help="Simulated compute the job stands for; K is measured once for every run [built-in: 24h]."
    ),
    time_scale: float | None = typer.Option(None, help="K for every run (instead of --work) [-- CMD: 1]."),
    provider: str = PROVIDER,
    notice: str | None = NOTICE,
    grace: str | None = GRACE,
    rebalance_lead: str | None = REBALANCE_LEAD,
    restart_delay: str = typer.Option("0", help="Time to get a new VM, simulated."),
    machine: str = typer.Option(DEFAULT_MACHINE, help="Price-table row(s)."),
    parallel: int | None = typer.Option(None, help="Runs at a time on this machine [number of cores]; not with --ray."),
    ray_address: str | None = typer.Option(
        None,
        "--ray",
        metavar="ADDRESS",
        help="Each run a Ray task: local (a Ray runtime started here), auto (this node's cluster) or HOST:PORT "
        "(a cluster's GCS address); needs pip install 'spotsim[ray]'.",
    ),
    nodes: int = NODES,
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("spotsim-sweep"), help="Runs, sweep.csv/.parquet, plots and report.md."),
    as_json: bool = typer.Option(False, "--json", help="Print the table's rows as JSON (progress goes to stderr)."),
) -> None:
    """Live runs over intervals × rates × kill modes, against the simulator calibrated on them."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from spotsim.durations import parse_duration, parse_durations
    from spotsim.harness.live import out_dir
    from spotsim.harness.sweep import SweepConfig, measured_scale, run_sweep
    from spotsim.report.sweep_report import write_report
    from spotsim.sim.curves import sweep_curves
    from spotsim.workloads import command as command_for

    if ray_address is not None and parallel is not None:
        raise InvalidOption(
            "give --ray or --parallel, not both: with --ray each run is a task that reserves its cores, and the "
            "cluster's cores decide how many run at a time"
        )
    job = _job(ctx.args, workload, steps, command_for)
    timeline = _provider(provider, notice, grace, rebalance_lead)
    config = SweepConfig(
        command=job.command,
        out=out.absolute(),
        intervals_s=parse_durations(intervals, "--intervals"),
        rates=_float_list(rates, "--rates"),
        kills=tuple(k.strip() for k in kills.split(",") if k.strip()),
        repeats=repeats,
        provider=timeline,
        restart_delay_s=parse_duration(restart_delay, "--restart-delay"),
        **_clock_options(work, time_scale, job),
        machine=machine,
        parallel=parallel if parallel is not None else os.cpu_count() or 1,
        seed=seed,
        nodes=nodes,
    )
    pool = None
    if ray_address is not None:  # refused here, before anything is written, if Ray or the cluster is missing
        from rich.markup import escape

        from spotsim.harness.ray_pool import RayPool

        warnings = Console(stderr=True)
        pool = RayPool(
            ray_address,
            warn=lambda line: warnings.print(f"[yellow]warning[/yellow]: {escape(line)}", soft_wrap=True),
        )
    total = len(config.grid())
    shown = Console(stderr=True) if as_json else console
    sigterm_interrupts()  # stops the runs and keeps the finished ones, as Ctrl-C does
    delays = {
        "grace_s": timeline.grace_s,
        "restart_delay_s": parse_duration(restart_delay, "--restart-delay"),
        "nodes": nodes,
    }
    with out_dir(config.out):
        if config.needs_scale:  # measured once, before the runs, so that every run shares one K
            config = measured_scale(config)
            assert config.scale is not None  # measured_scale sets it
            Console(stderr=True).print(f"clock: {config.scale.note}", highlight=False)
        bar = Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=shown)
        try:
            with pool or nullcontext(), bar:  # a Ray pool connects first: a cluster not there is one line, no bar
                task = bar.add_task("live runs", total=total)
                table = run_sweep(config, pool=pool, on_done=lambda point, summary: bar.advance(task))
        except KeyboardInterrupt:
            shown.print(f"interrupted: the runs that finished are in {config.out / 'sweep.csv'}")
            raise
        simulated = sweep_curves(table.to_dict("records"), **delays)
        report, too_few = write_report(table, simulated, config.out, command="spotsim " + " ".join(sys.argv[1:]))
    for line in too_few:
        shown.print(f"[yellow]warning[/yellow]: {line}", highlight=False, soft_wrap=True)
    if as_json:
        print(table.to_json(orient="records"))
        return
    console.print(f"wrote {config.out / 'sweep.csv'}, sweep.parquet, the plots and {report}")


def _float_list(text: str, option: str) -> tuple[float, ...]:
    """Numbers from a comma-separated list (``6,12``); at least one."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InvalidOption(f"{option} {text!r} is not a comma-separated list of numbers") from None
    if not values:
        raise InvalidOption(f"{option} needs at least one value")
    return values


def _duration(text: str | None, option: str) -> float | None:
    """Seconds from an optional duration option; None when it was not given."""
    from spotsim.durations import parse_duration

    return None if text is None else parse_duration(text, option)


def _mtbf_s(mtbf: str | None, rate: float | None) -> float:
    from spotsim.durations import parse_duration

    if mtbf is not None and rate is None:
        return parse_duration(mtbf, "--mtbf")
    if rate is not None and mtbf is None:
        if not (rate > 0 and rate != float("inf")):
            raise InvalidOption(f"--preempt-rate must be > 0 per hour, got {rate}")
        return 3600.0 / rate
    raise InvalidOption("give exactly one of --mtbf and --preempt-rate")


def _print_simulation(rows: list[dict], job, schedule: str, machine: str, trials: int) -> None:
    from rich.table import Table

    group = f"{job.nodes} nodes{' (elastic)' if job.elastic else ''}, cost for all" if job.nodes > 1 else "1 node"
    title = (
        f"{job.work_s / 3600:g} h of work, C = {job.checkpoint_s:g} s, R = {job.restart_s:g} s, {schedule}, "
        f"{group}, {trials:,} trials per interval, {machine}"
    )
    table = Table(title=title)
    columns = [
        "interval",
        "wall (mean)",
        "wall p90",
        "lost (mean)",
        "ckpt overhead",
        "spot $",
        "on-demand $",
        "savings",
    ]
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            f"{r['interval_s'] / 60:,.1f} min",
            f"{r['wall_s_mean'] / 3600:,.2f} h",
            f"{r['wall_s_p90'] / 3600:,.2f} h",
            f"{r['lost_s_mean'] / 60:,.1f} min",
            f"{r['checkpoint_overhead_mean']:.2%}",
            f"{r['spot_cost_usd_mean']:,.2f}",
            f"{r['on_demand_cost_usd']:,.2f}",
            f"{r['savings_mean']:.1%}",
        )
    console.print(table)


@dataclass(frozen=True)
class _Job:
    command: tuple[str, ...]
    total_steps: int | None
    builtin: bool
    steps_given: bool


def _job(args: list[str], workload: str | None, steps: int | None, command_for) -> _Job:
    """The training command, from --workload NAME [--steps N] or -- CMD ARGS… (where --steps only informs)."""
    if args and args[0].startswith("-"):
        raise InvalidOption(f"unknown option {args[0]}: spotsim's options go before `--`, your command after it")
    if args and workload:
        raise InvalidOption("give either --workload NAME or -- CMD ARGS…, not both")
    if steps is not None and steps < 1:  # before a built-in workload's command is built with it
        raise InvalidOption(f"--steps must be ≥ 1, got {steps}")
    if args:
        return _Job(tuple(args), steps, builtin=False, steps_given=steps is not None)
    from spotsim.workloads import get

    total = steps or get(workload or "torch-cnn").steps
    return _Job(tuple(command_for(workload or "torch-cnn", ["--steps", str(total)])), total, True, steps is not None)


def _storage_faults(text: str | None, bucket: str | None):
    """``--storage-faults``, checked before anything starts."""
    if text is None:
        return None
    from spotsim.storage.faults import FaultSpec

    if bucket is not None:
        raise InvalidOption("--storage-faults needs the embedded emulator: drop --bucket")
    return FaultSpec.parse(text)


def _export(kind: str, directory: Path, config, outcome) -> None:
    """Write the replay of the run's first preemptions, or say why there is none."""
    from spotsim.export_plan import export_plan
    from spotsim.harness.live import replay_plan

    plan, measured = replay_plan(config, outcome.summary)
    if not plan:
        console.print("[yellow]--export-plan[/yellow]: the run had no preemptions, so there is nothing to replay")
        return
    written = export_plan(kind, directory, plan, measured)
    names = ", ".join(p.name for p in written)
    console.print(f"wrote the {kind} replay of {min(len(plan), 3)} of {len(plan)} preemptions: {names} in {directory}")


def _provider(name: str, notice: str | None, grace: str | None, rebalance_lead: str | None):
    """The preemption timeline from ``--provider`` and its overrides."""
    from spotsim.preemption.providers import parse_provider

    return parse_provider(
        name,
        notice_s=_duration(notice, "--notice"),
        grace_s=_duration(grace, "--grace"),
        rebalance_lead_s=_duration(rebalance_lead, "--rebalance-lead"),
    )


def _clock_options(work: str | None, time_scale: float | None, job: _Job) -> dict:
    """K directly (--time-scale), or the work K is chosen for (--work; 24 h for a built-in workload by default)."""
    if work is not None and time_scale is not None:
        # Checked on the options as given: the configs cannot tell --time-scale 1 from no --time-scale.
        raise InvalidOption(
            "give --work or --time-scale, not both: each sets K (--work from the job's measured step time, "
            "--time-scale directly) and neither silently wins"
        )
    work_s = _duration(work, "--work")
    if work_s is None and time_scale is None and job.builtin:
        work_s = DEFAULT_WORK_S
    return {
        "work_s": work_s,
        "time_scale": 1.0 if time_scale is None else time_scale,
        "total_steps": job.total_steps,
        "steps_adjustable": job.builtin and not job.steps_given,
    }


def _run_with_progress(config, machine, bucket, total_steps, storage_faults=None):
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from spotsim.harness import run_live

    description = TextColumn("{task.description}")
    status = TextColumn("{task.fields[status]}")
    columns = [SpinnerColumn(), description, BarColumn(), status, TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("training", total=total_steps, status="starting")

        def show(p) -> None:
            counts = f"preemptions {p.preemptions} · lost {p.lost_steps} steps · checkpoints {p.checkpoints}"
            status = f"step {p.step} · attempt {p.attempt} · {counts} · {p.state}"
            bar.update(task, completed=p.step, status=status)

        def chosen(scale) -> None:
            bar.console.print(f"clock: {scale.note}", highlight=False)
            bar.update(task, total=scale.steps)

        return run_live(
            config, machine, bucket=bucket, storage_faults=storage_faults, on_progress=show, on_scale=chosen
        )


def _print_verdict(verdict, out: Path) -> None:
    """One line per run (its kills, resumes and outcome), its failures and diagnosis, then the verdict."""
    mark = {"pass": "[green]✓[/green]", "fail": "[red]✗[/red]", "inconclusive": "[yellow]?[/yellow]"}
    for cause in verdict.reference_failures:
        console.print(f"{mark['fail']} {cause}")
    for check in verdict.checks:
        kills = (
            ", ".join(
                f"step {k.step} ({'+'.join(k.signals) or 'notice only'}{', inside a save' if k.in_save else ''})"
                for k in check.kills
            )
            or "none landed"
        )
        resumes = ", ".join(str(r.step) for r in check.resumes) or "none"
        what = {"pass": "identical to the reference", "inconclusive": "inconclusive"}.get(
            check.outcome, check.difference.describe() if check.difference else "NOT resume-correct"
        )
        console.print(f"{mark[check.outcome]} {check.name}: kills at {kills}; resumed from {resumes}: {what}")
        for note in [*check.failures, *check.diagnosis, *check.inconclusive]:
            console.print(f"    {note}", highlight=False, soft_wrap=True)  # whole lines: CI logs get grepped
        if check.stderr_tail:
            console.print("    " + "\n    ".join(check.stderr_tail.strip().splitlines()[-5:]), highlight=False)
        if check.outcome == "fail":
            console.print(f"    replay: spotsim verify --kill-steps {check.planned} …", highlight=False)
    for cause in verdict.reference_inconclusive:
        console.print(f"{mark['inconclusive']} {cause}", highlight=False)
    console.print(f"wrote {out / 'verdict.json'}")
    if verdict.outcome == "fail":
        console.print("[red]NOT resume-correct[/red]")
    elif verdict.outcome == "inconclusive":
        console.print("[yellow]INCONCLUSIVE[/yellow]: no resume was really tested in every run (exit status 3)")
    else:
        in_save = sum(c.kills_in_save for c in verdict.checks)
        console.print(
            f"[green]resume-correct[/green]: {_count(len(verdict.checks), 'preempted run')} resumed and match the "
            f"reference bit for bit ({_count(sum(len(c.kills) for c in verdict.checks), 'kill')}, {in_save} inside "
            "a save)"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _met(preemption) -> str:
    """How the job met one noticed preemption (a ``PreemptionResponse`` with its notice), in a few words."""
    from spotsim.report.timeline import duration

    notice = preemption.notice
    parts = []
    if notice.notice_seen_after_real_s is not None:
        parts.append(f"saw the notice after {notice.notice_seen_after_real_s:.2f} s real")
    if not notice.emergency_checkpoint:
        parts.append("no emergency checkpoint")
    else:
        saved = f"emergency checkpoint after {duration(notice.emergency_after_s)}"
        parts.append(saved + ("" if notice.emergency_before_kill else ": NOT before the kill"))
    exits = {"before_signal": "exited before the signal", "inside_grace": "exited inside the grace", "killed": "killed"}
    parts.append(exits[preemption.exit])
    return "; ".join(parts)


def _storage_rows(storage) -> list[tuple[str, str]]:
    """The bucket's failures (a ``StorageSummary``) and what the job's saves made of them, when there were any."""
    if storage is None or not (storage.faults or storage.emulator_outages or storage.failed or storage.skipped):
        return []
    injected = ", ".join(f"{n} × {kind}" for kind, n in storage.injected.items()) or "none"
    saves = f"{storage.retried} ({storage.retries} retries) / {storage.skipped} / {storage.failed}"
    rows = [
        ("storage faults", f"{storage.faults or 'none asked'}: injected {injected}"),
        ("saves retried / skipped / failed", saves),
    ]
    if outages := storage.emulator_outages:
        down = sum(o.get("down_s") or 0.0 for o in outages)
        rows.append(("emulator outages", f"{len(outages)}, restarted each time ({down:.1f} s real down)"))
    return rows


def _notice_rows(interruptions) -> list[tuple[str, str]]:
    """Noticed preemptions: one row each when a few, else one row counting the emergency saves before the kill."""
    noticed = [x for x in interruptions if x.preemption is not None and x.preemption.notice is not None]
    if len(noticed) <= 3:
        return [(f"attempt {x.attempt} notice", _met(x.preemption)) for x in noticed]
    notices = [x.preemption.notice for x in noticed]
    saved = sum(n.emergency_before_kill for n in notices)
    late = [str(x.attempt) for x, n in zip(noticed, notices, strict=True) if not n.emergency_before_kill]
    seen = sum(n.notice_seen_after_s is not None for n in notices)
    missed = f" (not in attempts {', '.join(late)})" if late else ""
    rescued = f"emergency checkpoint before the kill in {saved}{missed}"
    return [("notices", f"{len(noticed)}: the job saw {seen} in the metadata; {rescued}")]


def _print_summary(summary, out: Path) -> None:
    """The ``RunSummary`` as a table, then the projection and where the run wrote its files."""
    from rich.table import Table

    from spotsim.report.timeline import duration, projection_lines

    run, cost = summary.accounting, summary.cost
    state = "completed" if run.completed else "NOT completed"
    table = Table(title=f"spotsim run — {state} (compute at K = {run.time_scale:,.4g})")
    table.add_column("measure")
    table.add_column("value (simulated)", justify="right")
    rows = [
        ("final step", f"{run.final_step:,}"),
        ("attempts / preemptions / crashes", f"{run.attempts} / {run.preemptions} / {run.crashes}"),
        ("lost steps (lost time)", f"{run.lost_steps:,} ({duration(run.lost_time_s)})"),
        ("steps computed = final + lost", f"{run.steps_computed:,} {'✓' if run.identity_holds else '✗ MISMATCH'}"),
        ("checkpoints (blocking)", f"{run.checkpoints:,} ({run.checkpoint_blocking_s:.2f} s)"),
        ("checkpoint overhead", f"{run.checkpoint_overhead:.3%}"),
        ("start-up / restart overhead R", f"{_seconds(run.startup_s)} / {_seconds(run.restart_overhead_s)}"),
        ("wall: simulated / real", f"{run.sim_hours:,.2f} h / {run.wall_s:.1f} s"),
        (f"spot cost ({_nodes_of(cost.nodes)}{cost.machine})", f"${cost.spot_cost_usd:,.2f}"),
        ("on-demand cost, uninterrupted", f"${cost.on_demand_cost_usd:,.2f}"),
        ("savings", f"{cost.savings:.1%}"),
        ("clock: real → simulated", _phases(summary.clock.phases)),
    ]
    rows += _node_rows(summary.nodes)
    rows += _notice_rows(summary.interruptions)
    rows += _storage_rows(summary.storage)
    rows += [("[yellow]warning[/yellow]", text) for text in run.warnings]
    rows += [("[red]anomaly[/red]", text) for text in run.anomalies]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    projection = summary.projection or {}
    for line in projection_lines(projection) + projection.get("notes", []):
        console.print(line, highlight=False)
    console.print(f"wrote {out / 'summary.json'}, {out / 'events.jsonl'}, {out / 'timeline.png'}")


def _nodes_of(nodes: int) -> str:
    return f"{nodes} nodes × " if nodes > 1 else ""


def _node_rows(nodes) -> list[tuple[str, str]]:
    """A ``--nodes`` run: each node's VMs, preemptions, the group's lost steps it caused, its bill."""
    return [
        (
            f"node {n.node}: VMs / preemptions / crashes",
            f"{n.vms} / {n.preemptions} / {n.crashes} · lost {n.lost_steps:,} steps · {n.billed_hours:,.3f} h billed",
        )
        for n in nodes
    ]


def _phases(phases: dict) -> str:
    """Each phase that took time (``PhaseTime`` by name): real seconds → simulated."""
    from spotsim.report.timeline import duration

    shown = [
        f"{name.replace('_', ' ')} {p.real_s:.1f} s → {duration(p.sim_s)}"
        for name, p in phases.items()
        if p.sim_s > 0 or p.real_s > 0.05
    ]
    return "\n".join(shown)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} s"


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


def command_names() -> list[str]:
    """Every command's full name (``run``, ``emulator``, ``emulator start``…), read from the app: the one list."""

    def walk(group: Any, prefix: str) -> list[str]:
        names = []
        for name, command in group.commands.items():
            names.append(prefix + name)
            if hasattr(command, "commands"):  # a group of subcommands
                names += walk(command, f"{prefix}{name} ")
        return names

    return walk(typer.main.get_command(app), "")


class _UsageError(Protocol):
    def format_message(self) -> str: ...


def _is_usage_error(error: Exception) -> TypeGuard[_UsageError]:
    """Click's UsageError (bad option, missing value), which typer vendors under a private module."""
    return any(cls.__name__ == "UsageError" for cls in type(error).__mro__) and hasattr(error, "format_message")


if __name__ == "__main__":
    main()
