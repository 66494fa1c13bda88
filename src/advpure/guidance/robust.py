"""AGDM's robust guidance (Lin et al., Eqs. 2–5 and 18): ∇x [log p_φ(ŷ|x) − D(f_φ(x'), f_φ(x))].

φ is a separately trained robust classifier (``advpure train guidance``); x' is the input being
purified, reduced to its softmax prediction p' = softmax f_φ(x') (the context of every step, so
the attack gradient flows into x' through it); ŷ is φ's prediction on x' by default (the label
is unknown at test time), or φ's prediction at the state x_t itself (``label_from="state"``,
which makes the first term COUP's log max_y p̂(y|x)). D compares softmax outputs:

- ``kl``: KL(p' ‖ p_φ(x)) — the KL of the training loss (TRADES direction), the default;
- ``reverse_kl``: KL(p_φ(x) ‖ p');
- ``l2``: ‖p' − p_φ(x)‖².
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .guided import differentiable_copy

DISTANCES = ("kl", "reverse_kl", "l2")
LABEL_SOURCES = ("input", "state")


def distance(kind: str, probs_ref: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """D(p', p) per sample, p = exp(log_probs)."""
    if kind == "kl":
        return (probs_ref * (torch.log(probs_ref.clamp_min(1e-30)) - log_probs)).sum(dim=1)
    if kind == "reverse_kl":
        return (log_probs.exp() * (log_probs - torch.log(probs_ref.clamp_min(1e-30)))).sum(dim=1)
    return ((probs_ref - log_probs.exp()) ** 2).sum(dim=1)


class RobustGuidance(nn.Module):
    """guidance(x, p', ŷ) = ∇x [log p_φ(ŷ|x) − D(p', p_φ(x))], φ taking the states as they are.

    ``second_order``: keep the graph of the gradient when x or p' is being differentiated (the
    attack's gradient through both guidance terms); otherwise the guidance is a constant.
    """

    def __init__(self, classifier: nn.Module, distance: str = "kl", label_from: str = "input",
                 second_order: bool = True):
        super().__init__()
        self.classifier = classifier    # φ on states (wrap in FromCentered)
        self.distance = distance        # D: kl | reverse_kl | l2
        self.label_from = label_from    # ŷ: φ's prediction on the input, or at the state
        self.second_order = second_order

    def forward(self, x: torch.Tensor, probs_ref: torch.Tensor,
                label: torch.Tensor) -> torch.Tensor:
        keep_graph = self.second_order and torch.is_grad_enabled() and (
            x.requires_grad or probs_ref.requires_grad)
        with torch.enable_grad():
            x_in = differentiable_copy(x, keep_graph)
            ref = probs_ref if keep_graph else probs_ref.detach()
            log_probs = F.log_softmax(self.classifier(x_in), dim=1)
            if self.label_from == "state":
                label = log_probs.argmax(dim=1)
            objective = log_probs.gather(1, label[:, None])[:, 0] - distance(
                self.distance, ref, log_probs)
            (grad,) = torch.autograd.grad(objective.sum(), x_in, create_graph=keep_graph)
        return grad

    def extra_repr(self) -> str:
        return f"distance={self.distance}, label_from={self.label_from}, " \
               f"second_order={self.second_order}"
