"""Guidance for the reverse process: classifier confidence (COUP)."""
from .confidence import GUIDANCE_GRADS, ConfidenceGuidedEps, FromCentered, confidence_gradient

__all__ = ["GUIDANCE_GRADS", "ConfidenceGuidedEps", "FromCentered", "confidence_gradient"]
