"""Selective recomputation inside one solver step: the step's autograd graph without the
tensors its backward pass never reads or can recompute for a few per cent of the step — the
middle policy of a memory budget (``budget.py``).

Autograd keeps, for every operation, the inputs its derivative formula may read. In a UNet step
most of those bytes are of two kinds, and neither is needed:

- **the input of every convolution.** With frozen weights (an attack never differentiates
  them) the input gradient of y = W ⋆ x is the transposed convolution Wᵀ ⋆ ∂y, which reads
  the input's shape only. ``FrozenConvolution`` keeps that shape and calls the kernel autograd
  calls (``aten.convolution_backward``, input gradient only) on an unfilled tensor of it;
- **the input of the SiLU that follows a GroupNorm** (the normalised activations).
  GroupNorm keeps its own input anyway; ``SiLUOfGroupNorm`` keeps that instead and recomputes
  the normalisation in backward — one elementwise pass, the only recomputation here.

What stays is what is expensive to recompute: every convolution's and matrix product's
output that a nonlinearity reads. The backward pass runs the same kernels on the same values
as autograd's, so the gradient is the whole graph's bit for bit; on the small CIFAR-10 UNet a
step keeps 37 % of its graph at the whole graph's time (docs/results/cpu-gradients.md).
Second-order gradients (GDMP's guidance inside a step) stay exact: under ``create_graph`` the
recomputed normalisation is part of the graph.

``selective_graph()`` is a ``TorchFunctionMode`` (it sees the calls the network makes):
inside it ``conv1d/2d/3d`` with weights that need no gradient, and ``silu`` of a
``group_norm`` output, take these forms; everything else runs as usual, and so does all of it
under autocast (whose casts sit between the operations) or without a graph being built.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

_CONVOLUTIONS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_NORM_INPUTS = "_advpure_group_norm_of"      # tensor attribute: the GroupNorm call behind it


def _per_dim(value, dims: int) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [value] * dims


class FrozenConvolution(torch.autograd.Function):
    """y = conv(x, W, b) with W, b frozen; saves x's layout, not x (∂x = Wᵀ ⋆ ∂y)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        dims = weight.dim() - 2
        ctx.layout = (x.shape, x.stride(), x.dtype, x.device)
        ctx.conv = ([bias.shape[0]] if bias is not None else None, _per_dim(stride, dims),
                    _per_dim(padding, dims), _per_dim(dilation, dims), groups)
        ctx.save_for_backward(weight)
        conv = {1: torch.conv1d, 2: torch.conv2d, 3: torch.conv3d}[dims]
        return conv(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        shape, strides, dtype, device = ctx.layout
        bias_sizes, stride, padding, dilation, groups = ctx.conv
        unread = torch.empty_strided(shape, strides, dtype=dtype, device=device)
        grad_x, _, _ = torch.ops.aten.convolution_backward(
            grad, unread, weight, bias_sizes, stride, padding, dilation, False,
            [0] * len(stride), groups, [True, False, False])
        return grad_x, None, None, None, None, None, None


class SiLUOfGroupNorm(torch.autograd.Function):
    """silu(y) for y = group_norm(x, ...); saves x (which GroupNorm keeps too), not y, and
    recomputes y in backward."""

    @staticmethod
    def forward(ctx, y, x, groups, weight, bias, eps):
        ctx.groups, ctx.eps = groups, eps
        ctx.save_for_backward(x, weight, bias)
        return F.silu(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, bias = ctx.saved_tensors
        y = torch.group_norm(x, ctx.groups, weight, bias, ctx.eps)  # a graph under create_graph
        return silu_backward(grad, y), None, None, None, None, None


def silu_backward(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂silu(y) · grad as autograd computes it: its kernel, or under ``create_graph`` its
    differentiable form g·σ(y)·(1 + y(1 − σ(y)))."""
    if not torch.is_grad_enabled():
        return torch.ops.aten.silu_backward(grad, y)
    sigmoid = y.sigmoid()
    return grad * sigmoid * (1.0 + y * (1.0 - sigmoid))


def _conv_call(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return input, weight, bias, stride, padding, dilation, groups


def _group_norm_call(input, num_groups, weight=None, bias=None, eps=1e-5):
    return input, num_groups, weight, bias, eps


_HANDLED = {*_CONVOLUTIONS, F.group_norm, F.silu}


def _frozen(*tensors) -> bool:
    return all(t is None or not t.requires_grad for t in tensors)


class SelectiveGraph(TorchFunctionMode):
    """Convolutions and GroupNorm–SiLU pairs in the forms that keep less (module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _HANDLED:
            return func(*args, **kwargs)
        first = args[0] if args else kwargs.get("input")
        if not (torch.is_grad_enabled() and isinstance(first, torch.Tensor)
                and not torch.is_autocast_enabled(first.device.type)):
            return func(*args, **kwargs)
        if func in _CONVOLUTIONS:
            call = _conv_call(*args, **kwargs)
            if _frozen(call[1], call[2]) and not isinstance(call[4], str):
                return FrozenConvolution.apply(*call)
        elif func is F.group_norm:
            out = func(*args, **kwargs)
            setattr(out, _NORM_INPUTS, _group_norm_call(*args, **kwargs))
            return out
        elif func is F.silu and not (kwargs.get("inplace") or args[1:2] == (True,)):
            norm = getattr(first, _NORM_INPUTS, None)
            if norm is not None:
                x, groups, weight, bias, eps = norm
                return SiLUOfGroupNorm.apply(first, x, groups, weight, bias, eps)
        return func(*args, **kwargs)


@contextmanager
def selective_graph(enabled: bool = True) -> Iterator[None]:
    """Within the block, the graph a step builds keeps only what its backward pass needs and
    cannot recompute cheaply (module docstring); ``enabled=False``: the whole graph."""
    with SelectiveGraph() if enabled else nullcontext():
        yield
