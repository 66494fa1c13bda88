"""Heterogeneous-noise purification (Pei et al.): attention masks, the two-stage process,
resampling, the ensemble, gradients, config and commands."""
import json
import warnings

import pytest
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

from advpure import PurifiedClassifier
from advpure.attention import MaskWarning, attention_mask, attention_maps, block_activations
from advpure.cli import app
from advpure.defense import combine_ensemble
from advpure.diffusion import DiscreteSchedule, FixedNoise, PerSampleNoise
from advpure.diffusion.ddpm import ddpm
from advpure.evaluation import DefenseConfig
from advpure.purifiers import DiffPure, HeteroPure
from advpure.purifiers.hetero import known_region
from conftest import CountingEps, PixelGaussianEps, tiny_cnn, tiny_unet

SEEDS = [3, 4, 5, 6, 7, 8]


class Recording:
    """A noise source that keeps every draw it hands out."""

    def __init__(self, seeds):
        self.source, self.draws = PerSampleNoise.from_seeds(seeds), []

    def randn_like(self, x):
        self.draws.append(self.source.randn_like(x))
        return self.draws[-1]


def hooks_on(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in module.modules())


# --- the attention mask (Eqs. 2–4) ---------------------------------------------------------

def test_attention_maps_follow_eqs_2_to_4_computed_by_hand(digits_batch):
    x, _ = digits_batch
    cnn = tiny_cnn()
    f = cnn.features
    a1 = f[1](f[0]((x - cnn.mean) / cnn.std))
    a2 = f[3](f[2](a1))
    a3 = f[6](f[5](f[4](a2)))
    expected = []
    for a in (a1, a2, a3):
        g = a.pow(2).sum(dim=1, keepdim=True).sqrt()                      # Eq. 2, p = 2
        g = F.interpolate(g, size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
        low = g.amin(dim=(1, 2), keepdim=True)
        expected.append((g - low) / (g.amax(dim=(1, 2), keepdim=True) - low))
    expected = torch.stack(expected)
    torch.testing.assert_close(attention_maps(cnn, x), expected)
    mask = attention_mask(cnn, x, tau=0.6)
    torch.testing.assert_close(mask, (expected > 0.6).any(dim=0).unsqueeze(1).float())  # Eq. 4
    soft = attention_maps(cnn, x, normalisation="softmax")
    torch.testing.assert_close(soft.sum(dim=(2, 3)), torch.ones(3, len(x)))   # spatial softmax


def test_no_hook_stays_on_the_classifier(digits_batch):
    x, _ = digits_batch
    cnn = tiny_cnn()
    HeteroPure(tiny_unet(), cnn, dt=0.05)(x, PerSampleNoise.from_seeds(SEEDS))
    assert hooks_on(cnn) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with block_activations(cnn, ["features.1"]):
            assert hooks_on(cnn) == 1
            raise RuntimeError("boom")
    assert hooks_on(cnn) == 0
    with pytest.raises(ValueError, match="no module features.99"):
        attention_mask(cnn, x, blocks=["features.99"])
    with pytest.raises(ValueError, match="no default blocks for a Sequential"):
        attention_mask(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), x)


def test_an_empty_or_full_mask_warns(digits_batch):
    x, _ = digits_batch
    with pytest.warns(MaskWarning, match="empty for 6 and full for 0 of 6"):
        attention_mask(tiny_cnn(), x, normalisation="softmax")        # the paper's φ at τ = 0.8
    with pytest.warns(MaskWarning, match="empty for 6"):
        HeteroPure(tiny_unet(), tiny_cnn(), dt=0.05, mask_normalisation="softmax")(
            x, PerSampleNoise.from_seeds(SEEDS))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MaskWarning)
        attention_mask(tiny_cnn(), x)                                 # min–max: a real mask


# --- the two-stage process ------------------------------------------------------------------

