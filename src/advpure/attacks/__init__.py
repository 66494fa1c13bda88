"""Attacks on the whole defended pipeline, with exact gradients."""
from .autoattack import apgd
from .eot import eot_loss_and_grad
from .pgd import pgd, project

__all__ = ["apgd", "eot_loss_and_grad", "pgd", "project"]
