"""Spec strings -> models (RobustBench style: the registry is data, the loader is short).

A spec is ``builtin:NAME`` for a checkpoint shipped with the package (or, for
``builtin:cifar10-resnet18``, with an installed package: pyautoattack's ResNet-18),
``FAMILY:PATH`` for a public checkpoint (``public.py``: ``wrn-28-10:/models/Standard.pt``), or
the path of a checkpoint (``<stem>.json``, ``<stem>.safetensors`` or the stem) written by
``advpure train``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from .checkpoint import load_checkpoint
from .public import is_public_spec, load_public, pyautoattack_resnet18_path

WEIGHTS_DIR = Path(__file__).parent / "weights"
# builtins whose weights ship with another installed package: builtin spec -> its public spec
INSTALLED = {"builtin:cifar10-resnet18": lambda: f"resnet18-cifar:{pyautoattack_resnet18_path()}"}

# name -> (kind, checkpoint stem inside the package, what it is)
BUILTINS: dict[str, tuple[str, str, str]] = {
    "cifar10-resnet18": ("classifier", "(pyautoattack)", "pyautoattack's standard CIFAR-10 "
                         "ResNet-18, read from the installed package (94.09 % on the shared "
                         "test subset)"),
    "cifar10-unet-small": ("diffusion", "cifar10-unet-small", "SmallUNet eps-model on the "
                           "4,660 CIFAR-10 training images, 32×32, VP, trained for t ≤ 0.3"),
    "cifar10-guidance": ("classifier", "cifar10-guidance", "SmallCNN (width 16) on the 4,660 "
                         "CIFAR-10 training images by TRADES (λ = 6, ε = 8/255): AGDM's φ"),
    "digits-cnn": ("classifier", "digits-cnn", "SmallCNN on scikit-learn digits, 8×8"),
    "digits-unet": ("diffusion", "digits-unet", "SmallUNet eps-model on digits, 8×8, VP"),
    "digits-guidance": ("classifier", "digits-guidance",
                        "SmallCNN on digits trained by TRADES (λ = 6, ε = 0.2): AGDM's φ"),
}


def resolve_spec(spec: str, kind: str) -> Path:
    """The checkpoint path a spec names; raise for unknown builtins or a kind mismatch."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model spec: expected 'builtin:NAME' or a checkpoint path, found {spec!r}")
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        names = [n for n, entry in BUILTINS.items() if entry[0] == kind]
        if name in BUILTINS and name not in names:
            other = BUILTINS[name][0]
            raise ValueError(f"model spec {spec!r}: expected a {kind} model, found a {other} "
                             f"({BUILTINS[name][2]}): give it as "
                             f"{'--classifier' if other == 'classifier' else '--diffusion'}, and "
                             f"one of {', '.join('builtin:' + n for n in names)} as the {kind} "
                             "model")
        if name not in names:
            raise ValueError(f"model spec {spec!r}: expected a builtin {kind} among "
                             f"{', '.join('builtin:' + n for n in names)}, found {name!r}")
        return WEIGHTS_DIR / BUILTINS[name][1]
    return Path(spec)


def load_classifier(spec: str) -> nn.Module:
    """A classifier module: [0, 1] images in, logits out."""
    return _load(spec, "classifier")


def load_diffusion(spec: str) -> nn.Module:
    """An eps-model following the protocol ``model(x_t, t)`` (x_t in [−1, 1], t ∈ [0, 1])."""
    return _load(spec, "diffusion")


def _load(spec: str, kind: str) -> nn.Module:
    """The model a spec names, held to its contract under the spec's own name."""
    if spec in INSTALLED:
        model = _load(INSTALLED[spec](), kind)
        model.contract = dataclasses.replace(model.contract, spec=spec)
        return model
    if is_public_spec(spec):
        return load_public(spec, kind)
    return load_checkpoint(resolve_spec(spec, kind), kind, spec)


def spec_kind(spec: str) -> str:
    """'classifier' or 'diffusion': what a spec names, read from its family, builtin entry or
    checkpoint config."""
    from .checkpoint import read_checkpoint_config
    from .public import FAMILIES

    if is_public_spec(spec):
        return FAMILIES[spec.split(":", 1)[0]].kind
    if spec.startswith("builtin:") and spec.removeprefix("builtin:") in BUILTINS:
        return BUILTINS[spec.removeprefix("builtin:")][0]
    return read_checkpoint_config(resolve_spec(spec, "classifier"))["kind"]


def check_spec(spec: str) -> str:
    """Load a spec with every check and say what it is: 'OK spec: kind, N parameters, Module'."""
    kind = spec_kind(spec)
    model = load_classifier(spec) if kind == "classifier" else load_diffusion(spec)
    count = sum(p.numel() for p in model.parameters())
    return f"OK {spec}: {kind}, {count:,} parameters, {type(model).__name__}"


def catalog() -> str:
    """The spec forms advpure understands, one line each."""
    from .public import FAMILIES

    lines = [f"builtin:{name:<22} {kind:<10} {what}" for name, (kind, _, what) in BUILTINS.items()]
    lines += [f"{name + ':PATH':<30} {f.kind:<10} {f.what}" for name, f in FAMILIES.items()]
    return "\n".join(lines + [f"{'PATH':<30} {'either':<10} a checkpoint written by advpure train"])
