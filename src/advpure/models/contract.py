"""What a loaded model declares about its input, and the check that holds it to that.

Every model advpure loads (``load_classifier``, ``load_diffusion``) carries a ``Contract``: its
spec, its kind, the images it takes (channels, and the size where the architecture or its
training data fixes one) and, for classifiers, its number of classes. A forward pre-hook refuses
any other input with a message naming the model — a 32×32 image into the 8×8 digits CNN would
otherwise return logits (adaptive pooling), a silent wrong result. The hook checks shape and
dtype only, never the value range: the models are also called on noisy states x_t.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Contract:
    spec: str                        # what it was loaded from
    kind: str                        # "classifier" | "diffusion"
    channels: int | None = None
    size: tuple[int, int] | None = None
    classes: int | None = None       # classifiers: the number of outputs

    def shape_text(self) -> str:
        size = "×".join(map(str, self.size)) if self.size else "H×W"
        return f"{self.channels if self.channels is not None else 'C'}×{size}"

    def check(self, x: torch.Tensor, dtype: torch.dtype | None) -> None:
        """Raise unless ``x`` is N×C×H×W of this contract's shape and of the model's dtype."""
        what = f"{self.spec} ({self.kind})"
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{what}: expected images N×{self.shape_text()}, found {shape}")
        found = tuple(x.shape[1:])
        if (self.channels is not None and found[0] != self.channels) or \
                (self.size is not None and found[1:] != self.size):
            raise ValueError(f"{what}: expected images N×{self.shape_text()}, found "
                             f"N×{'×'.join(map(str, found))}: use a model made for these images "
                             "(--classifier / --diffusion), or resize the data")
        if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"{what}: expected {_name(dtype)} images (the model's dtype), found "
                             f"{_name(x.dtype)}: convert them with x.to({_name(dtype, True)}) "
                             f"or the model with model.to({_name(x.dtype, True)})")


def _name(dtype: torch.dtype, qualified: bool = False) -> str:
    name = str(dtype).removeprefix("torch.")
    return f"torch.{name}" if qualified else name


def _first_dtype(model: nn.Module) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _check_input(model: nn.Module, args: tuple) -> None:
    if args:
        dtype = _first_dtype(model)
        model.contract.check(args[0], dtype if dtype in (torch.float32, torch.float64) else None)


def declare(model: nn.Module, contract: Contract) -> nn.Module:
    """Attach ``contract`` to ``model`` and hold every call of it to the contract."""
    model.contract = contract
    model.register_forward_pre_hook(_check_input)
    return model


def contract_of(model: object, via: tuple[str, ...] = ("classifier", "model")
                ) -> Contract | None:
    """The contract of a loaded model, seen through the wrappers (autocast, compile: ``model``)
    and, for a defended model (``PurifiedClassifier``), its classifier's; None for a user's own
    module."""
    for _ in range(8):
        contract = getattr(model, "contract", None)
        if isinstance(contract, Contract):
            return contract
        inner = next((getattr(model, a) for a in via if isinstance(getattr(model, a, None),
                                                                    nn.Module)), None)
        if not isinstance(inner, nn.Module):
            return None
        model = inner
    return None


def conv_channels(model: nn.Module) -> int | None:
    """The input channels of the first convolution: what a network takes."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


def output_classes(model: nn.Module) -> int | None:
    """The outputs of the last linear layer: a classifier's number of classes."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module.out_features
    return last


def require_kind(model: nn.Module, kind: str, role: str) -> None:
    """Raise if ``model`` is a loaded model of the other kind (a classifier as the eps-model)."""
    contract = contract_of(model, ("classifier", "model") if kind == "classifier" else ("model",))
    if contract is not None and contract.kind != kind:
        article = "an eps-model (diffusion)" if kind == "diffusion" else "a classifier"
        raise ValueError(f"{role}: expected {article}, found the {contract.kind} "
                         f"{contract.spec}: pass it as the "
                         f"{'classifier' if contract.kind == 'classifier' else 'eps-model'}")
