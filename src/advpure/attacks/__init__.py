"""Attacks on the whole defended pipeline, with exact gradients."""
from .eot import eot_loss_and_grad
from .pgd import pgd, project

__all__ = ["eot_loss_and_grad", "pgd", "project"]
