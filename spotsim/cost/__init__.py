"""Prices and projected cost: what a run would bill on spot against on-demand."""

from spotsim.cost.prices import Machine, PriceTable, load_prices
from spotsim.cost.projection import Projection, project, savings

__all__ = ["Machine", "PriceTable", "Projection", "load_prices", "project", "savings"]
