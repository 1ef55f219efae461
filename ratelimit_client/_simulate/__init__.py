"""``ratelimit-client simulate``: many uploader processes against the emulated API, summarised."""

from ._report import RunSummary, format_table, jain, percentile, plot, utilisation
from ._run import SimulationConfig, available_kinds, run_kind, run_simulation
from ._workers import KINDS, Kind

__all__ = [
    "KINDS",
    "Kind",
    "RunSummary",
    "SimulationConfig",
    "available_kinds",
    "format_table",
    "jain",
    "percentile",
    "plot",
    "run_kind",
    "run_simulation",
    "utilisation",
]
