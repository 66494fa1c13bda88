"""Selective recomputation inside a step (diffusion/selective.py): the whole graph's gradient
bit for bit, first and second order, from fewer saved bytes; and what it leaves alone."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advpure.diffusion.budget import graph_bytes
from advpure.diffusion.selective import saved_tensors
from advpure.models import SmallUNet
from advpure.models.adm_unet import ADMUNet
from advpure.models.edm import SongUNet
from advpure.models.ncsnpp import NCSNpp
from advpure.training.common import init_weights


def input_gradient(fn, x: torch.Tensor, weights: torch.Tensor, selective: bool):
    """(∇_x ⟨weights, fn(x)⟩, the bytes fn's graph saved), with or without selective_graph."""
    x = x.detach().requires_grad_(True)
    out, nbytes = graph_bytes(lambda: fn(x), x.device, selective)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    return grad, nbytes


def frozen(module: nn.Module, seed: int = 0) -> nn.Module:
    return init_weights(module, torch.Generator().manual_seed(seed)).eval().requires_grad_(False)


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv1d(4, 6, 3, stride=2, padding=1), (2, 4, 9)),
    (nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), (2, 4, 7, 7)),
    (nn.Conv2d(4, 6, 1, bias=False), (2, 4, 5, 5)),
    (nn.Conv2d(4, 6, 4, stride=2, padding=(1, 2)), (2, 4, 8, 8)),
    (nn.Conv3d(2, 3, 3, padding=1), (1, 2, 4, 4, 4)),
], ids=["1d-strided", "2d-dilated-grouped", "2d-1x1-nobias", "2d-strided", "3d"])
def test_a_frozen_convolution_keeps_no_input_and_gives_autograds_gradient(conv, shape):
    conv = frozen(conv)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    weights = torch.randn(conv(x).shape, generator=g)
    whole, whole_bytes = input_gradient(lambda v: torch.tanh(conv(v)), x, weights, False)
    lean, lean_bytes = input_gradient(lambda v: torch.tanh(conv(v)), x, weights, True)
    assert torch.equal(lean, whole)
    assert lean_bytes == whole_bytes - x.nbytes           # tanh keeps its output; conv nothing


def test_silu_of_group_norm_keeps_the_norms_input_and_is_exact_to_second_order():
    norm = frozen(nn.GroupNorm(2, 4))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 5, 5, generator=g)
    weights = torch.randn(x.shape, generator=g)

    def block(v):
        return F.silu(norm(v)) * v
    whole, whole_bytes = input_gradient(block, x, weights, False)
    lean, lean_bytes = input_gradient(block, x, weights, True)
    assert torch.equal(lean, whole) and lean_bytes == whole_bytes - x.nbytes

    def second_order(selective: bool) -> torch.Tensor:      # ∇ of a function of the gradient
        v = x.clone().requires_grad_(True)
        with saved_tensors(selective):
            (grad,) = torch.autograd.grad((block(v) * weights).sum(), v, create_graph=True)
        return torch.autograd.grad((grad ** 2).sum(), v)[0]
    assert torch.equal(second_order(True), second_order(False))


def small_models():
    return {
        "small-unet": (frozen(SmallUNet(in_channels=3, base=16, mults=(1, 2))), (3, 16, 16),
                       lambda n: torch.full((n,), 0.3)),
        "ncsnpp": (frozen(NCSNpp(16, 16, (1, 2), 1, (8,))), (3, 16, 16),
                   lambda n: torch.full((n,), 300.0)),
        "adm": (frozen(ADMUNet(16, 32, (1, 2), 1, (8,), 16)), (3, 16, 16),
                lambda n: torch.full((n,), 300)),
        "edm-ddpmpp": (frozen(SongUNet(16, 3, 3, 16, (1, 2), 1, (8,), dropout=0.0)),
                       (3, 16, 16), lambda n: torch.full((n,), 0.5)),
    }


@pytest.mark.parametrize("name", list(small_models()))
def test_every_network_family_keeps_less_for_the_same_gradient(name):
    """One network call, as inside a solver step: bit-for-bit gradient, fewer bytes."""
    model, shape, labels = small_models()[name]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, *shape, generator=g)
    weights = torch.randn(model(x, labels(2)).shape, generator=g)
    whole, whole_bytes = input_gradient(lambda v: model(v, labels(2)), x, weights, False)
    lean, lean_bytes = input_gradient(lambda v: model(v, labels(2)), x, weights, True)
    assert torch.equal(lean, whole)
    assert lean_bytes < 0.75 * whole_bytes, (lean_bytes, whole_bytes)


def saved_bytes(fn, x: torch.Tensor, selective: bool) -> int:
    with saved_tensors(selective) as saved:
        fn(x)
    return saved.nbytes


def test_what_selective_graphs_leave_alone():
    """Trainable weights (their gradient reads the input), autocast, no graph, a SiLU not after
    a GroupNorm: stored as usual."""
    x = torch.randn(2, 2, 5, 5, requires_grad=True)
    trainable = init_weights(nn.Conv2d(2, 3, 3, padding=1), torch.Generator().manual_seed(0))
    conv, norm = frozen(nn.Conv2d(2, 3, 3, padding=1)), frozen(nn.GroupNorm(1, 2))

    def cast(v):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return conv(2 * v)
    for fn in (lambda v: trainable(2 * v), cast, lambda v: F.silu(2 * v)):
        assert saved_bytes(fn, x, True) == saved_bytes(fn, x, False) > 0
    with torch.no_grad():
        assert saved_bytes(lambda v: conv(2 * v), x, False) == 0
    assert saved_bytes(lambda v: conv(2 * v), x, False) == x.nbytes     # its input, 2v
    assert saved_bytes(lambda v: conv(2 * v), x, True) == 0             # only its layout
    assert saved_bytes(lambda v: F.silu(norm(v)), x, False) > saved_bytes(
        lambda v: F.silu(norm(v)), x, True)
