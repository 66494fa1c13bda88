"""Training loops for the embedded default's classifier and eps-model."""
from .classifier import ClassifierTraining, train_classifier
from .diffusion import DiffusionTraining, eps_loss, train_diffusion

__all__ = ["ClassifierTraining", "DiffusionTraining", "eps_loss", "train_classifier",
           "train_diffusion"]
