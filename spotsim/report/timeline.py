"""``timeline.png``: a run's attempts, checkpoints, preemptions and lost work on one time axis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from spotsim.harness.runlog import AttemptRecord

MAX_POINTS = 400  # step events drawn per attempt


def plot_timeline(
    attempts: list[AttemptRecord], summary: dict, to_sim: Callable[[float], float], path: Path, *, title: str
) -> None:
    """Steps against simulated time: one line per attempt, checkpoints as dots, kills as red marks,
    the lost segment of each interruption (steps computed twice) shaded, and the projection beside it.

    ``to_sim`` maps a real unix time onto the run's simulated clock; ``summary`` is the run's: the
    plot draws its lost work and projection, never its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not attempts:
        return

    def x(t: float) -> float:
        return to_sim(t) / 3600

    lost = {x["attempt"]: x for x in summary["interruptions"] if (x.get("lost_steps") or 0) > 0}
    fig, ax = plt.subplots(figsize=(11, 4.8))
    for i, a in enumerate(attempts):
        color = f"C{i % 10}"
        points = [(a.launch_t, a.first_step)] + _thinned(a.steps)
        ax.plot([x(t) for t, _ in points], [s for _, s in points], color=color, lw=1.5, label=f"attempt {a.attempt}")
        ax.scatter([x(c["t"]) for c in a.checkpoints], [c["step"] for c in a.checkpoints], s=10, color=color,
                   edgecolors="black", linewidths=0.4, zorder=3)  # fmt: skip
        for t, name in a.signals:
            ax.axvline(x(t), color="red", lw=1, ls="-" if name == "SIGKILL" else ":")
        for t, mark in ((a.rebalance_t, "grey"), (a.notice_t, "darkorange")):
            if t is not None:
                ax.axvline(x(t), color=mark, lw=1, ls="--")
        if a.notice_seen_t is not None:
            ax.scatter([x(a.notice_seen_t)], [a.last_step], marker="v", s=25, color="darkorange", zorder=4)
        if (record := lost.get(a.attempt)) is not None:
            ax.axhspan(record["resumed_step"], record["last_step"], xmin=0, xmax=1, color="red", alpha=0.06)
            ax.annotate(f"lost {record['lost_steps']}", (x(a.exit_t or a.launch_t), record["last_step"]),
                        fontsize=7, color="red", xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel(f"simulated hours (compute at K = {summary['time_scale']:,.4g}; start-up, saves and exits at 1×)")
    ax.set_ylabel("completed steps")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    if lines := projection_lines(summary.get("projection") or {}):
        text = "\n".join(lines).replace("$", r"\$")  # a bare $ starts matplotlib's math mode
        ax.text(1.01, 1.0, text, transform=ax.transAxes, fontsize=7, va="top", family="monospace")
    fig.text(
        0.01, 0.01, "dots: checkpoints · orange dashed: metadata notice (▼ the job saw it) · grey dashed: rebalance "
        "recommendation · red dotted: SIGTERM · red solid: SIGKILL · shaded: lost steps", fontsize=7,
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    shown = (("wall_s", "wall", duration), ("lost_s", "lost work", duration), ("spot_cost_usd", "spot cost", money),
             ("savings", "savings", lambda v: f"{v:.1%}"))  # fmt: skip
    for name, label, fmt in shown:
        d = m[name]
        where = f"; live {fmt(d['live'])} ({_rank(d['live_percentile'])})" if "live" in d else ""
        lines.append(f"  {label}: mean {fmt(d['mean'])}, p10–p90 {fmt(d['p10'])}–{fmt(d['p90'])}{where}")
    lines.append(
        f"at {best['asked_s']:,.4g} s: {money(best['asked_cost_usd'])} (p90 {money(best['asked_cost_p90_usd'])})"
    )
    if "optimum_s" in best:
        daly = f"{money(best['daly_cost_usd'])}" if best.get("daly_cost_usd") is not None else "—"
        lines.append(f"at the optimum {best['optimum_s']:,.4g} s: {money(best['optimum_cost_usd'])}; "
                     f"at Daly's {best['daly_s']:,.4g} s: {daly}")  # fmt: skip
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