@pytest.mark.parametrize("resampling", ["single", "repaint", "none"])
def test_equal_times_are_plain_ddpm_purification(digits_batch, resampling):
    x, _ = digits_batch
    model = tiny_unet()
    hetero = HeteroPure(model, tiny_cnn(), t_large=0.1, t_small=0.1, dt=0.01,
                        resampling=resampling, resample_jumps=3)
    plain = DiffPure(model, t_star=0.1, dt=0.01, sampler="ddpm")
    torch.testing.assert_close(hetero(x, PerSampleNoise.from_seeds(SEEDS)),
                               plain(x, PerSampleNoise.from_seeds(SEEDS)), rtol=0, atol=0)


def _stage_draws(noise: Recording, stage1_steps: int, per_step: int):
    """(initial ε, stage-1 draws per step, stage-2 draws) of a recorded purification."""
    first, rest = noise.draws[0], noise.draws[1:]
    stage1 = [rest[i * per_step:(i + 1) * per_step] for i in range(stage1_steps)]
    return first, stage1, rest[stage1_steps * per_step:]


# draws per stage-1 step: [DDPM z, known ε] (+ the resampling's forward draw); RePaint with U = 3
# repeats the pair 3 times and re-noises twice, so its last known ε is draw 5
@pytest.mark.parametrize("resampling, per_step, known_at", [("single", 3, 1),
                                                            ("repaint", 2 * 3 + 2, 5)])
def test_an_empty_mask_is_purification_at_t_small(digits_batch, resampling, per_step, known_at):
    x, _ = digits_batch
    model, schedule = tiny_unet(), DiscreteSchedule()
    noise = Recording(SEEDS)
    out = HeteroPure(model, tiny_cnn(), dt=0.01, resampling=resampling, resample_jumps=3)(
        x, noise, mask=torch.zeros(len(x), 1, 8, 8))
    _, stage1, stage2 = _stage_draws(noise, 15, per_step)
    start = known_region(2 * x - 1, 0.05, stage1[-1][known_at], schedule)   # x at level 50
    expected = ddpm(model, start, schedule, t_start=0.05, dt=0.01, noise=FixedNoise(stage2))
    torch.testing.assert_close(out, ((expected + 1) / 2).clamp(0, 1), rtol=0, atol=0)


def test_a_full_mask_is_purification_at_t_large(digits_batch):
    x, _ = digits_batch
    model = tiny_unet()
    noise = Recording(SEEDS)
    out = HeteroPure(model, tiny_cnn(), dt=0.01, resampling="none")(
        x, noise, mask=torch.ones(len(x), 1, 8, 8))
    first, stage1, stage2 = _stage_draws(noise, 15, 2)
    expected = DiffPure(model, t_star=0.2, dt=0.01, sampler="ddpm")(
        x, FixedNoise([first] + [d[0] for d in stage1] + stage2))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("resampling, per_step, known_at",
                         [("none", 2, 1), ("single", 3, 1), ("repaint", 2 * 2 + 1, 3)])
def test_the_known_region_is_the_input_renoised_at_every_stage_one_step(
        digits_batch, resampling, per_step, known_at):
    x, _ = digits_batch
    cnn, schedule = tiny_cnn(), DiscreteSchedule()
    hetero = HeteroPure(tiny_unet(), cnn, dt=0.01, resampling=resampling, resample_jumps=2)
    mask = hetero.mask(x)
    assert 0 < float(mask.mean()) < 1
    states, noise = [], Recording(SEEDS)
    hetero(x, noise, callback=lambda i, t, x_t: states.append((t, x_t)))
    first, stage1, _ = _stage_draws(noise, 15, per_step)
    assert len(states) == 20 and abs(states[14][0] - 0.05) < 1e-12
    for (t, x_t), draws in zip(states[:15], stage1):
        known = known_region(2 * x - 1, t, draws[known_at], schedule)            # Eq. 6
        torch.testing.assert_close((1 - mask) * x_t, (1 - mask) * known, rtol=0, atol=0)
    strong = known_region(2 * x - 1, 0.2, first, schedule)                     # Eq. 5 start
    weak = known_region(2 * x - 1, 0.05, first, schedule)
    start = HeteroPure(tiny_unet(), cnn).heterogeneous_forward(2 * x - 1, mask, first)
    torch.testing.assert_close(start, mask * strong + (1 - mask) * weak)


