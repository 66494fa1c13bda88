"""Selective recomputation inside one solver step: the step's own autograd graph, with the
saved tensors its backward pass never reads, or can recompute in one elementwise pass, stored
as stand-ins — the middle policy of a memory budget (``budget.py``).

Autograd keeps, for every operation, the inputs its derivative formula may read. In a UNet
step most of those bytes are of two kinds, and neither needs storing:

- **the input of every convolution.** With frozen weights (an attack never differentiates
  them) the input gradient of y = W ⋆ x is the transposed convolution Wᵀ ⋆ ∂y, which reads
  x's layout only: the saved input is stored as its shape and strides and handed back
  unfilled (``Unread``);
- **the input of the SiLU that follows a GroupNorm** (the normalised activations): stored as
  the GroupNorm call (``Renormalise``: its input, which GroupNorm saves anyway, groups, affine
  weights, eps) and recomputed when backward reads it — one elementwise pass, the only
  recomputation here.

What stays is what is expensive to recompute: every convolution's and matrix product's
output that a nonlinearity reads. The graph is autograd's own (the same nodes, kernels and
values; only where two saved tensors live changes), so the gradient is the whole graph's bit
for bit, and so are second-order gradients (GDMP's guidance inside a step): autograd gives an
unpacked tensor its history back. On the small CIFAR-10 UNet and the digits UNet a step keeps
37 % of its graph (docs/results/cpu-gradients.md).

``saved_tensors(selective)`` wraps a step: ``saved_tensors_hooks`` that count the bytes autograd
stores (each storage once, parameters left out) and, when ``selective``, a ``TorchFunctionMode``
that sees the network's calls and marks the tensor that the convolution (weights frozen) or
the SiLU (of a GroupNorm output) under way will save. Everything else is stored as usual, and
so is all of it under autocast (whose casts sit between the operations).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

_CONVOLUTIONS = (torch.conv1d, torch.conv2d, torch.conv3d)
_HANDLED = {*_CONVOLUTIONS, F.group_norm, F.silu}
_NORM_CALL = "_advpure_group_norm_call"      # tensor attribute: the GroupNorm call behind it


class Unread:
    """A saved tensor whose values backward never reads: its layout, unfilled when unpacked."""

    __slots__ = ("shape", "stride", "dtype", "device")

    def __init__(self, t: torch.Tensor):
        self.shape, self.stride, self.dtype, self.device = t.shape, t.stride(), t.dtype, t.device

    def unpack(self) -> torch.Tensor:
        return torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=self.device)


class Renormalise:
    """A saved GroupNorm output: the call that made it, run again when unpacked."""

    __slots__ = ("call",)

    def __init__(self, call: tuple):
        self.call = call                    # (input, num_groups, weight, bias, eps)

    def unpack(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.group_norm(*self.call)


class SavedTensors:
    """Pack and unpack hooks: count the bytes stored (``nbytes``) and store the marked tensor
    (``mark``: the tensor the call under way will save, and its stand-in) as its stand-in."""

    def __init__(self):
        self.nbytes, self._seen = 0, set()
        self.mark: tuple[torch.Tensor, Unread | Renormalise] | None = None

    def pack(self, t: torch.Tensor):
        if self.mark is not None and t is self.mark[0]:
            return self.mark[1]
        storage = t.untyped_storage()
        if not isinstance(t, nn.Parameter) and storage.data_ptr() not in self._seen:
            self._seen.add(storage.data_ptr())
            self.nbytes += storage.nbytes()
        return t

    @staticmethod
    def unpack(packed):
        return packed.unpack() if isinstance(packed, (Unread, Renormalise)) else packed

    def saving(self, t: torch.Tensor, stand_in: Unread | Renormalise, func, args, kwargs):
        """``func(*args, **kwargs)``, storing ``t`` as ``stand_in`` where it saves ``t``."""
        self.mark = (t, stand_in)
        try:
            return func(*args, **kwargs)
        finally:
            self.mark = None


class SelectiveGraph(TorchFunctionMode):
    """Marks what frozen convolutions and SiLUs of GroupNorm outputs save (module docstring)."""

    def __init__(self, saved: SavedTensors):
        super().__init__()
        self.saved = saved

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _HANDLED:
            return func(*args, **kwargs)
        first = args[0] if args else kwargs.get("input")
        if not (torch.is_grad_enabled() and isinstance(first, torch.Tensor)
                and not torch.is_autocast_enabled(first.device.type)):
            return func(*args, **kwargs)
        if func is F.group_norm:
            out = func(*args, **kwargs)
            setattr(out, _NORM_CALL, _group_norm_call(*args, **kwargs))
            return out
        if func is F.silu:
            call = getattr(first, _NORM_CALL, None)
            if call is not None:
                return self.saved.saving(first, Renormalise(call), func, args, kwargs)
        elif _frozen(*_conv_weights(*args, **kwargs)):
            return self.saved.saving(first, Unread(first), func, args, kwargs)
        return func(*args, **kwargs)


def _group_norm_call(input, num_groups, weight=None, bias=None, eps=1e-5) -> tuple:
    return input, num_groups, weight, bias, eps


def _conv_weights(input, weight, bias=None, *args, **kwargs) -> tuple:
    return weight, bias


def _frozen(*tensors) -> bool:
    return all(t is None or not t.requires_grad for t in tensors)


@contextmanager
def saved_tensors(selective: bool = False) -> Iterator[SavedTensors]:
    """Within the block, count the bytes autograd saves (``.nbytes`` of the yielded object) and,
    when ``selective``, store less of them for the same backward pass (module docstring)."""
    saved = SavedTensors()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack), \
            SelectiveGraph(saved) if selective else nullcontext():
        yield saved

