"""Purifiers: nn.Modules mapping [0, 1] images to purified [0, 1] images."""
from .agdm import AGDM
from .coup import COUP, COUP_PRESETS, coup_settings
from .diffpure import DiffPure
from .hetero import HeteroPure
from .resized import Resized

__all__ = ["AGDM", "COUP", "COUP_PRESETS", "DiffPure", "HeteroPure", "Resized", "coup_settings"]
