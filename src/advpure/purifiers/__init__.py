"""Purifiers: nn.Modules mapping [0, 1] images to purified [0, 1] images."""
from .diffpure import DiffPure

__all__ = ["DiffPure"]
