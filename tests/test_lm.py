"""LM (likelihood maximisation, as Ka1b0/DiffHammer's defense/llhd_maximize.py runs it): the
code's purification to float64 rounding, the exact gradient against finite differences,
checkpoint = exact, any eps-model, and the settings."""
import pytest
import torch

from advpure.diffusion import FixedNoise, PerSampleNoise, VPSchedule
from advpure.purifiers import LM, PURIFIERS, LMSettings
from conftest import gradient_at, tiny_unet, weighted_output_loss


class EDMDenoiser(torch.nn.Module):
    """A small denoiser D(x̃, σ) in EDM's convention (what the code's LM calls)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64)
                                    * 0.3)

    def forward(self, x, sigma):
        s = sigma.view(-1, 1, 1, 1)
        return x / (1 + s ** 2) + s * torch.tanh(torch.nn.functional.conv2d(x, self.w, padding=1))


class AsEps(torch.nn.Module):
    """The denoiser as an eps-model: ε(x_t, t) = (x̃ − D(x̃, σ)) / σ, x̃ = x_t/√ᾱ(t)."""

    def __init__(self):
        super().__init__()
        self.denoiser, self.schedule = EDMDenoiser(), VPSchedule()

    def forward(self, x_t, t):
        a = self.schedule.alpha_bar(t).to(x_t).view(-1, 1, 1, 1)
        x_tilde, sigma = x_t / a.sqrt(), (1 / a - 1).sqrt()
        return (x_tilde - self.denoiser(x_tilde, sigma.flatten())) / sigma


def test_lm_purifies_as_the_official_code():
    """Five Adam steps with the same σ draws and ε; the official ``purify`` (one image, so its
    batch mean is the per-image mean) printed these numbers."""
    g = torch.Generator().manual_seed(6)
    x = torch.rand(1, 2, 4, 4, generator=g, dtype=torch.float64)
    uniforms = [torch.rand(1, generator=g, dtype=torch.float64) for _ in range(5)]
    normals = [torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64) for _ in range(5)]
    noise = []
    for u, eps in zip(uniforms, normals):
        z = torch.zeros(1, 6, 4, 4, dtype=torch.float64)
        z[:, :2], z[:, 2, 0, 0] = eps, 2 ** 0.5 * torch.erfinv(2 * u - 1)
        noise.append(z)
    with torch.no_grad():
        out = LM(AsEps())(x, FixedNoise(noise))
    assert float(out.sum()) == pytest.approx(17.568220235850347, rel=1e-12)
    torch.testing.assert_close(out.flatten()[:4], torch.tensor(
        [0.5139134480210051, 0.8306606890217247, 0.8120643037664617, 0.4580970848654811],
        dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_lm_lowers_the_denoising_error_of_the_digits_model(digits_batch):
    from advpure.models import load_diffusion

    x, _ = digits_batch
    lm = LM(load_diffusion("builtin:digits-unet"), lm_steps=5)
    sigma = torch.full((x.shape[0],), 0.5)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        purified = lm(x, torch.Generator().manual_seed(1))
        before = lm.denoising_error(2 * x - 1, sigma, eps).mean()
        after = lm.denoising_error(2 * purified - 1, sigma, eps).mean()
    assert float(after) < float(before)


def test_the_exact_gradient_is_the_finite_difference_and_checkpoint_equals_it():
    """Adam's normalised step is strongly curved: the central difference's error falls as h²
    (2e-5 at h = 1e-6, 2e-7 at 1e-7), so h = 1e-7."""
    lm = LM(tiny_unet(torch.float64), lm_steps=3)
    f, x = weighted_output_loss(lm)
    exact = gradient_at(f, x)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            fd = float((f(x + 1e-7 * v) - f(x - 1e-7 * v)) / 2e-7)
        assert abs(float((exact * v).sum()) - fd) <= 1e-6 * abs(fd) + 1e-8
    f_checkpoint, _ = weighted_output_loss(lm, "checkpoint")
    torch.testing.assert_close(gradient_at(f_checkpoint, x), exact, rtol=1e-10, atol=1e-12)


def test_lm_settings_registry_and_radius(digits_batch):
    assert PURIFIERS["lm"] is LMSettings
    settings = LMSettings(lm_steps=2, lm_radius=0.1)
    assert settings.describe() == "lm(2 steps, lr=0.1, σ∈[0.4, 0.6], ℓ2 ≤ 0.1)"
    assert "dt" not in settings.model_dump()
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        LMSettings(sigma_min=0.7)
    with pytest.raises(ValueError, match="lm takes no dt"):
        LMSettings(dt=0.01)
    x, _ = digits_batch
    with torch.no_grad():
        out = LM(tiny_unet(), settings)(x, PerSampleNoise.from_seeds(range(len(x))))
    assert float((out - x).flatten(1).norm(dim=1).max()) <= 0.1 + 1e-5


def test_diffattacks_deviation_on_lm_compares_the_images_not_adams_moments(digits_batch):
    """LM's state packs (x, m, v); DiffAttack's deviation takes the image channels only, so
    the deviation of an unperturbed input is 0 and that of a shifted one is the images'."""
    from advpure.attacks.diffattack import DeviationProbe
    from advpure.defense import PurifiedClassifier
    from conftest import tiny_cnn

    x, _ = digits_batch
    x = x[:2]
    defense = PurifiedClassifier(LM(tiny_unet(), lm_steps=2), tiny_cnn(),
                                 torch.Generator().manual_seed(0))
    probe = DeviationProbe(defense, x)
    _, unchanged = probe(x)
    assert float(unchanged.abs().max()) == 0.0
    _, states = probe._trajectory(x, [1, 2])
    assert all(s.shape == x.shape for s in states)
