"""The seed authors' conventions, reproduced by options (README, "Coming from the authors' code").

Every expected number below was printed by the authors' own code, run outside the project on the
inputs, networks and noise built here (same seeds, float32, one thread): GaozhengPei/Purification
``purification.py`` (``PurificationForward.get_mask`` and ``.denoise``, at fbb99ce; the file's
arithmetic is the same at afa372c) and NVlabs/DiffPure @ 985703f (``runners/diffpure_sde.py``
``RevGuidedDiffusion.image_editing_sample`` and ``RevVPSDE`` with ``score_type="score_sde"``,
``runners/diffpure_ode.py`` with torchdiffeq 0.2.5, ``runners/diffpure_ldsde.py``), with
``torch.randn_like`` and the Brownian motion replaced by the draws of ``draws()`` in order. None
of that code is in the project; only its outputs are.
"""
import pytest
import torch
import torch.nn.functional as F

from advpure.attention import attention_mask
from advpure.diffusion import FixedNoise, VPSchedule
from advpure.diffusion.samplers import time_grid
from advpure.models.wideresnet import WideResNet
from advpure.models.adapters import ScoreSDEEps
from advpure.purifiers import DiffPure, HeteroPure
from advpure.training.common import init_weights

SHAPE = (2, 3, 16, 16)


