"""advpure: diffusion-based adversarial purification and its honest, adaptive evaluation."""
from . import attacks, data, diffusion, purifiers
from .defense import PurifiedClassifier
from .evaluation.api import evaluate
from .models import load_classifier, load_diffusion

__version__ = "0.1.0"
__all__ = ["PurifiedClassifier", "attacks", "data", "diffusion", "evaluate", "load_classifier",
           "load_diffusion", "purifiers"]
