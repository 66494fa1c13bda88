"""Guidance for the reverse process: classifier confidence (COUP), robust guidance (AGDM)."""
from .confidence import GUIDANCE_GRADS, ConfidenceGuidance, FromCentered, confidence_gradient
from .guided import GuidedEps

__all__ = ["GUIDANCE_GRADS", "ConfidenceGuidance", "FromCentered", "GuidedEps",
           "confidence_gradient"]
