"""The memory budget of the checkpoint gradient, mixed precision and torch.compile."""
import warnings

import pytest
import torch
from pydantic import ValidationError

from advpure.accelerate import Autocast, Compiled, accelerated
from advpure.defense import PurifiedClassifier
from advpure.diffusion import parse_budget
from advpure.evaluation import DefenseConfig
from advpure.purifiers import AGDM, COUP, GDMP, DiffPure, HeteroPure
from conftest import smooth_classifier, tiny_cnn, tiny_unet


def attack_gradient(purifier, gradient: str, budget=None, classifier=None):
    classifier = classifier or tiny_cnn()
    defended = PurifiedClassifier(purifier, classifier, torch.Generator().manual_seed(0),
                                  gradient=gradient, memory_budget=budget)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    (grad,) = torch.autograd.grad(defended(x).logsumexp(1).sum(), x)
    return grad, defended.last_budget


def test_parse_budget_units_and_errors():
    assert parse_budget("6GB") == 6 * 10**9 and parse_budget("512MiB") == 512 * 2**20
    assert parse_budget(1e9) == 10**9 and parse_budget("0") == 0 and parse_budget("auto") > 0
    for bad in ("lots", "6 parsecs", -1):
        with pytest.raises(ValueError, match="memory_budget"):
            parse_budget(bad)


