import json

import pytest
import torch

import advpure
from advpure.models import SmallUNet, load_checkpoint, save_checkpoint
from conftest import tiny_unet


def test_checkpoint_round_trip(tmp_path):
    model = tiny_unet()
    path = save_checkpoint(model, tmp_path / "unet", family="small-unet", kind="diffusion",
                           config={"in_channels": 1, "base": 8, "mults": [1, 2]})
    loaded = load_checkpoint(path, "diffusion")
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    assert torch.equal(loaded(x, t), model(x, t))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_builtin_models_load_and_say_how_they_were_made():
    clf = advpure.load_classifier("builtin:digits-cnn")
    dm = advpure.load_diffusion("builtin:digits-unet")
    x, _ = advpure.data.load("digits", "test")
    assert clf(x[:4]).shape == (4, 10)
    assert dm(2 * x[:4] - 1, torch.full((4,), 0.1)).shape == (4, 1, 8, 8)
    for name in ("digits-cnn", "digits-unet"):
        meta = json.loads((advpure.models.registry.WEIGHTS_DIR / f"{name}.json").read_text())["meta"]
        assert meta["command"].startswith("advpure train")


def test_a_purifier_accepts_any_eps_model_following_the_protocol():
    class ZeroEps(torch.nn.Module):
        def forward(self, x_t, t):
            return torch.zeros_like(x_t)

    x = torch.rand(2, 3, 4, 4)
    out = advpure.purifiers.DiffPure(ZeroEps(), t_star=0.05, dt=0.01)(x, torch.Generator())
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1


def test_unet_is_time_conditioned():
    model = SmallUNet(in_channels=1, base=8, mults=(1, 2))
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(model(x, torch.full((2,), 0.1)), model(x, torch.full((2,), 0.9)))


def test_diffpure_runs_the_sampler_it_is_given(digits_batch):
    x, _ = digits_batch
    outputs = {name: advpure.purifiers.DiffPure(tiny_unet(), dt=0.025, sampler=name)(
        x, torch.Generator().manual_seed(0)) for name in advpure.diffusion.SAMPLERS}
    for name, out in outputs.items():
        assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1, name
        assert not any(torch.allclose(out, other) for o, other in outputs.items() if o != name)
    with pytest.raises(ValueError, match="sampler: expected 'sde', 'ode', 'ld', 'ddpm' or "
                                         "'ddim', found 'magic'"):
        advpure.purifiers.DiffPure(tiny_unet(), sampler="magic")
