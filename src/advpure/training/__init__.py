"""Training loops for the embedded default's classifier and eps-model."""
from .classifier import ClassifierTraining, train_classifier
from .diffusion import DiffusionTraining, eps_loss, train_diffusion
from .guidance import GuidanceTraining, train_guidance

__all__ = ["ClassifierTraining", "DiffusionTraining", "GuidanceTraining", "eps_loss",
           "train_classifier", "train_diffusion", "train_guidance"]
