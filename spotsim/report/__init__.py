"""Reports: plots and tables of runs (matplotlib is imported only when a plot is drawn)."""

from spotsim.report.timeline import plot_timeline

__all__ = ["plot_timeline"]
