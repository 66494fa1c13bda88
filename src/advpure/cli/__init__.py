"""The ``advpure`` command: a package of small files, one per group of commands (engine,
training, benchmarks, studies); the evaluation flags are generated from the settings."""
from . import bench, evaluate, studies, train  # noqa: F401  (each registers its commands)
from .app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
