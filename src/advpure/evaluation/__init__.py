"""Experiments, protocols, reports."""
from .config import AttackConfig, DefenseConfig, EvalConfig
from .results import EvalResult
from .runner import run_evaluation
from .report import results_table, write_run

__all__ = ["AttackConfig", "DefenseConfig", "EvalConfig", "EvalResult", "results_table",
           "run_evaluation", "write_run"]
