"""The evaluation engine: configs, the defense and attacks of a batch, shards, executors, the
runner and its record store, results and statistics (reports: ``advpure.reports``)."""
from .config import AttackConfig, DefenseConfig, EvalConfig
from .results import EvalResult
from .runner import run_evaluation

__all__ = ["AttackConfig", "DefenseConfig", "EvalConfig", "EvalResult", "run_evaluation"]
