"""Training loops: an interrupted run resumes to the same weights, t_max limits the noise
levels, half-precision checkpoints, the denoising-quality measure."""
import pytest
import torch

from advpure import data
from advpure.models import load_checkpoint, save_checkpoint
from advpure.training import DiffusionTraining, GuidanceTraining, train_diffusion, train_guidance
from advpure.training.diffusion import eps_loss, eps_mse
from conftest import tiny_unet


def digits(n=256):
    x, y = data.load("digits", "train")
    return x[:n], y[:n]


def test_an_interrupted_diffusion_run_resumes_to_the_same_weights(tmp_path):
    x, _ = digits()                                     # 256 images, batch 64: 4 steps/epoch
    cfg = dict(batch_size=64, base=8, mults=(1, 2), warmup=3, seed=3, t_max=0.5)
    whole, _ = train_diffusion(x, DiffusionTraining(steps=12, **cfg), progress=False)
    state = tmp_path / "run.resume.pt"
    train_diffusion(x, DiffusionTraining(steps=6, **cfg), progress=False, resume=state,
                    resume_every=3)                     # saved after 4 steps (epoch boundary)
    assert torch.load(state, weights_only=True)["step"] == 4
    resumed, _ = train_diffusion(x, DiffusionTraining(steps=12, **cfg), progress=False,
                                 resume=state, resume_every=3)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="another training configuration"):
        train_diffusion(x, DiffusionTraining(steps=12, **(cfg | {"seed": 4})), progress=False,
                        resume=state)


def test_an_interrupted_guidance_run_resumes_with_its_history(tmp_path):
    x, y = digits(128)
    cfg = GuidanceTraining(steps=6, batch_size=32, width=8, inner_steps=2, seed=1)
    whole, _, history = train_guidance(x, y, cfg, progress=False)
    state = tmp_path / "phi.resume.pt"
    train_guidance(x, y, GuidanceTraining(**(vars(cfg) | {"steps": 5})), progress=False,
                   resume=state, resume_every=4)
    resumed, _, resumed_history = train_guidance(x, y, cfg, progress=False, resume=state,
                                                 resume_every=4)
    assert [h["loss"] for h in resumed_history] == [h["loss"] for h in history]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_t_max_limits_the_training_times():
    seen = []

    def model(x_t, t):
        seen.append(t)
        return torch.zeros_like(x_t)

    from advpure.diffusion import VPSchedule
    eps_loss(model, torch.zeros(512, 1, 2, 2), VPSchedule(), 1e-3,
             torch.Generator().manual_seed(0), t_max=0.3)
    assert 0.001 <= float(seen[0].min()) and float(seen[0].max()) <= 0.3
    assert float(seen[0].max()) > 0.25
    with pytest.raises(ValueError, match="t_min < t_max"):
        train_diffusion(torch.rand(8, 1, 8, 8), DiffusionTraining(t_max=0.0005), progress=False)


def test_half_precision_checkpoints_halve_the_file_and_load_as_float32(tmp_path):
    model = tiny_unet()
    config = {"in_channels": 1, "base": 8, "mults": [1, 2]}
    full = save_checkpoint(model, tmp_path / "full", family="small-unet", kind="diffusion",
                           config=config)
    half = save_checkpoint(model, tmp_path / "half", family="small-unet", kind="diffusion",
                           config=config, half=True)
    size = lambda p: p.with_suffix(".safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    loaded = load_checkpoint(half, "diffusion")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    torch.testing.assert_close(loaded(x, t), model(x, t), rtol=0, atol=1e-2)


def test_eps_mse_is_one_for_a_zero_model_and_small_for_the_shipped_one():
    x, _ = data.load("digits", "test")
    zero = eps_mse(lambda x_t, t: torch.zeros_like(x_t), x)
    assert all(abs(v - 1.0) < 0.02 for v in zero.values())
    from advpure import load_diffusion
    trained = eps_mse(load_diffusion("builtin:digits-unet"), x)
    assert trained[0.2] < 0.5 * zero[0.2]
