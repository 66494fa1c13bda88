"""Public diffusion checkpoints: our NCSN++, ADM UNet and EDM networks against the upstream
fixtures in ../shared/conformance (skipped without it), the eps adapters, the diffusers round
trip, the restricted EDM unpickler, and DiffPure end to end on a score_sde fixture."""
import json
import pickle
import re

import pytest
import torch

from advpure.diffusion import DiscreteSchedule, VPSchedule, add_noise, score
from advpure.models import load_diffusion
from advpure.models.adapters import DiscreteTimestepEps, EDMDenoiserEps, ScoreSDEEps
from advpure.models.adm_unet import ADMUNet
from advpure.models.ncsnpp import NCSNpp
from advpure.models.public import FAMILIES, check_weights, expected_shapes, read_training_checkpoint
from advpure.models.safe_pickle import read_edm_pickle

MANIFESTS = {"score_sde": "score_sde_ncsnpp", "guided-diffusion": "guided_diffusion_unet",
             "guided-diffusion-fp16": "guided_diffusion_unet"}


def fixture(shared_dir, folder: str, name: str):
    return shared_dir / "conformance" / folder / name


def io_tensors(shared_dir, folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(fixture(shared_dir, folder, "io.safetensors")))


def small_ncsnpp(shared_dir) -> NCSNpp:
    """The score_sde fixture's small NCSN++ with its EMA weights, through our reader."""
    net = NCSNpp(16, 16, (1, 2), 1, (8,))
    path = fixture(shared_dir, "score_sde_ncsnpp", "checkpoint_small.pth")
    state = read_training_checkpoint(path, net)
    check_weights(net, state, "score_sde", path)
    net.load_state_dict(state)
    return net.eval()


@pytest.mark.parametrize("family", list(MANIFESTS))
def test_full_size_diffusion_models_match_the_upstream_manifests(shared_dir, family):
    manifest = json.loads(fixture(shared_dir, MANIFESTS[family], "manifest_full.json").read_text())
    names = [e["name"] for e in manifest["entries"]]
    shapes = expected_shapes(family)
    assert list(shapes) == names                                 # same keys, same order
    assert shapes == {e["name"]: tuple(e["shape"]) for e in manifest["entries"]}
    assert FAMILIES[family].parameters == manifest["total_parameters"]
    with torch.device("meta"):
        net = FAMILIES[family].build()
    assert sum(p.numel() for p in net.parameters()) == manifest["total_parameters"]
    if family == "score_sde":      # the EMA list follows parameters(), = state_dict minus sigmas
        assert [n for n, _ in net.named_parameters()] == [n for n in names if n != "sigmas"]


