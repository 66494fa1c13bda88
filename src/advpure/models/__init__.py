"""Network definitions and checkpoint loaders, one file per family."""
from .checkpoint import load_checkpoint, save_checkpoint
from .registry import BUILTINS, load_classifier, load_diffusion
from .small_cnn import SmallCNN
from .small_unet import SmallUNet

__all__ = ["BUILTINS", "SmallCNN", "SmallUNet", "load_checkpoint", "load_classifier",
           "load_diffusion", "save_checkpoint"]
