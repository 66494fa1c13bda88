"""The defended model that attacks see: [0, 1] images in, logits out, under a gradient mode."""
from __future__ import annotations

import torch
from torch import nn

from ._checks import check_choice, check_images
from .models.contract import require_kind
from .diffusion import SOLVER_GRADIENTS, PerSampleNoise, graph_budget, parse_budget

GRADIENTS = SOLVER_GRADIENTS + ("bpda", "surrogate", "blind")
ENSEMBLE_RULES = ("mean", "vote")
AUTO_PROBE_ROWS = 16          # rows_per_pass="auto": the first pass, which measures a row


def straight_through(value: torch.Tensor, gradient_path: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, the gradient of ``gradient_path`` in the backward pass."""
    return value.detach() + (gradient_path - gradient_path.detach())


class PurifiedClassifier(nn.Module):
    """classifier(purifier(x)) with fresh purification noise on every call.

    The noise comes from ``generator``: every call draws one seed per image from it, so a
    repeated call (an EOT loop, AutoAttack) sees new noise, the whole run is reproducible from
    the generator's seed, and each image's purification depends only on its own seed.

    ``gradient`` says what the attacker differentiates (DESIGN.md §4). The logits are always
    those of the real defense; only the backward pass changes:

    - ``exact``: autograd through every solver step; ``checkpoint``: the same gradient,
      recomputing each step in backward; ``adjoint``: torchsde's adjoint SDE (approximate);
    - ``bpda``: identity through the purifier (Athalye et al. 2018), i.e. the classifier's
      gradient at the purified image;
    - ``surrogate``: backward through ``surrogate`` (a cheaper purifier, e.g. fewer steps, as
      Lee & Kim 2023), forward through the real one;
    - ``blind``: attack the classifier alone, purify only at evaluation: with gradients
      enabled the model *is* the classifier (logits and gradient), under ``torch.no_grad``
      (evaluation) it is the defense.

    ``memory_budget`` (``checkpoint`` only; bytes, "6GB", "auto"): each solver step keeps its
    whole graph, a selective graph or its input only, as the budget holds, at the least
    recomputation (``diffusion/budget.py``); the gradient is the same at every budget, and
    ``last_budget.used`` counts the steps of each policy.

    ``rows_per_pass``: an EOT gradient (``attacks.eot``) sends its copies × images in chunks of
    at most this many rows (an accelerator's memory; the same gradient). ``"auto"``: on CUDA the
    first pass (``AUTO_PROBE_ROWS`` rows) measures one row's graph (the allocator's growth over
    the forward pass) and the next passes take as many rows as ``memory_budget`` (default
    ``auto``: 80 % of the free memory) holds; on a CPU, one pass. ``passes`` says how many the
    last EOT gradient took.

    ``ensemble`` = S > 1 purifies every image S times with independent noise and combines the S
    classifier outputs (Pei et al., Algorithm 3): ``"mean"`` returns the mean logits, whose
    argmax is the paper's prediction and whose gradient the attack follows; ``"vote"`` returns
    the vote counts plus the mean softmax probabilities (< 1, so they only break ties and carry
    the gradient).
    """

    def __init__(self, purifier: nn.Module, classifier: nn.Module,
                 generator: torch.Generator | None = None, gradient: str = "exact",
                 surrogate: nn.Module | None = None, ensemble: int = 1,
                 ensemble_rule: str = "mean", memory_budget: str | int | None = None,
                 rows_per_pass: int | str | None = None):
        super().__init__()
        check_choice(gradient, GRADIENTS, "gradient")
        if not (isinstance(ensemble, int) and ensemble >= 1):
            raise ValueError(f"PurifiedClassifier: expected ensemble (S) a whole number >= 1, "
                             f"found {ensemble!r}")
        if (gradient == "surrogate") != (surrogate is not None):
            raise ValueError("PurifiedClassifier: expected a surrogate purifier exactly when "
                             f"gradient='surrogate', found gradient={gradient!r} and "
                             f"surrogate={type(surrogate).__name__}")
        require_kind(classifier, "classifier", "PurifiedClassifier: the classifier")
        self.purifier = purifier        # x in [0, 1] -> purified x in [0, 1]
        self.classifier = classifier    # [0, 1] images -> logits
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.gradient = gradient        # what the backward pass differentiates
        self.surrogate = surrogate      # the cheaper purifier of gradient='surrogate'
        self.ensemble = ensemble        # S purifications per image
        self.ensemble_rule = check_choice(ensemble_rule, ENSEMBLE_RULES, "ensemble_rule")
        if memory_budget is not None and gradient != "checkpoint":
            raise ValueError(f"PurifiedClassifier: memory_budget applies to gradient "
                             f"'checkpoint' (the steps it cannot keep are recomputed), found "
                             f"gradient={gradient!r}")
        self.memory_budget = memory_budget  # graph bytes kept per purification (checkpoint)
        self.last_budget = None             # the policies the last purification's steps took
        if rows_per_pass not in (None, "auto") and not (isinstance(rows_per_pass, int)
                                                        and rows_per_pass > 0):
            raise ValueError(f"PurifiedClassifier: expected rows_per_pass a whole number >= 1 "
                             f"or 'auto', found {rows_per_pass!r}")
        self.rows_per_pass = rows_per_pass  # EOT rows per forward-backward (None: all at once)
        self.row_bytes: float | None = None  # "auto" on CUDA: one row's graph, measured
        self.passes = 1                      # the last EOT gradient's sequential passes

    def plan_pass(self, remaining: int) -> int:
        """How many of the ``remaining`` EOT rows the next forward–backward takes."""
        if self.rows_per_pass is None:
            return remaining
        if self.rows_per_pass != "auto":
            return min(remaining, self.rows_per_pass)
        if not torch.cuda.is_available() or self._device != "cuda":
            return remaining
        if self.row_bytes is None:
            return min(remaining, AUTO_PROBE_ROWS)
        budget = parse_budget(self.memory_budget or "auto", "cuda")
        return max(1, min(remaining, int(budget // max(self.row_bytes, 1.0))))

    _device = "cpu"                          # the device of the last input

    def _noise(self, x: torch.Tensor) -> PerSampleNoise:
        return PerSampleNoise.spawn(self.generator, x.shape[0], x.device)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """Purified images whose backward pass follows this defense's gradient mode."""
        check_images(x)
        if self.gradient in SOLVER_GRADIENTS:
            total = None if self.memory_budget is None else \
                parse_budget(self.memory_budget, str(x.device))
            with graph_budget(total) as self.last_budget:
                return self.purifier(x, self._noise(x), gradient=self.gradient)
        with torch.no_grad():                       # these modes never differentiate it
            purified = self.purifier(x, self._noise(x))
        if self.gradient == "bpda":
            return straight_through(purified, x)
        if self.gradient == "surrogate":
            return straight_through(purified, self.surrogate(x, self._noise(x)))
        return purified                             # blind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._device = check_images(x).device.type
        if self.rows_per_pass == "auto" and x.is_cuda and torch.is_grad_enabled():
            before = torch.cuda.memory_allocated(x.device)
            logits = self._forward(x)
            grown = torch.cuda.memory_allocated(x.device) - before
            self.row_bytes = max(self.row_bytes or 0.0, grown / x.shape[0])
            return logits
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gradient == "blind" and torch.is_grad_enabled():
            return self.classifier(check_images(x))
        if self.ensemble == 1:
            return self.classifier(self.purify(x))
        copies = x.repeat(self.ensemble, 1, 1, 1)                  # copy s of image i at s·N + i
        logits = self.classifier(self.purify(copies)).view(self.ensemble, x.shape[0], -1)
        return combine_ensemble(logits, self.ensemble_rule)


def combine_ensemble(logits: torch.Tensor, rule: str = "mean") -> torch.Tensor:
    """S × N × K classifier outputs -> N × K (Pei et al., Algorithm 3): the mean of the outputs
    (``"mean"``), or votes + mean probabilities (``"vote"``: majority vote, ties broken by the
    mean probability, differentiable through that term)."""
    check_choice(rule, ENSEMBLE_RULES, "ensemble_rule")
    if rule == "mean":
        return logits.mean(dim=0)
    votes = torch.nn.functional.one_hot(logits.argmax(dim=2), logits.shape[2]).sum(dim=0)
    return votes.to(logits.dtype) + torch.softmax(logits, dim=2).mean(dim=0)
