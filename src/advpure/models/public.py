"""Public pretrained checkpoints, loaded offline from local files and strictly checked.

A spec is ``FAMILY:PATH`` (``wrn-28-10:/models/Standard.pt``). Each family is data: the kind of
model, a factory of our own implementation with the upstream key names, the expected parameter
count. Loading reads the file with ``weights_only=True`` on the CPU, unwraps ``state_dict`` and
strips ``module.``/``model.`` prefixes (as RobustBench and DiffPure do), then requires the exact
key set and shapes — a wrong file is an error that says which family it looks like, never a
model silently left with random weights (DiffPure's own loader uses ``strict=False``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .resnet_cifar import ResNet18
from .wideresnet import WideResNet


@dataclass(frozen=True)
class Family:
    kind: str                          # "classifier" | "diffusion"
    build: Callable[[], nn.Module]     # our implementation, full size
    parameters: int                    # the published model's parameter count
    what: str


FAMILIES: dict[str, Family] = {
    "wrn-28-10": Family("classifier", lambda: WideResNet(28, 10), 36_479_194,
                        "RobustBench's CIFAR-10 WideResNet-28-10 ('Standard'), input [0, 1]"),
    "wrn-70-16-dropout": Family(
        "classifier", lambda: WideResNet(70, 16, drop_rate=0.3, normalize=True), 266_796_506,
        "DiffPure's CIFAR-10 WideResNet-70-16 with dropout, normalisation inside"),
    "resnet18-cifar": Family("classifier", ResNet18, 11_173_962,
                             "the CIFAR-10 ResNet-18 of the pyautoattack examples, input [0, 1]"),
}
PREFIXES = ("module.", "model.")


def pyautoattack_resnet18_path() -> Path:
    """The CIFAR-10 ResNet-18 checkpoint shipped inside pyautoattack (``examples/model_test.pt``)."""
    import pyautoattack

    return Path(pyautoattack.__file__).parent / "examples" / "model_test.pt"


def is_public_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.split(":", 1)[0] in FAMILIES and ":" in spec


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pt``/``.pth`` file: ``state_dict`` unwrapped, prefixes stripped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: expected a file, found none at {path}")
    try:
        content = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:     # truncated, not a torch file, or code that may not be run
        raise ValueError(f"checkpoint {path}: could not be read as a PyTorch checkpoint "
                         f"(truncated or another format?): {type(err).__name__}: "
                         f"{str(err)[:200]}") from None
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in content.values()):
        raise ValueError(f"checkpoint {path}: expected a state dict of tensors (or one under "
                         f"'state_dict'), found {type(content).__name__}")
    return {_strip(k): v for k, v in content.items()}


def _strip(key: str) -> str:
    for prefix in PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def expected_shapes(family: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the family's full-size model, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = FAMILIES[family].build()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_public(spec: str, kind: str) -> nn.Module:
    """The model of ``FAMILY:PATH``, weights checked key by key and shape by shape."""
    name, path = spec.split(":", 1)
    family = FAMILIES[name]
    if family.kind != kind:
        raise ValueError(f"model spec {spec!r}: expected a {kind}, found the {family.kind} "
                         f"family {name!r} ({family.what})")
    state = read_state_dict(path)
    problems = _mismatch(expected_shapes(name), state)
    if problems:
        raise ValueError(f"checkpoint {path}: expected a {name} checkpoint ({family.what}); "
                         f"{problems}{_resemblance(state, name)}")
    model = family.build()
    model.load_state_dict(state, strict=True)
    count = sum(p.numel() for p in model.parameters())
    if count != family.parameters:
        raise ValueError(f"checkpoint {path}: expected {family.parameters:,} parameters for "
                         f"{name}, found {count:,}")
    return model.eval().requires_grad_(False)


def _mismatch(expected: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor]) -> str:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} instead of {s}" for k, s in expected.items()
              if k in state and tuple(state[k].shape) != s]
    parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})" for keys, what in
             ((missing, "missing keys"), (unexpected, "unexpected keys"),
              (shapes, "shape mismatches")) if keys]
    return "; ".join(parts)


def _resemblance(state: dict[str, torch.Tensor], tried: str) -> str:
    """'; it looks like a wrn-70-16-dropout checkpoint' when another family fits exactly."""
    for name in FAMILIES:
        if name != tried and not _mismatch(expected_shapes(name), state):
            return f"; it looks like a {name} checkpoint ({FAMILIES[name].what})"
    return ""
