"""``timeline.png``: a run's attempts, checkpoints, preemptions and lost work on one time axis.

It draws what it is given, the attempts folded from the run log (:func:`spotsim.events.fold_attempts`) and
the summary's numbers, and derives nothing of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from spotsim.events import AttemptRecord, NodeVMRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MAX_POINTS = 400  # step events drawn per attempt
LEGEND = (
    "dots: checkpoints · orange dashed: metadata notice (▼ the job saw it) · grey dashed: rebalance "
    "recommendation · red dotted: SIGTERM · red solid: SIGKILL · shaded: lost steps"
)


class LostWork(Protocol):
    """What the plot needs of one of the summary's interruptions: ``attempt`` reached ``last_step``, the next
    attempt resumed from ``resumed_step``, and ``lost_steps`` were computed twice."""

    @property
    def attempt(self) -> int: ...

    @property
    def resumed_step(self) -> int | None: ...

    @property
    def last_step(self) -> int: ...

    @property
    def lost_steps(self) -> int | None: ...


def plot_timeline(
    attempts: list[AttemptRecord],
    interruptions: Iterable[LostWork],
    to_sim: Callable[[float], float],
    path: Path,
    *,
    title: str,
    time_scale: float,
    projection: dict | None = None,
    nodes: list[NodeVMRecord] | None = None,
) -> None:
    """Steps against simulated time: one line per attempt, checkpoints as dots, kills as red marks,
    the lost segment of each interruption (steps computed twice) shaded, and the projection beside it.

    ``to_sim`` maps a real unix time onto the run's simulated clock; ``time_scale`` is the run's K;
    ``interruptions`` and ``projection`` are the summary's: the plot draws its lost work, never its own.
    ``nodes`` (a ``--nodes`` run's VMs, :func:`spotsim.events.fold_nodes`) adds one lane per node below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not attempts:
        return
    lost = {x.attempt: x for x in interruptions if (x.lost_steps or 0) > 0}
    if nodes:
        fig, (ax, lanes) = plt.subplots(
            2, 1, figsize=(11, 4.8 + 0.35 * len({v.node for v in nodes})), sharex=True, height_ratios=(4, 1)
        )
        _draw_nodes(lanes, nodes, lambda t: to_sim(t) / 3600)
        xlabel_axes = lanes
    else:
        fig, ax = plt.subplots(figsize=(11, 4.8))
        xlabel_axes = ax
    for i, a in enumerate(attempts):
        _draw_attempt(ax, a, f"C{i % 10}", lost.get(a.attempt), lambda t: to_sim(t) / 3600)
    xlabel_axes.set_xlabel(f"simulated hours (compute at K = {time_scale:,.4g}; start-up, saves and exits at 1×)")
    ax.set_ylabel("completed steps")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    if lines := projection_lines(projection or {}):
        text = "\n".join(lines).replace("$", r"\$")  # a bare $ starts matplotlib's math mode
        ax.text(1.01, 1.0, text, transform=ax.transAxes, fontsize=7, va="top", family="monospace")
    fig.text(0.01, 0.01, LEGEND, fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw_attempt(ax: Axes, a: AttemptRecord, color: str, lost: LostWork | None, x: Callable[[float], float]) -> None:
    """One attempt: its steps, checkpoints, signals, notices and, if it cost any, its lost work."""
    points = [(a.launch_t, a.first_step)] + _thinned(a.steps)
    ax.plot([x(t) for t, _ in points], [s for _, s in points], color=color, lw=1.5, label=f"attempt {a.attempt}")
    saved_x = [x(c["t"]) for c in a.checkpoints]
    saved_y = [c["step"] for c in a.checkpoints]
    ax.scatter(saved_x, saved_y, s=10, color=color, edgecolors="black", linewidths=0.4, zorder=3)
    for t, name in a.signals:
        ax.axvline(x(t), color="red", lw=1, ls="-" if name == "SIGKILL" else ":")
    for at, mark in ((a.rebalance_t, "grey"), (a.notice_t, "darkorange")):
        if at is not None:
            ax.axvline(x(at), color=mark, lw=1, ls="--")
    if a.notice_seen_t is not None:
        ax.scatter([x(a.notice_seen_t)], [a.last_step], marker="v", s=25, color="darkorange", zorder=4)
    if lost is not None and lost.resumed_step is not None:
        ax.axhspan(lost.resumed_step, lost.last_step, xmin=0, xmax=1, color="red", alpha=0.06)
        label_at = (x(a.exit_t or a.launch_t), lost.last_step)
        ax.annotate(
            f"lost {lost.lost_steps}", label_at, fontsize=7, color="red", xytext=(3, 3), textcoords="offset points"
        )


_NODE_END_COLORS = {"preempted": "red", "crash": "black", "done": "green"}


def _draw_nodes(ax: Axes, vms: list[NodeVMRecord], x: Callable[[float], float]) -> None:
    """One lane per node: a bar per VM from its launch to its exit, edged by how it ended."""
    for vm in vms:
        end = vm.exit_t if vm.exit_t is not None else vm.launch_t
        edge = _NODE_END_COLORS.get(vm.cause or "", "grey")
        ax.barh(vm.node, x(end) - x(vm.launch_t), left=x(vm.launch_t), height=0.6, color=f"C{vm.vm % 10}", alpha=0.5)
        ax.plot([x(end)], [vm.node], marker="|", markersize=12, color=edge)
    ax.set_yticks(sorted({vm.node for vm in vms}), [f"node {n}" for n in sorted({vm.node for vm in vms})])
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")
    ax.set_title("VMs per node (end mark: red preempted · black crash · green done)", fontsize=8, loc="left")


def _thinned(steps: list[tuple[float, int]], most: int = MAX_POINTS) -> list[tuple[float, int]]:
    """At most ``most`` of an attempt's step events, its last kept: a line needs no more, and mapping each
    onto the simulated clock costs time."""
    if len(steps) <= most:
        return steps
    stride = -(-len(steps) // most)
    return steps[::stride] + ([steps[-1]] if (len(steps) - 1) % stride else [])


def projection_lines(projection: dict) -> list[str]:
    """The projection in a few lines of text (the run's table and the timeline both show these)."""
    if not projection or "metrics" not in projection:
        return [f"projection: {projection['skipped']}"] if projection.get("skipped") else []
    m, best = projection["metrics"], projection["best"]
    lines = [f"projection: {projection['trials']:,} simulated runs over {duration(projection['work_s'])} of work"]
    shown = (
        ("wall_s", "wall", duration),
        ("lost_s", "lost work", duration),
        ("spot_cost_usd", "spot cost", money),
        ("savings", "savings", lambda v: f"{v:.1%}"),
    )
    for name, label, fmt in shown:
        d = m[name]
        where = f"; live {fmt(d['live'])} ({_rank(d['live_percentile'])})" if "live" in d else ""
        lines.append(f"  {label}: mean {fmt(d['mean'])}, p10–p90 {fmt(d['p10'])}–{fmt(d['p90'])}{where}")
    lines.append(
        f"at {best['asked_s']:,.4g} s: {money(best['asked_cost_usd'])} (p90 {money(best['asked_cost_p90_usd'])})"
    )
    if "optimum_s" in best:
        daly = f"{money(best['daly_cost_usd'])}" if best.get("daly_cost_usd") is not None else "—"
        optimum = f"at the optimum {best['optimum_s']:,.4g} s: {money(best['optimum_cost_usd'])}"
        lines.append(f"{optimum}; at Daly's {best['daly_s']:,.4g} s: {daly}")
    elif best.get("note"):
        lines.append(best["note"])
    return lines


def _rank(percentile: float) -> str:
    """Where the live value falls among the simulated ones."""
    if percentile <= 0:
        return "below every simulated run"
    if percentile >= 1:
        return "above every simulated run"
    return f"p{100 * percentile:.0f}"


def duration(seconds: float) -> str:
    """Seconds as the unit a reader expects: s, min or h."""
    if abs(seconds) >= 3600:
        return f"{seconds / 3600:,.2f} h"
    return f"{seconds / 60:,.1f} min" if abs(seconds) >= 120 else f"{seconds:,.1f} s"


def money(usd: float) -> str:
    return f"${usd:,.2f}" if abs(usd) >= 10 else f"${usd:,.3g}"
