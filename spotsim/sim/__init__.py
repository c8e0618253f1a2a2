"""Theory and simulation of the checkpoint interval: closed forms and a vectorised Monte Carlo.

No framework imports here: ``spotsim optimal`` and ``spotsim simulate`` work without torch or TensorFlow.
"""

from spotsim.sim.calibration import Calibration, calibration_from_run
from spotsim.sim.closed_forms import Optimum, daly_interval, expected_wall_s, optimum, waste_fraction, young_interval
from spotsim.sim.curves import SweepCurves, sweep_curves
from spotsim.sim.montecarlo import Job, Outcome, check_budget, interval_rows, simulate

__all__ = [
    "Calibration",
    "Job",
    "Optimum",
    "Outcome",
    "SweepCurves",
    "calibration_from_run",
    "check_budget",
    "daly_interval",
    "expected_wall_s",
    "optimum",
    "simulate",
    "interval_rows",
    "sweep_curves",
    "waste_fraction",
    "young_interval",
]
