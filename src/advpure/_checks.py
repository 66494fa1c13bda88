"""Input validation at the public boundary (DESIGN.md §2: validate at the boundary).

Every check raises an exception whose message says what was expected and what was found.
Internal calls on noisy intermediate states (x_t, guidance inputs) are never range-checked.
"""
from __future__ import annotations

import torch


class InputTypeError(TypeError):
    """An argument of the wrong type at the public boundary (a user's error, not a bug)."""


def check_images(x: object, name: str = "x", channels: int | None = None) -> torch.Tensor:
    """Return ``x`` if it is a float N×C×H×W tensor in [0, 1] without NaNs; raise otherwise."""
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{name}: expected a torch.Tensor of images N×C×H×W in [0, 1], "
                        f"found {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a 4-d tensor N×C×H×W, found shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputTypeError(f"{name}: expected a floating-point tensor, found dtype {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channel(s), found shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name}: expected at least one image, found shape {tuple(x.shape)}")
    x_values = x.detach()
    if torch.isnan(x_values).any():
        raise ValueError(f"{name}: expected finite values in [0, 1], found NaN")
    lo, hi = float(x_values.min()), float(x_values.max())
    if lo < 0.0 or hi > 1.0:
        outside = int(((x_values < 0) | (x_values > 1)).sum())
        hint = " (rounding? clamp them with x.clamp(0, 1))" if lo > -1e-3 and hi < 1 + 1e-3 else \
            " (images in [0, 255] or [−1, 1]? scale them to [0, 1])"
        raise ValueError(f"{name}: expected values in [0, 1], found {outside} outside, min "
                         f"{lo:.9g} and max {hi:.9g}{hint}")
    return x


def check_labels(y: object, n: int, name: str = "y") -> torch.Tensor:
    """Return ``y`` if it is an int64 vector of ``n`` class labels; raise otherwise."""
    if not isinstance(y, torch.Tensor):
        raise InputTypeError(f"{name}: expected a torch.Tensor of int64 labels, found {type(y).__name__}")
    if y.dtype != torch.long or y.dim() != 1:
        raise InputTypeError(f"{name}: expected a 1-d int64 tensor, found dtype {y.dtype} "
                        f"and shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels (one per image), found {y.shape[0]}")
    return y


def check_positive(value: float, name: str) -> float:
    """Return ``value`` if it is a finite number > 0; raise otherwise."""
    if not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ValueError(f"{name}: expected a positive number, found {value!r}")
    return float(value)


def check_choice(value: str, choices: tuple[str, ...], name: str) -> str:
    """Return ``value`` if it is one of ``choices``; raise naming the valid ones otherwise."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}, found {value!r}")
    return value
