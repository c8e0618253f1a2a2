"""Reports: plots and tables of runs (matplotlib is imported only when a plot is drawn)."""

from spotsim.report.timeline import LostWork, plot_timeline

__all__ = ["LostWork", "plot_timeline"]