@pytest.mark.parametrize("jumps", [1, 5, 20])
def test_single_step_resampling_costs_one_network_call_per_step_whatever_u(digits_batch, jumps):
    x, _ = digits_batch
    calls = {}
    for resampling in ("none", "single", "repaint"):
        model = CountingEps(tiny_unet())
        HeteroPure(model, tiny_cnn(), dt=0.01, resampling=resampling, resample_jumps=jumps,
                   )(x, PerSampleNoise.from_seeds(SEEDS), mask=torch.ones(6, 1, 8, 8))
        calls[resampling] = model.calls
    assert calls["none"] == 20                                    # 15 stage-1 + 5 stage-2 steps
    assert calls["single"] == 20 + 15                             # one extra call per stage-1 step
    assert calls["repaint"] == 15 * jumps + 5                     # U calls per stage-1 step
    model = CountingEps(tiny_unet())
    HeteroPure(model, tiny_cnn(), dt=0.01, resample_stage="all")(
        x, PerSampleNoise.from_seeds(SEEDS), mask=torch.ones(6, 1, 8, 8))
    assert model.calls == 40                                      # resampling at every step


@pytest.mark.parametrize("dt", [1e-3, 1e-2])
def test_single_step_resampling_jumps_u_levels_whatever_the_grid(digits_batch, monkeypatch, dt):
    """Eq. 11's α_{t−1+u}: every resampling diffuses x_p forward U levels (not U grid steps)."""
    import advpure.purifiers.hetero as hetero

    jumps, seen, real = 10, [], hetero.renoise
    monkeypatch.setattr(hetero, "renoise", lambda x, t, t_to, eps, schedule: (
        seen.append(round(1000 * (t_to - t))), real(x, t, t_to, eps, schedule))[1])
    x, _ = digits_batch
    HeteroPure(tiny_unet(), tiny_cnn(), dt=dt, resample_jumps=jumps)(
        x[:2], PerSampleNoise.from_seeds(SEEDS[:2]), mask=torch.ones(2, 1, 8, 8))
    assert len(seen) == round(0.15 / dt) and set(seen) == {jumps}   # one per stage-1 step


# --- gradients ------------------------------------------------------------------------------

@pytest.mark.parametrize("resampling", ["single", "repaint"])
def test_checkpoint_equals_exact_through_both_stages(digits_batch, resampling):
    x, _ = digits_batch
    hetero = HeteroPure(tiny_unet(), tiny_cnn(), dt=0.025, resampling=resampling,
                        resample_jumps=2, resample_stage="all")
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    grads = {}
    for mode in ("exact", "checkpoint"):
        xg = x.clone().requires_grad_(True)
        out = hetero(xg, PerSampleNoise.from_seeds(SEEDS), gradient=mode)
        (grads[mode],) = torch.autograd.grad((out * weights).sum(), xg)
    assert grads["exact"].abs().sum() > 0
    torch.testing.assert_close(grads["checkpoint"], grads["exact"], rtol=1e-5, atol=1e-7)


# --- the ensemble (Algorithm 3) -------------------------------------------------------------

def test_the_ensemble_averages_independent_purifications(digits_batch):
    x, _ = digits_batch
    cnn, purifier = tiny_cnn(), HeteroPure(tiny_unet(), tiny_cnn(), dt=0.05)
    ensemble = PurifiedClassifier(purifier, cnn, torch.Generator().manual_seed(7), ensemble=3)
    seeds = PerSampleNoise.spawn(torch.Generator().manual_seed(7), 18).generators
    separately = torch.stack([cnn(purifier(x, PerSampleNoise(seeds[6 * s:6 * (s + 1)])))
                              for s in range(3)])
    torch.testing.assert_close(ensemble(x), separately.mean(dim=0))
    single = PurifiedClassifier(purifier, cnn, torch.Generator().manual_seed(7))
    torch.testing.assert_close(single(x), cnn(purifier(x, PerSampleNoise.spawn(
        torch.Generator().manual_seed(7), 6))))


