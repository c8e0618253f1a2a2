"""``timeline.png``: a run's attempts, checkpoints, preemptions and lost work on one time axis."""

from __future__ import annotations

from pathlib import Path

from spotsim.harness.runlog import AttemptRecord


def plot_timeline(
    attempts: list[AttemptRecord], interruptions: list[dict], path: Path, *, time_scale: float, title: str
) -> None:
    """Steps against simulated time: one line per attempt, checkpoints as dots, kills as red marks,
    and the lost segment of each interruption (steps computed twice) shaded.

    ``interruptions`` are the summary's records: the plot draws the summary's lost work, never its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not attempts:
        return
    t0 = attempts[0].launch_t
    hours = 3600 / time_scale  # real seconds per simulated hour

    def x(t: float) -> float:
        return (t - t0) / hours

    lost = {x["attempt"]: x for x in interruptions if (x.get("lost_steps") or 0) > 0}
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, a in enumerate(attempts):
        color = f"C{i % 10}"
        points = [(a.launch_t, a.first_step)] + a.steps
        ax.plot([x(t) for t, _ in points], [s for _, s in points], color=color, lw=1.5, label=f"attempt {a.attempt}")
        ax.scatter([x(c["t"]) for c in a.checkpoints], [c["step"] for c in a.checkpoints], s=14, color=color,
                   edgecolors="black", linewidths=0.5, zorder=3)  # fmt: skip
        for t, name in a.signals:
            ax.axvline(x(t), color="red", lw=1, ls="-" if name == "SIGKILL" else ":")
        if (record := lost.get(a.attempt)) is not None:
            ax.axhspan(record["resumed_step"], record["last_step"], xmin=0, xmax=1, color="red", alpha=0.06)
            ax.annotate(f"lost {record['lost_steps']}", (x(a.exit_t or a.launch_t), record["last_step"]),
                        fontsize=7, color="red", xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel(f"simulated hours (time scale K = {time_scale:g})")
    ax.set_ylabel("completed steps")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.text(
        0.01, 0.01, "dots: checkpoints · red solid: SIGKILL · red dotted: SIGTERM · shaded: lost steps", fontsize=7
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
