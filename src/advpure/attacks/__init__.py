"""Attacks on the whole defended pipeline, with exact gradients."""
from .apgd import apgd_eot, dlr_loss
from .autoattack import apgd, autoattack
from .eot import eot_loss_and_grad
from .pgd import pgd, project

__all__ = ["apgd", "apgd_eot", "autoattack", "dlr_loss", "eot_loss_and_grad", "pgd", "project"]