class LabelledNet(torch.nn.Module):
    """A small eps-network called as score_sde's is, ``net(x, label)``; its output depends on the
    label, so a label convention shows."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(3, 3, 3, 3, generator=g) * 0.3)
        self.b = torch.nn.Parameter(torch.randn(3, generator=g) * 0.1)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        label = label.to(x.dtype).view(-1, 1, 1, 1)
        out = torch.tanh(F.conv2d(x, self.w, self.b, padding=1))
        return out * (1 + label / 1000) + 0.05 * x * torch.cos(label / 100)


def case() -> tuple[torch.Tensor, LabelledNet, WideResNet]:
    """[0, 1] images, the eps-network and a WRN-10-1 (the authors' WideResNet hooks)."""
    g = torch.Generator().manual_seed(2024)
    smooth = F.interpolate(torch.randn(SHAPE[0], 3, 4, 4, generator=g), size=SHAPE[-2:],
                           mode="bilinear", align_corners=False)
    x = (0.5 + 0.2 * smooth + 0.05 * torch.randn(SHAPE, generator=g)).clamp(0, 1)
    classifier = init_weights(WideResNet(10, 1), torch.Generator().manual_seed(3)).eval()
    return x, LabelledNet().eval(), classifier.requires_grad_(False)


def draws(count: int = 400) -> list[torch.Tensor]:
    """The standard normal draws both codes take, in order."""
    g = torch.Generator().manual_seed(7)
    return list(torch.randn((count, *SHAPE), generator=g))


def final_state(purifier, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The last state of the reverse process (before the output clamp) and the draws it took."""
    states, noise = [], FixedNoise(draws())
    with torch.no_grad():
        purifier(x, noise, callback=lambda i, t, x_t: states.append(x_t))
    return states[-1], noise.used


def assert_recorded(state: torch.Tensor, recorded: tuple) -> None:
    """``recorded``: (sum, sum of |·|, every 200th value) of the authors' final state."""
    total, absolute, values = recorded
    state = state.double()
    torch.testing.assert_close(state.flatten()[::200], torch.tensor(values, dtype=torch.float64),
                               rtol=0, atol=2e-5)
    assert float(state.sum()) == pytest.approx(total, rel=1e-5)
    assert float(state.abs().sum()) == pytest.approx(absolute, rel=1e-5)


def mask_signature(mask: torch.Tensor) -> tuple[list[int], list[float]]:
    """Pixels per image and Σ index·mask: equal signatures are equal masks here."""
    flat = mask.flatten(1).double()
    return flat.sum(1).int().tolist(), (flat * torch.arange(flat.shape[1])).sum(1).tolist()


AUTHORS_MASKS = {   # τ -> get_mask: (pixels, Σ index) per image
    0.85: ([34, 24], [2623.0, 1717.0]),
    0.9: ([27, 20], [2234.0, 1330.0]),
}


@pytest.mark.parametrize("tau", sorted(AUTHORS_MASKS))
def test_the_authors_mask_convention_gives_their_mask(tau):
    """data_normalize(2x − 1) to the classifier, Σ A² without the root, ≥ τ
    (purification.py 100, 145, 153-155); the paper's convention masks other pixels."""
    x, _, classifier = case()
    mask = attention_mask(classifier, x, tau, convention="authors-code")
    assert mask_signature(mask) == AUTHORS_MASKS[tau]
    paper = attention_mask(classifier, x, tau)
    assert mask_signature(paper)[0] != AUTHORS_MASKS[tau][0]


def test_the_authors_top_fraction_keeps_int_q_hw_pixels():
    """``threshold_percent_area`` with q = 0.15 on 16×16: int(38.4) = 38 pixels (the paper's
    convention keeps ⌈38.4⌉ = 39), the same 38 as the code's."""
    x, _, classifier = case()
    mask = attention_mask(classifier, x, top=0.15, convention="authors-code")
    assert mask_signature(mask) == ([38, 38], [2835.0, 3061.0])
    assert mask_signature(attention_mask(classifier, x, top=0.15))[0] == [39, 39]


AUTHORS_HETERO = {   # preset -> (draws, final state of PurificationForward.denoise)
    "code-afa372c": (261, (120.97947732661851, 857.256480201846, [
        -2.093416213989258, -0.2718634307384491, -0.028240425512194633, -0.7073560357093811,
        0.7464728951454163, 0.10370178520679474, -0.13198810815811157, 0.8742978572845459])),
    "code-fbb99ce": (301, (131.49008830467938, 713.149513026874, [
        -0.9918476939201355, 0.267286092042923, 0.03066273219883442, -0.28473344445228577,
        0.2908448278903961, 0.5482476353645325, 0.5335356593132019, 0.5269507169723511])),
}


@pytest.mark.parametrize("preset", sorted(AUTHORS_HETERO))
def test_the_authors_code_variant_equals_their_purification(preset):
    """Each commit's CIFAR-10 defaults (t_l 0.2, t_s 0.1; τ 0.85, 200 levels, U 10 at afa372c;
    τ 0.9, 500 levels, U 3 at fbb99ce) on a score_sde-called network: their levels 201…1, the
    index as score_sde's label, their mask, their draws in their order."""
    x, net, classifier = case()
    purifier = HeteroPure(ScoreSDEEps(net), classifier, preset=preset)
    expected_draws, recorded = AUTHORS_HETERO[preset]
    state, used = final_state(purifier, x)
    assert used == expected_draws
    assert_recorded(state, recorded)


def test_score_sde_is_labelled_with_the_index_only_in_the_authors_variant():
    net = LabelledNet()
    seen = []
    net.register_forward_hook(lambda module, args, out: seen.append(args[1].flatten()[0].item()))
    eps = ScoreSDEEps(net)
    eps(torch.zeros(1, 3, 4, 4), torch.tensor([0.2]))
    eps.index_labelled()(torch.zeros(1, 3, 4, 4), torch.tensor([0.2]))
    assert seen == pytest.approx([199.8, 199.0])


AUTHORS_DIFFPURE = {   # sampler -> (options, draws, final state of image_editing_sample)
    "sde": (dict(t_end=1e-5, noising="discrete", grid="authors-code"), 101, (
        138.7297732885927, 877.1979958955199, [
            -0.5944386124610901, -0.5812420845031738, 0.3185099959373474, 0.016919666901230812,
            0.0945558249950409, -0.2334742248058319, 0.5177947878837585, 0.778066098690033])),
    "ode": (dict(t_end=1e-5, noising="discrete", grid="authors-code"), 1, (
        132.55055219179485, 622.6489023832837, [
            -0.7988160252571106, -0.8819642663002014, 0.035100601613521576, -0.2814990282058716,
            0.3849906027317047, 0.04066947102546692, -0.5306923389434814, 0.6655922532081604])),
    "ld": (dict(ld_span=0.4, t_end=1e-5, grid="authors-code", dt=1e-2, ld_sigma2=1e-3,
                ld_lambda=1e-2, ld_eta=5.0, ld_score_t=1e-2), 40, (
        96.53228732920252, 433.61160908057354, [
            -0.44023796916007996, -0.055736854672431946, 0.5296573638916016,
            -0.27165985107421875, 0.20498345792293549, 0.0001726001501083374,
            0.07087031751871109, 0.2558334767818451])),
}


@pytest.mark.parametrize("sampler", sorted(AUTHORS_DIFFPURE))
def test_diffpure_with_the_codes_noising_and_grid_equals_its_runners(sampler):
    """DiffPure's runners at --t 100 (LD: --t 400, σ² 1e-3, λ 1e-2, η 5), score_sde path:
    noised with the discrete ᾱ = a[t − 1], torchsde's / torchdiffeq's fixed steps to 1 − 1e-5."""
    options, expected_draws, recorded = AUTHORS_DIFFPURE[sampler]
    x, net, _ = case()
    state, used = final_state(DiffPure(ScoreSDEEps(net), sampler=sampler, **options), x)
    assert used == expected_draws
    assert_recorded(state, recorded)


def test_the_codes_solver_grids():
    """torchsde from s = 0.9 to 0.99999: 99 steps of ≈1e-3 (float32) and a last one of
    0.00099; torchdiffeq likewise on −t; LD over [0.6, 0.99999] by 1e-2: the last 0.00999033."""
    sde = time_grid(0.1, 1e-5, 1e-3, "authors-code")
    assert len(sde) == 101 and float(sde[-1]) == pytest.approx(1e-5, abs=2e-8)
    steps = sde[:-1] - sde[1:]
    assert steps[:-1].min() > 0.99998e-3 and float(steps[-1]) == pytest.approx(0.00099, rel=2e-3)
    ode = time_grid(0.1, 1e-5, 1e-3, "authors-code", solver="torchdiffeq")
    assert len(ode) == 101 and float(ode[0] - ode[1]) == pytest.approx(1e-3, rel=1e-5)
    from advpure.diffusion.langevin import ld_times
    ld = ld_times(0.4, 1e-5, 1e-2, "authors-code")
    assert len(ld) == 41 and float(ld[-1] - ld[-2]) == pytest.approx(0.00999033, abs=1e-8)
    uniform = time_grid(0.1, 0.0, 1e-3)
    torch.testing.assert_close(uniform[:-1] - uniform[1:], torch.full((100,), 1e-3,
                                                                      dtype=torch.float64))


def test_presets_name_their_commit_and_fill_only_what_is_not_given():
    from advpure.purifiers.hetero import HeteroSettings

    first = HeteroSettings(preset="code-afa372c")
    assert (first.variant, first.tau, first.dt, first.resample_jumps, first.t_small) == \
        ("authors-code", 0.85, 5e-3, 10, 0.1)
    head = HeteroSettings(preset="code-fbb99ce", resample_jumps=5, mask_top=0.15)
    assert (head.dt, head.resample_jumps, head.mask_top) == (2e-3, 5, 0.15)   # τ: not used
    assert "code-fbb99ce" in " ".join(head.describe_options())
    assert HeteroSettings(variant="authors-code").mask_rule == "authors-code"
    assert HeteroSettings(variant="authors-code", mask_convention="paper").mask_rule == "paper"


def test_discrete_noising_is_refused_where_nothing_is_noised():
    from advpure.purifiers.coup import COUPSettings

    with pytest.raises(ValueError, match="forward_noise"):
        COUPSettings(noising="discrete")
    with pytest.raises(ValueError, match="sampler 'ddpm' takes"):
        DiffPure(ScoreSDEEps(LabelledNet()), sampler="ddpm", grid="authors-code")


@pytest.mark.parametrize("sampler, options", [
    ("sde", dict(t_end=1e-5, noising="discrete")),          # the uniform grid: 1.9e-4 apart
    ("sde", dict(t_end=1e-5, grid="authors-code")),         # continuous noising: 5.4e-3
    ("ode", dict(t_end=1e-5)),                               # both: 4.7e-3
    ("ld", dict(ld_span=0.4, t_end=1e-5, dt=1e-2, ld_sigma2=1e-3, ld_lambda=1e-2, ld_eta=5.0,
                ld_score_t=1e-2)),                           # the uniform grid: 1.1e-4
])
def test_without_each_option_the_output_is_not_the_codes(sampler, options):
    """Each option is needed: leaving one out fails the check the full set passes."""
    x, net, _ = case()
    state, _ = final_state(DiffPure(ScoreSDEEps(net), sampler=sampler, **options), x)
    with pytest.raises(AssertionError):
        assert_recorded(state, AUTHORS_DIFFPURE[sampler][2])


def test_without_the_authors_mask_the_variant_is_not_their_purification():
    x, net, classifier = case()
    purifier = HeteroPure(ScoreSDEEps(net), classifier, preset="code-fbb99ce",
                          mask_convention="paper")
    with pytest.raises(AssertionError):
        assert_recorded(final_state(purifier, x)[0], AUTHORS_HETERO["code-fbb99ce"][1])
