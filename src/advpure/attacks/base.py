"""What every attack shares: its settings' base (the registry entry: ``run``, ``key``, budgets),
the ε-ball threat model, and the validation preamble of the attack functions."""
from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

import torch
from pydantic import Field, PositiveFloat, model_validator
from torch import nn
from tqdm.auto import tqdm

from .._checks import check_choice, check_images, check_labels, check_positive
from ..models.contract import contract_of
from ..settings import Named

NORMS = ("linf", "l2")
VARIANTS = ("advpure", "authors-code")    # a breaker as advpure reads it | as its authors run it
BUDGETS = {"steps": "{used} of {full} steps", "eot": "EOT {used} of {full}",
           "queries": "{used} of {full} Square queries"}     # what a protocol's caps cut


def check_attack_inputs(x: torch.Tensor, y: torch.Tensor, *, norm: str | None = None,
                        eps: float | None = None, labels: bool = True,
                        model: nn.Module | None = None) -> tuple[torch.Tensor, float | None]:
    """The attacks' validation preamble: [0, 1] images of the attacked ``model``'s dtype (and,
    for a loaded model, its shape), one int64 label per image below its number of classes
    (unless ``labels`` is False: ``y`` holds other targets), a known norm and a positive ε;
    returns (y, ε as float)."""
    check_images(x)
    if isinstance(model, nn.Module):
        check_model_input(model, x)
    if labels:
        y = check_labels(y, x.shape[0])
        check_classes(model, y)
    if norm is not None:
        check_choice(norm, NORMS, "norm")
    return y, None if eps is None else check_positive(eps, "eps")


def check_model_input(model: nn.Module, x: torch.Tensor) -> None:
    """``x`` has the dtype of ``model``'s weights, and the shape its contract declares."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype in (torch.float32, torch.float64) and x.dtype != dtype:
        raise ValueError(f"x: expected {str(dtype).removeprefix('torch.')} images (the model's "
                         f"dtype), found {str(x.dtype).removeprefix('torch.')}: convert them "
                         f"with x.to({dtype})")
    contract = contract_of(model)
    if contract is not None:
        contract.check(x, None)


def check_classes(model: nn.Module | None, y: torch.Tensor) -> None:
    """Labels below the number of classes the (loaded) model declares."""
    contract = contract_of(model) if isinstance(model, nn.Module) else None
    if contract is not None and contract.classes is not None and len(y) and \
            (int(y.min()) < 0 or int(y.max()) >= contract.classes):
        bad = int(y.max()) if int(y.max()) >= contract.classes else int(y.min())
        raise ValueError(f"y: expected labels 0 … {contract.classes - 1} ({contract.spec} has "
                         f"{contract.classes} classes), found {bad}: labels of another dataset?")


def steps_bar(steps: Iterable[int], progress: bool, name: str):
    """The attack's iterations, with a progress bar when ``progress`` (the Python functions'
    optional bar; the evaluation shows its own per batch)."""
    return tqdm(steps, desc=name, disable=not progress, leave=False)


def seed_from(generator: torch.Generator) -> int:
    """A seed for code that takes an integer (pyautoattack), drawn from ``generator``."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


class AttackSettings(Named):
    """Settings of one registered attack. ``run`` makes adversarial examples against the model
    that ``target`` gives it; ``key`` labels its records (unique per setting)."""

    kind: ClassVar[str] = "attack"
    auditable: ClassVar[bool] = False    # a white-box gradient attack whose ε, steps and EOT
                                         # the gradient-masking audit may scale

    def target(self, defense, classifier: nn.Module, generator: torch.Generator) -> nn.Module:
        """What the attack queries and differentiates: the defense under its gradient mode."""
        return defense.model(classifier, generator)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            generator: torch.Generator):
        """Adversarial examples (a tensor), or an ``AttackOutput`` that also says which images
        some draw of some iterate misclassified (``drawlog.py``); ``generator`` drives the
        attack's own randomness."""
        raise NotImplementedError

    def label_parts(self) -> list[str]:
        raise NotImplementedError

    def key(self) -> str:
        """A short label, unique per setting: 'pgd-linf(eps=0.2, 20 steps, EOT 4)'."""
        norm = f"-{self.norm}" if "norm" in type(self).model_fields else ""
        return f"{self.name}{norm}({', '.join(self.label_parts())})"

    def eot_copies(self) -> int:
        """The EOT count in effect (1 for attacks without EOT)."""
        return self.budgets().get("eot", 1)

    def budgets(self) -> dict[str, int]:
        """The budgets a protocol's caps may cut (``BUDGETS``) that this attack uses."""
        return {f: getattr(self, f) for f in BUDGETS if f in type(self).model_fields}

    def capped(self, caps: dict[str, int | None]) -> AttackSettings:
        """This attack with its budgets cut to ``caps`` (budget name -> cap; step sizes kept)."""
        cut = {f: caps[f] for f, used in self.budgets().items()
               if caps.get(f) is not None and used > caps[f]}
        return self.replace(**cut) if cut else self


class NormBallAttack(AttackSettings):
    """An attack in the ℓp ball of radius ε around the input, intersected with [0, 1]."""

    eps: PositiveFloat | None = Field(None, description="perturbation budget ε (default: the "
                                      "dataset's: digits 0.2 ℓ∞ / 1.0 ℓ2, CIFAR-10 8/255 / 0.5, "
                                      "ImageNet 4/255 / 3.0)")
    norm: Literal[NORMS] = Field("linf", description="threat model: linf | l2")

    def eps_label(self) -> str:
        """'eps=0.2' ('eps=dataset' while unset: an evaluation config sets the dataset's)."""
        return "eps=dataset" if self.eps is None else f"eps={self.eps:.3g}"

    @model_validator(mode="after")
    def _eps_below_one(self):
        if self.norm == "linf" and self.eps is not None and self.eps >= 1:
            raise ValueError(f"eps: expected an ℓ∞ budget below 1 (images are in [0, 1]; ε = 1 "
                             f"allows any image), found {self.eps:g}; on the 0–255 scale "
                             f"write {self.eps:g}/255 = {self.eps / 255:.6g}")
        return self


def reductions(full: list[AttackSettings], used: list[AttackSettings]) -> list[str]:
    """'autoattack-linf(rand, …): 20 of 100 steps, EOT 4 of 20' for every reduced attack."""
    lines = []
    for a, b in zip(full, used):
        cuts = [BUDGETS[f].format(used=b.budgets()[f], full=n) for f, n in a.budgets().items()
                if b.budgets()[f] < n]
        if cuts:
            lines.append(f"{a.key()}: {', '.join(cuts)}")
    return lines
