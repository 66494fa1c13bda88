"""Every purifier × every gradient mode of the defense, as one grid (DESIGN.md §4): checkpoint
gives exact's gradient, bpda the classifier's gradient at the purified image, surrogate the
gradient through the cheaper purification, blind the bare classifier's; adjoint runs where the
solver is continuous and is refused where it is not."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from advpure import PurifiedClassifier
from advpure.diffusion import PerSampleNoise
from advpure.purifiers import PURIFIERS, Models

from conftest import tiny_cnn, tiny_unet

PURIFIER_CASES = {                              # id -> settings (small steps: a tiny grid)
    "diffpure-sde": dict(name="diffpure", dt=0.05),
    "diffpure-ode": dict(name="diffpure", sampler="ode", dt=0.05),
    "diffpure-ld": dict(name="diffpure", sampler="ld", dt=0.1),
    "diffpure-ddpm": dict(name="diffpure", sampler="ddpm", dt=0.05, t_star_delta=0.02),
    "diffpure-ddim": dict(name="diffpure", sampler="ddim", dt=0.05),
    "coup": dict(name="coup", dt=0.025),
    "agdm-discrete": dict(name="agdm", dt=0.02),
    "agdm-continuous": dict(name="agdm", form="continuous", dt=0.02),
    "hetero": dict(name="hetero", dt=0.05),
}
MODES = ("exact", "checkpoint", "adjoint", "bpda", "surrogate", "blind")
SEED = 0
SURROGATE_DT = 0.07                # at most every case's t* (AGDM: 0.07)


def build(case: str, classifier: torch.nn.Module, **changes) -> torch.nn.Module:
    settings = PURIFIERS[PURIFIER_CASES[case]["name"]](**(PURIFIER_CASES[case] | changes))
    phi = tiny_cnn(seed=2)                       # AGDM's robust φ; the others ignore it
    return settings.build(Models(tiny_unet(), classifier, lambda spec: phi))


def defense_gradient(case, mode, x, y) -> torch.Tensor:
    classifier = tiny_cnn()
    surrogate = build(case, classifier, dt=SURROGATE_DT) if mode == "surrogate" else None
    defense = PurifiedClassifier(build(case, classifier), classifier, gradient=mode,
                                 surrogate=surrogate,
                                 generator=torch.Generator().manual_seed(SEED))
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(defense(xg), y, reduction="sum"), xg)
    return grad


def classifier_gradient(inputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    inputs = inputs.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(tiny_cnn()(inputs), y, reduction="sum"),
                                  inputs)
    return grad


def noises(n: int) -> tuple[PerSampleNoise, PerSampleNoise]:
    """The noise of the defense's first and second purification (main, then surrogate)."""
    generator = torch.Generator().manual_seed(SEED)
    return PerSampleNoise.spawn(generator, n), PerSampleNoise.spawn(generator, n)


def expected_gradient(case, mode, x, y) -> torch.Tensor:
    """What each mode's gradient must be, computed without PurifiedClassifier."""
    classifier = tiny_cnn()
    main, second = noises(x.shape[0])
    if mode == "checkpoint":
        return defense_gradient(case, "exact", x, y)
    if mode == "blind":
        return classifier_gradient(x, y)
    with torch.no_grad():
        purified = build(case, classifier)(x, main)
    if mode == "bpda":
        return classifier_gradient(purified, y)
    xg = x.clone().requires_grad_(True)
    cheap = build(case, classifier, dt=SURROGATE_DT)(xg, second)
    through = purified + (cheap - cheap.detach())
    (grad,) = torch.autograd.grad(F.cross_entropy(classifier(through), y, reduction="sum"), xg)
    return grad


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", PURIFIER_CASES)
def test_every_purifier_under_every_gradient_mode(digits_batch, case, mode):
    x, y = digits_batch
    continuous = PURIFIERS[PURIFIER_CASES[case]["name"]](**PURIFIER_CASES[case]) \
        .runs_continuous_time()
    if mode == "adjoint" and not continuous:
        with pytest.raises(ValueError, match="adjoint"):
            defense_gradient(case, mode, x, y)
        return
    grad = defense_gradient(case, mode, x, y)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    if mode in ("exact", "adjoint"):
        return                                   # exact vs finite differences: test_gradients
    expected = expected_gradient(case, mode, x, y)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
