"""Reports computed from the record store: a run's tables and figures, sweeps, the papers'
table, and the one plotting helper they share."""
from .report import load_run, results_table, write_run

__all__ = ["load_run", "results_table", "write_run"]