def test_score_sde_fixture_reproduces_output_and_score(shared_dir):
    io = io_tensors(shared_dir, "score_sde_ncsnpp")
    eps_model = ScoreSDEEps(small_ncsnpp(shared_dir))
    with torch.no_grad():
        torch.testing.assert_close(eps_model(io["x"], io["t"]), io["model_output"],
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(score(eps_model, io["x"], io["t"], VPSchedule()), io["score"],
                                   rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(VPSchedule().sigma(io["t"]).float(), io["std"])
        torch.testing.assert_close((io["t"] * 999), io["labels"])


def test_score_sde_uses_the_ema_weights_not_the_training_ones(shared_dir):
    path = fixture(shared_dir, "score_sde_ncsnpp", "checkpoint_small.pth")
    raw = torch.load(path, weights_only=True, map_location="cpu")
    net = NCSNpp(16, 16, (1, 2), 1, (8,)).eval()
    net.load_state_dict({k.removeprefix("module."): v for k, v in raw["model"].items()})
    io = io_tensors(shared_dir, "score_sde_ncsnpp")
    with torch.no_grad():
        training_weights = net(io["x"], io["labels"])
    assert (training_weights - io["model_output"]).abs().max() > 1.0


def test_guided_diffusion_fixture_reproduces_output_and_eps(shared_dir):
    io = io_tensors(shared_dir, "guided_diffusion_unet")
    net = ADMUNet(32, 32, (1, 2), 1, (16,), 16).eval()
    state = torch.load(fixture(shared_dir, "guided_diffusion_unet", "unet_small.pt"),
                       weights_only=True, map_location="cpu")
    net.load_state_dict(state)
    eps_model = DiscreteTimestepEps(net, 3, learned_variance=True)
    t = (io["timesteps"] + 1).double() / 1000              # level n = timestep index + 1
    assert eps_model.timesteps(t).tolist() == io["timesteps"].tolist()
    with torch.no_grad():
        torch.testing.assert_close(net(io["x"], io["timesteps"]), io["output"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(eps_model(io["x"], t), io["eps"], rtol=1e-4, atol=1e-4)
        eps, values = eps_model.eps_and_variance(io["x"], t)     # the learn_sigma channels
        torch.testing.assert_close(eps, io["eps"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(values, io["output"][:, 3:], rtol=1e-4, atol=1e-4)
        net.convert_to_fp16()                              # the upstream fp16 trunk, on CPU
        half = eps_model(io["x"], t)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, io["eps"], rtol=0.0, atol=0.05)


def test_edm_pickle_is_read_without_code_and_reproduces_the_denoiser(shared_dir):
    io = io_tensors(shared_dir, "edm_songunet")
    path = fixture(shared_dir, "edm_songunet", "edm_small.pkl")
    manifest = json.loads(fixture(shared_dir, "edm_songunet", "manifest_small.json").read_text())
    tensors = read_edm_pickle(path)["ema"].tensors()
    assert {k: tuple(v.shape) for k, v in tensors.items()} == \
        {e["name"]: tuple(e["shape"]) for e in manifest["entries"]}
    eps_model = load_diffusion(f"edm:{path}")
    assert isinstance(eps_model, EDMDenoiserEps)
    assert sum(p.numel() for p in eps_model.parameters()) == manifest["total_parameters"]
    with torch.no_grad():
        torch.testing.assert_close(eps_model.net(io["x"], io["sigma"]), io["denoised"],
                                   rtol=1e-4, atol=1e-4)
        sigma = io["sigma"].view(-1, 1, 1, 1)
        f_x = eps_model.net.model(io["x"] / (sigma ** 2 + 0.25).sqrt(), io["sigma"].log() / 4)
        torch.testing.assert_close(f_x, io["F_x"], rtol=1e-4, atol=1e-4)


def test_edm_adapter_converts_the_denoiser_to_vp_eps():
    """With a perfect denoiser (it knows x0), the adapter returns the exact VP noise."""
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 3, 4, 4, generator=gen), torch.randn(3, 3, 4, 4, generator=gen)
    t = torch.tensor([0.05, 0.3, 0.8], dtype=torch.float64)
    vp = VPSchedule()
    x_t = add_noise(x0, t, eps, vp)
    oracle = EDMDenoiserEps(lambda x, sigma: x0, vp)
    torch.testing.assert_close(oracle(x_t, t), eps, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_discrete_adapter_converts_each_prediction_type_to_eps(prediction):
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    levels = DiscreteSchedule()
    t = torch.tensor([0.05, 0.5], dtype=torch.float64)
    a = levels.alpha_bar(t).float().view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    target = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0,
              "sample": x0}[prediction]
    seen = []
    adapter = DiscreteTimestepEps(lambda x, steps: seen.append(steps) or target, 3, prediction)
    torch.testing.assert_close(adapter(x_t, t), eps, rtol=1e-4, atol=1e-4)
    assert seen[0].tolist() == [49, 499]
    assert adapter.timesteps(torch.tensor([0.0, 1e-3, 1.0])).tolist() == [0, 0, 999]


def small_diffusers_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, block_out_channels=(16, 32), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                       attention_head_dim=8).eval()


def test_diffusers_round_trip_gives_identical_eps(tmp_path):
    pytest.importorskip("diffusers")
    net = small_diffusers_unet()
    net.save_pretrained(tmp_path / "unet")                      # a pipeline-style folder
    eps_model = load_diffusion(f"diffusers:{tmp_path}")
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.05, 0.6], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(eps_model(x, t), net(x, torch.tensor([49, 599])).sample)
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    config["layers_per_block"] = 2                               # weights of another config
    (tmp_path / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="diffusers folder .*(do not match|expected a UNet2DModel)"):
        load_diffusion(f"diffusers:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="expected a folder with config.json"):
        load_diffusion(f"diffusers:{tmp_path / 'absent'}")


def test_diffusers_scheduler_config_sets_the_prediction_type(tmp_path):
    pytest.importorskip("diffusers")
    small_diffusers_unet().save_pretrained(tmp_path)
    (tmp_path / "scheduler_config.json").write_text(json.dumps(
        {"prediction_type": "v_prediction", "beta_schedule": "linear"}))
    assert load_diffusion(f"diffusers:{tmp_path}").prediction == "v_prediction"
    (tmp_path / "scheduler_config.json").write_text(json.dumps(
        {"beta_schedule": "squaredcos_cap_v2"}))
    with pytest.raises(ValueError, match="expected beta_schedule='linear'"):
        load_diffusion(f"diffusers:{tmp_path}")


class Exploit:
    def __reduce__(self):
        import os
        return os.system, ("touch advpure-pwned",)


def test_the_edm_unpickler_refuses_and_never_runs_other_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"ema": Exploit()}))
    with pytest.raises(ValueError, match="refusing to load (posix|os|nt).system"):
        load_diffusion(f"edm:{tmp_path / 'evil.pkl'}")
    assert not (tmp_path / "advpure-pwned").exists()
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"weights": [1.0]}))
    with pytest.raises(ValueError, match="expected a dict with an 'ema' network"):
        load_diffusion(f"edm:{tmp_path / 'dict.pkl'}")


