"""Attacks on the whole defended pipeline, with exact gradients; each with its typed settings,
registered in ``ATTACKS`` (the ``attacks`` of an evaluation config)."""
from ..settings import registry
from .apgd import APGDSettings, apgd_eot
from .autoattack import AutoAttackSettings, apgd_official, autoattack
from .base import AttackSettings, NormBallAttack, check_attack_inputs
from .bpda import BPDASettings
from .diffattack import DiffAttackSettings, diffattack
from .diffhammer import DiffHammerSettings, diffhammer, selective_weights
from .diffusion_only import DiffusionOnlySettings, diffusion_only
from .eot import eot_loss_and_grad
from .losses import LOSS_NAMES, cw_margin, dlr_loss, objective, runner_up
from .hammer_authors import AuthorsHistory, diffhammer_authors
from .lowfreq import LowFrequencySettings, low_frequency
from .pgd import PGDSettings, pgd, project
from .square import SquareSettings, square
from .stadv import StAdvSettings, stadv
from .transfer import TransferSettings

ATTACKS: dict[str, type[AttackSettings]] = registry(     # name -> settings; one line each
    PGDSettings,
    BPDASettings,
    TransferSettings,
    DiffusionOnlySettings,
    APGDSettings,
    AutoAttackSettings,
    SquareSettings,
    StAdvSettings,
    DiffAttackSettings,
    DiffHammerSettings,
    LowFrequencySettings,
)

__all__ = ["ATTACKS", "APGDSettings", "AttackSettings", "AutoAttackSettings", "BPDASettings",
           "DiffAttackSettings", "DiffHammerSettings", "DiffusionOnlySettings",
           "LowFrequencySettings", "NormBallAttack", "PGDSettings", "SquareSettings",
           "StAdvSettings", "TransferSettings", "apgd_eot", "apgd_official", "autoattack",
           "AuthorsHistory", "LOSS_NAMES", "check_attack_inputs", "cw_margin", "diffattack", "diffhammer", "diffhammer_authors", "diffusion_only", "dlr_loss", "eot_loss_and_grad", "low_frequency", "objective", "pgd",
           "project", "runner_up", "selective_weights", "square", "stadv"]