def test_vote_counts_decide_and_mean_probabilities_break_ties():
    logits = torch.tensor([[[5.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], [[0.0, 1.0, 0.0]]])
    assert combine_ensemble(logits, "mean").argmax(dim=1).item() == 0        # mean of outputs
    assert combine_ensemble(logits, "vote").argmax(dim=1).item() == 1        # 2 votes of 3
    tie = torch.tensor([[[3.0, 0.0]], [[0.0, 1.0]]])
    assert combine_ensemble(tie, "vote").argmax(dim=1).item() == 0           # higher mean prob
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(combine_ensemble(logits, "vote")[0, 1], logits)
    assert grad.abs().sum() > 0


# --- options, config and commands -----------------------------------------------------------

def test_options_and_config_errors():
    model, cnn = tiny_unet(), tiny_cnn()
    with pytest.raises(ValueError, match="0 < t_small <= t_large <= 1"):
        HeteroPure(model, cnn, t_large=0.05, t_small=0.2)
    with pytest.raises(ValueError, match="resampling: expected 'single', 'repaint' or 'none'"):
        HeteroPure(model, cnn, resampling="twice")
    with pytest.raises(ValueError, match="resample_jumps"):
        HeteroPure(model, cnn, resample_jumps=0)
    with pytest.raises(ValueError, match="DiscreteSchedule"):
        HeteroPure(model, cnn, schedule=DiscreteSchedule().continuous())
    with pytest.raises(ValueError, match="takes no option t_star=0.1"):
        DefenseConfig(name="hetero", t_star=0.1)
    with pytest.raises(ValueError, match="takes no option tau=0.5"):
        DefenseConfig(name="diffpure", tau=0.5)
    with pytest.raises(ValueError, match="0 < t_small <= t_large"):
        DefenseConfig(name="hetero", t_small=0.3)
    with pytest.raises(ValueError, match="adjoint"):
        DefenseConfig(name="hetero", gradient="adjoint")


def test_evaluate_runs_hetero_with_an_ensemble(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--defense", "hetero", "--dt", "0.05",
                                      "--tau", "0.7", "--resampling", "repaint",
                                      "--resample-jumps", "2", "--ensemble", "2",
                                      "--mask-blocks", "features.1, features.6", "--n", "4",
                                      "--attack", "pgd", "--eps", "0.1", "--steps", "1",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert ("hetero(t_l=0.2, t_s=0.05, τ=0.7, dt=0.05, resampling=repaint, U=2, "
            "blocks=features.1,features.6) ×2 mean") in result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["defense"]["mask_blocks"] == ["features.1", "features.6"]


@pytest.mark.parametrize("convention", ["paper", "authors-code"])
def test_masks_command_writes_its_figure(tmp_path, convention):
    result = CliRunner().invoke(app, ["masks", "--n", "2", "--dt", "0.05", "--eps", "0.1",
                                      "--mask-convention", convention,
                                      "--out", str(tmp_path / "m.png")])
    assert result.exit_code == 0, result.output
    assert "the mask covers" in result.output
    assert (tmp_path / "m.png").stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


@pytest.mark.parametrize("build", ["resnet18", "wideresnet", "resnet50"])
def test_public_classifier_architectures_have_default_mask_blocks(build):
    """The block outputs of the public architectures (Pei et al. use every block) exist and
    give a mask that is neither empty nor full on structured images."""
    from advpure.attention import default_blocks
    from advpure.models.resnet_cifar import ResNet18
    from advpure.models.resnet_imagenet import ResNet50
    from advpure.models.wideresnet import WideResNet

    torch.manual_seed(0)
    model = {"resnet18": ResNet18, "wideresnet": lambda: WideResNet(10, 2),
             "resnet50": lambda: ResNet50(layers=(1, 1, 1, 1), num_classes=10)}[build]().eval()
    x = torch.rand(2, 3, 32, 32)
    maps = attention_maps(model, x)
    assert len(maps) == len(default_blocks(model)) == 4
    mask = attention_mask(model, x)
    assert 0 < float(mask.mean()) < 1


def test_the_wideresnet_mask_hooks_each_group_s_last_activation():
    """Pei et al. (and their code) hook blockK.layer[-1].relu2 and the final ReLU, not the
    groups' residual sums; every hooked output is an activation (≥ 0)."""
    from advpure.attention import block_activations, default_blocks
    from advpure.models.resnet_cifar import ResNet18
    from advpure.models.wideresnet import WideResNet

    torch.manual_seed(0)
    wrn = WideResNet(16, 2).eval()                        # two blocks per group
    names = default_blocks(wrn)
    assert names == ("block1.layer.1.relu2", "block2.layer.1.relu2", "block3.layer.1.relu2",
                     "relu")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad(), block_activations(wrn, names + ("block1",)) as seen:
        wrn(x)
    assert all(float(seen[n].min()) >= 0.0 for n in names)
    assert float(seen["block1"].min()) < 0.0                # the residual sum is not one
    resnet = ResNet18().eval()                              # its stages end in their ReLU
    with torch.no_grad(), block_activations(resnet, default_blocks(resnet)) as seen:
        resnet(x)
    assert all(float(a.min()) >= 0.0 for a in seen.values())


@pytest.mark.parametrize("top", [0.15, 0.5])
def test_a_top_k_mask_covers_k_of_the_pixels(digits_batch, top):
    import math

    x, _ = digits_batch
    mask = attention_mask(tiny_cnn(), x, top=top)
    assert mask.sum(dim=(1, 2, 3)).tolist() == [math.ceil(top * 64)] * len(x)
    hetero = HeteroPure(tiny_unet(), tiny_cnn(), mask_top=top, dt=0.05)
    torch.testing.assert_close(hetero.mask(x), mask)
    with pytest.raises(ValueError, match="expected a threshold tau or a fraction mask_top"):
        HeteroPure(tiny_unet(), tiny_cnn(), mask_top=top, tau=0.7)


def test_the_authors_code_variant_matches_its_stages_by_hand(digits_batch):
    """On the code's levels (its index i is our level i + 1: 201 → 1): the whole image noised
    to the top level; stage 1: impose the known region at level n, U one-level forward steps,
    one DDIM (η = 0) jump from n + U to p, and the code's unused DDIM draw; stage 2: DDIM
    (η = 0); computed here from the recorded noise."""
    x, _ = digits_batch
    x, jumps, eps_model, schedule = x[:3].double(), 3, PixelGaussianEps(), DiscreteSchedule()
    mask = (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    noise = Recording(SEEDS[:3])
    out = HeteroPure(eps_model, tiny_cnn(torch.float64), variant="authors-code", dt=0.025,
                     resample_jumps=jumps)(x, noise, mask=mask)

    def ab(level):
        return float(schedule.alpha_bar(level / 1000))

    def ddim(state, n, p):
        eps = eps_model(state, torch.full((3,), n / 1000, dtype=torch.float64))
        x0_hat = (state - (1 - ab(n)) ** 0.5 * eps) / ab(n) ** 0.5
        return ab(p) ** 0.5 * x0_hat + (1 - ab(p)) ** 0.5 * eps

    draws = iter(noise.draws)
    x0 = 2 * x - 1
    state = ab(201) ** 0.5 * x0 + (1 - ab(201)) ** 0.5 * next(draws)
    for n in range(201, 51, -25):                              # stage 1: 201 → 51
        z = [next(draws) for _ in range(2 + jumps)]
        state = mask * state + (1 - mask) * (ab(n) ** 0.5 * x0 + (1 - ab(n)) ** 0.5 * z[0])
        for i in range(jumps):
            a = ab(n + i + 1) / ab(n + i)
            state = a ** 0.5 * state + (1 - a) ** 0.5 * z[1 + i]
        state = ddim(state, n + jumps, n - 25)
    for n in (51, 26):                                         # stage 2: 51 → 1, DDIM
        next(draws)
        state = ddim(state, n, n - 25)
    torch.testing.assert_close(out, ((state + 1) / 2).clamp(0, 1))
    assert next(draws, None) is None
    with pytest.raises(ValueError, match="options of the paper's algorithm"):
        HeteroPure(eps_model, tiny_cnn(), variant="authors-code", resampling="none")