def test_wrong_diffusion_files_name_what_was_expected(shared_dir, tmp_path):
    score_sde = fixture(shared_dir, "score_sde_ncsnpp", "checkpoint_small.pth")
    with pytest.raises(ValueError, match="expected 956 EMA tensors, found 154"):
        load_diffusion(f"score_sde:{score_sde}")                # the small config's checkpoint
    classifier = fixture(shared_dir, "robustbench_wrn", "wrn_small_plain.pt")
    with pytest.raises(ValueError, match="expected a score_sde training checkpoint"):
        load_diffusion(f"score_sde:{classifier}")
    with pytest.raises(ValueError, match="found a torch.save zip archive"):
        load_diffusion(f"edm:{score_sde}")
    (tmp_path / "cut.pth").write_bytes(score_sde.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="expected a PyTorch checkpoint of tensors, found an unreadable file"):
        load_diffusion(f"score_sde:{tmp_path / 'cut.pth'}")
    (tmp_path / "cut.pkl").write_bytes(
        fixture(shared_dir, "edm_songunet", "edm_small.pkl").read_bytes()[:100_000])
    with pytest.raises(ValueError, match="could not be read as an EDM network pickle"):
        load_diffusion(f"edm:{tmp_path / 'cut.pkl'}")
    with pytest.raises(ValueError, match="guided-diffusion checkpoint .* missing keys"):
        load_diffusion(f"guided-diffusion:{classifier}")
    with pytest.raises(ValueError, match="it looks like a score_sde training checkpoint"):
        from advpure.models import load_classifier
        load_classifier(f"wrn-28-10:{score_sde}")


def test_diffpure_runs_end_to_end_on_the_score_sde_and_classifier_fixtures(shared_dir):
    """DiffPure with the small NCSN++ fixture at its 16×16 resolution, CIFAR-10 images at 32×32
    (Resized), the small RobustBench WRN fixture as classifier; gradients reach the input."""
    from advpure import data
    from advpure.defense import PurifiedClassifier
    from advpure.models.public import read_state_dict
    from advpure.models.wideresnet import WideResNet
    from advpure.purifiers import DiffPure, Resized

    classifier = WideResNet(10, 2).eval()
    classifier.load_state_dict(read_state_dict(fixture(shared_dir, "robustbench_wrn",
                                                       "wrn_small_wrapped.pt")))
    x, _ = data.load("cifar10", "test", root=shared_dir / "data" / "cifar10-subset",
                     indices=torch.arange(4))
    purifier = Resized(DiffPure(ScoreSDEEps(small_ncsnpp(shared_dir)), t_star=0.1, dt=0.02), 16)
    defense = PurifiedClassifier(purifier, classifier, torch.Generator().manual_seed(0))
    x = x.clone().requires_grad_(True)
    logits = defense(x)
    logits.sum().backward()
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    assert x.grad.abs().sum() > 0
    purified = purifier(x.detach(), torch.Generator().manual_seed(1))
    assert purified.shape == x.shape and 0 <= purified.min() and purified.max() <= 1
    assert 0 < (purified - x.detach()).abs().mean() < 0.5


def test_the_models_command_lists_the_families_and_checks_a_file(shared_dir):
    from typer.testing import CliRunner

    from advpure.cli import app

    listing = CliRunner().invoke(app, ["models"])
    assert listing.exit_code == 0
    for family in FAMILIES:
        assert f"{family}:PATH" in listing.output
    edm = fixture(shared_dir, "edm_songunet", "edm_small.pkl")
    checked = CliRunner().invoke(app, ["models", "builtin:digits-cnn", f"edm:{edm}"])
    assert checked.exit_code == 0, checked.output
    assert "317,843 parameters, EDMDenoiserEps" in checked.output
    wrong = CliRunner().invoke(app, ["models", f"score_sde:{edm}"])
    message = re.sub(r"[│╭╮╰╯─\s]+", " ", wrong.output)
    assert wrong.exit_code == 2 and "expected a PyTorch checkpoint of tensors, found an unreadable file" in message
