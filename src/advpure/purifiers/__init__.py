"""Purifiers: nn.Modules mapping [0, 1] images to purified [0, 1] images, each with its typed
settings, registered in ``PURIFIERS`` (the ``defense`` of an evaluation config)."""
from ..settings import registry
from .agdm import AGDM, AGDMSettings
from .base import DefenseSettings, ModuleDefense, Models, NoDefense, PurifierSettings
from .coup import COUP, COUP_PRESETS, COUPSettings
from .diffpure import DiffPure, DiffPureSettings
from .gdmp import GDMP, GDMPSettings
from .hetero import HeteroPure, HeteroSettings
from .lm import LM, LMSettings
from .repeated import Repeated
from .resized import Resized

PURIFIERS: dict[str, type[DefenseSettings]] = registry(   # name -> settings; one line each
    NoDefense,
    DiffPureSettings,
    COUPSettings,
    AGDMSettings,
    HeteroSettings,
    GDMPSettings,
    LMSettings,
    ModuleDefense,
)

__all__ = ["AGDM", "AGDMSettings", "COUP", "COUPSettings", "COUP_PRESETS", "DefenseSettings",
           "DiffPure", "DiffPureSettings", "GDMP", "GDMPSettings", "HeteroPure", "HeteroSettings", "LM", "LMSettings", "Models",
           "ModuleDefense",
           "NoDefense", "PURIFIERS", "PurifierSettings", "Repeated", "Resized"]