@pytest.mark.parametrize("make, bitwise, one_solve", [
    (lambda: DiffPure(tiny_unet(), t_star=0.1, dt=0.01), True, True),
    (lambda: DiffPure(tiny_unet(), t_star=0.1, dt=0.01, sampler="ddpm"), True, True),
    (lambda: HeteroPure(tiny_unet(), tiny_cnn(), dt=0.02), False, False),
    (lambda: GDMP(tiny_unet(), dt=0.01, guidance_scale=30.0), False, True),
    (lambda: COUP(tiny_unet(), tiny_cnn(), dt=0.01), False, False),
    (lambda: AGDM(tiny_unet(), tiny_cnn(), dt=0.01), False, False),
], ids=["diffpure", "diffpure-ddpm", "hetero", "gdmp", "coup", "agdm"])
def test_the_gradient_is_exacts_at_every_budget(make, bitwise, one_solve):
    """Bit for bit where the steps read only the state; with context inputs that every step
    reads (the heterogeneous purifier's input and mask, GDMP's input) autograd sums their
    per-step gradients in another order when a step is recomputed: equal to float rounding.
    GDMP differentiates its guidance inside each step (second order through the selective
    graph). The policies per step follow the plan where one solve runs every step (the
    heterogeneous purifier's first stage plans without its second)."""
    exact, _ = attack_gradient(make(), "exact")
    _, full = attack_gradient(make(), "checkpoint", budget=10**12)
    steps, graph = full.steps, full.step_bytes["graph"]
    assert full.used == {"graph": steps, "selective": 0, "input": 0}
    _, half = attack_gradient(make(), "checkpoint", budget=graph * steps // 2)
    selective = half.step_bytes["selective"]
    assert 0 < selective < graph
    budgets = {None: None, 0: {"graph": 0, "selective": 0, "input": steps},
               graph: {"graph": 1, "selective": 0, "input": steps - 1},
               graph * steps // 2: planned(graph * steps // 2, steps, graph, selective),
               graph + (steps - 1) * selective: {"graph": 1, "selective": steps - 1, "input": 0},
               10**12: {"graph": steps, "selective": 0, "input": 0}}
    for budget, used in budgets.items():
        grad, run = attack_gradient(make(), "checkpoint", budget)
        if bitwise:
            assert torch.equal(grad, exact), budget
        else:
            torch.testing.assert_close(grad, exact, rtol=1e-5, atol=1e-8)
        if run is None or one_solve:
            assert (run if run is None else run.used) == used, budget
        else:
            assert run.steps == steps and run.total - run.remaining <= max(budget, graph)


def planned(budget: int, steps: int, graph: int, selective: int) -> dict:
    """The plan by hand: the first (measured) step whole, the second (measured) selective;
    then whole graphs while the steps after can all be selective, then selective steps while
    they fit, then inputs."""
    used = {"graph": 1, "selective": 1, "input": 0}
    left = budget - graph - selective
    for k in range(steps - 2, 0, -1):
        policy = "graph" if left - graph >= (k - 1) * selective else \
            "selective" if left >= selective else "input"
        left -= {"graph": graph, "selective": selective, "input": 0}[policy]
        used[policy] += 1
    return used


def test_the_budget_is_one_pool_for_both_heterogeneous_stages():
    _, full = attack_gradient(HeteroPure(tiny_unet(), tiny_cnn(), dt=0.02), "checkpoint", 10**12)
    _, used = attack_gradient(HeteroPure(tiny_unet(), tiny_cnn(), dt=0.02), "checkpoint",
                              full.step_bytes["graph"] * 3)
    assert used.steps == full.steps and used.used["graph"] >= 1
    assert used.remaining < min(used.step_bytes.values())      # nothing left that one more fits
    kept = sum(used.step_bytes[p] * used.used[p] for p in ("graph", "selective"))
    assert kept == used.total - used.remaining <= used.total


def test_a_budget_needs_the_checkpoint_gradient():
    with pytest.raises(ValueError, match="memory_budget applies to gradient 'checkpoint'"):
        PurifiedClassifier(DiffPure(tiny_unet()), tiny_cnn(), memory_budget="1GB")
    with pytest.raises(ValidationError, match="memory_budget applies"):
        DefenseConfig(name="diffpure", memory_budget="1GB")
    with pytest.raises(ValidationError, match="memory_budget: expected bytes"):
        DefenseConfig(name="diffpure", gradient="checkpoint", memory_budget="plenty")
    cfg = DefenseConfig(name="diffpure", gradient="checkpoint", memory_budget="6GB",
                        precision="bf16")
    assert cfg.describe() == "diffpure(t*=0.1, dt=0.001) bf16 [checkpoint gradient, keeps 6GB]"


@pytest.mark.parametrize("gradient", ["exact", "checkpoint"])
@pytest.mark.parametrize("make", [
    lambda m: DiffPure(m, t_star=0.1, dt=0.02),
    lambda m: DiffPure(m, t_star=0.1, dt=0.02, sampler="ddpm"),
    lambda m: COUP(m, tiny_cnn(), dt=0.02),
    lambda m: AGDM(m, tiny_cnn(), dt=0.02),
    lambda m: HeteroPure(m, tiny_cnn(), dt=0.02),
    lambda m: GDMP(m, dt=0.02, guidance_scale=30.0),
], ids=["diffpure", "diffpure-ddpm", "coup", "agdm", "hetero", "gdmp"])
def test_bf16_runs_every_purifier_and_gradient_mode_with_a_float32_state(make, gradient):
    eps_model = accelerated(tiny_unet(), precision="bf16")
    classifier = accelerated(tiny_cnn(), precision="bf16")
    grad, _ = attack_gradient(make(eps_model), gradient, classifier=classifier)
    exact, _ = attack_gradient(make(tiny_unet()), gradient)
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
    assert float(torch.nn.functional.cosine_similarity(grad.flatten(), exact.flatten(), 0)) > 0.5


def test_autocast_returns_the_callers_dtype_and_passes_the_variance_flag_through():
    wrapped = Autocast(tiny_unet(), torch.bfloat16)
    out = wrapped(torch.randn(2, 1, 8, 8), torch.full((2,), 0.5))
    assert out.dtype == torch.float32 and wrapped.learned_variance is False
    with pytest.raises(ValueError, match="precision: expected one of fp32, bf16, fp16"):
        accelerated(tiny_cnn(), precision="int8")
    model = tiny_cnn()
    assert accelerated(model) is model


def test_compile_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(model):
        raise RuntimeError("no C++ compiler here\nmore lines")
    monkeypatch.setattr(torch, "compile", broken)
    model = smooth_classifier()
    compiled = Compiled(model)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with pytest.warns(UserWarning, match="torch.compile of Sequential failed .*no C\\+\\+.*"
                      "running it eagerly \\(compile=False runs eagerly without"):
        out = compiled(x)
    torch.testing.assert_close(out, model(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled(x)                                   # no second warning
    assert compiled.fallback.startswith("RuntimeError")


@pytest.mark.slow
def test_compile_gives_the_eager_outputs_and_gradients():
    model = tiny_unet()
    compiled = Compiled(model)
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    t = torch.full((2,), 0.3)
    out = compiled(x, t)
    assert compiled.fallback is None
    torch.testing.assert_close(out, model(x, t), rtol=1e-5, atol=1e-5)
    (g1,) = torch.autograd.grad(out.sum(), x)
    (g2,) = torch.autograd.grad(model(x, t).sum(), x)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)


def test_packed_eot_passes_give_the_one_pass_gradient():
    from advpure.attacks import eot_loss_and_grad

    x, y = torch.rand(3, 1, 8, 8), torch.tensor([1, 2, 3])
    results, passes = [], []
    for rows in (None, 4, "auto"):            # auto: one pass on a CPU
        defended = PurifiedClassifier(DiffPure(tiny_unet(), t_star=0.1, dt=0.05), tiny_cnn(),
                                      torch.Generator().manual_seed(0), rows_per_pass=rows)
        results.append(eot_loss_and_grad(defended, x, y, eot=4))
        passes.append(defended.passes)
    assert passes == [1, 3, 1]                  # 12 rows: 4 + 4 + 4
    for other in results[1:]:
        torch.testing.assert_close(results[0][0], other[0])
        torch.testing.assert_close(results[0][1], other[1])
    with pytest.raises(ValueError, match="rows_per_pass a whole number >= 1 or 'auto'"):
        PurifiedClassifier(DiffPure(tiny_unet()), tiny_cnn(), rows_per_pass=0)


def test_fp16_scales_its_gradient_so_that_small_components_do_not_underflow():
    from advpure.accelerate import ScaledGradient

    x = torch.randn(4, requires_grad=True)
    (g,) = torch.autograd.grad(ScaledGradient.apply(x, 8.0).sum(), x)
    assert torch.equal(g, torch.full((4,), 8.0))
    model = tiny_unet()
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    t = torch.full((2,), 0.5)
    (ref,) = torch.autograd.grad(1e-6 * model(x, t).sum(), x)        # a small attack gradient
    (half,) = torch.autograd.grad(1e-6 * Autocast(model, torch.float16)(x, t).sum(), x)
    assert float((half == 0).float().mean()) == 0.0
    assert float(torch.nn.functional.cosine_similarity(ref.flatten(), half.flatten(), 0)) > 0.99


@pytest.mark.parametrize("gradient", ["adjoint", "bpda", "surrogate", "blind"])
def test_bf16_runs_the_other_gradient_modes(gradient):
    eps_model = accelerated(tiny_unet(), precision="bf16")
    classifier = accelerated(tiny_cnn(), precision="bf16")
    purifier = DiffPure(eps_model, t_star=0.1, dt=0.02)
    surrogate = DiffPure(eps_model, t_star=0.1, dt=0.05) if gradient == "surrogate" else None
    defended = PurifiedClassifier(purifier, classifier, torch.Generator().manual_seed(0),
                                  gradient=gradient, surrogate=surrogate)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    (grad,) = torch.autograd.grad(defended(x).logsumexp(1).sum(), x)
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0


class SlowUnder(torch.nn.Module):
    """Identity that sleeps 20 ms when autocast is (or is not) on: a slow precision path."""

    def __init__(self, slow_under_autocast: bool):
        super().__init__()
        self.slow_under_autocast = slow_under_autocast

    def forward(self, x, *args):
        import time

        if torch.is_autocast_enabled("cpu") == self.slow_under_autocast:
            time.sleep(0.02)
        return x * 1.0


def test_a_slower_autocast_is_said_once_and_kept():
    model = Autocast(SlowUnder(slow_under_autocast=True), torch.bfloat16)
    x = torch.rand(2, 1, 8, 8)
    with pytest.warns(UserWarning, match="precision bf16: SlowUnder runs .*× slower under "
                      "autocast than in fp32 on this cpu .* precision fp32 is the faster choice "
                      "here. Keeping bf16 as asked"):
        out = model(x)
    assert out.dtype == torch.float32 and model.speed["bf16"] > model.speed["fp32"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x)                                          # said once
        faster = Autocast(SlowUnder(slow_under_autocast=False), torch.bfloat16)
        faster(x)                                         # autocast the faster: nothing said
    assert faster.speed["bf16"] < faster.speed["fp32"]
