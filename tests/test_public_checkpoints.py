"""Public checkpoints: our WideResNets against the upstream fixtures in ../shared/conformance
(skipped without it), strict loading and errors that name the expected family."""
import json

import pytest
import torch

from advpure.models import load_classifier, load_diffusion
from advpure.models.public import FAMILIES, expected_shapes
from advpure.models.wideresnet import WideResNet

WRN_FIXTURES = {  # family -> (fixture folder, small checkpoint files, small model)
    "wrn-28-10": ("robustbench_wrn", ["wrn_small_plain.pt", "wrn_small_wrapped.pt"],
                  dict(drop_rate=0.0, normalize=False)),
    "wrn-70-16-dropout": ("diffpure_wrn70_16_dropout", ["wrn_small_module_prefixed.pt"],
                          dict(drop_rate=0.3, normalize=True)),
}


MANIFESTS = {family: entry[0] for family, entry in WRN_FIXTURES.items()} | \
    {"resnet50": "torchvision_resnet50"}


@pytest.mark.parametrize("family", list(MANIFESTS))
def test_full_size_model_matches_the_upstream_manifest(shared_dir, family):
    folder = MANIFESTS[family]
    manifest = json.loads((shared_dir / "conformance" / folder / "manifest_full.json").read_text())
    assert expected_shapes(family) == {e["name"]: tuple(e["shape"]) for e in manifest["entries"]}
    assert FAMILIES[family].parameters == manifest["total_parameters"]
    with torch.device("meta"):
        model = FAMILIES[family].build()
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters"]


@pytest.mark.parametrize("family", list(WRN_FIXTURES))
def test_small_checkpoints_reproduce_the_upstream_logits(shared_dir, family):
    from safetensors.torch import load_file

    from advpure.models.public import read_state_dict

    folder, files, options = WRN_FIXTURES[family]
    io = load_file(str(shared_dir / "conformance" / folder / "io.safetensors"))
    for name in files:
        model = WideResNet(10, 2, **options).eval()
        model.load_state_dict(read_state_dict(shared_dir / "conformance" / folder / name))
        with torch.no_grad():
            torch.testing.assert_close(model(io["x"]), io["logits"], rtol=1e-4, atol=1e-4)


def test_a_wrong_file_names_what_was_expected(tmp_path):
    small = WideResNet(10, 2)
    torch.save({"state_dict": {"module." + k: v for k, v in small.state_dict().items()}},
               tmp_path / "small.pt")
    with pytest.raises(ValueError, match="expected a wrn-28-10 checkpoint .* shape mismatches"):
        load_classifier(f"wrn-28-10:{tmp_path / 'small.pt'}")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "small.pt").read_bytes()[:500])
    with pytest.raises(ValueError, match="expected a PyTorch checkpoint of tensors, found an unreadable file"):
        load_classifier(f"wrn-28-10:{tmp_path / 'truncated.pt'}")
    with pytest.raises(ValueError, match="expected a diffusion, found the classifier family"):
        load_diffusion(f"wrn-28-10:{tmp_path / 'small.pt'}")
    torch.save({"weights": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="expected a state dict of tensors"):
        load_classifier(f"wrn-28-10:{tmp_path / 'other.pt'}")
    with pytest.raises(FileNotFoundError, match="found none at"):
        load_classifier(f"wrn-28-10:{tmp_path / 'absent.pt'}")


def test_the_pyautoattack_resnet18_classifies_the_cifar10_subset(shared_dir):
    from advpure import data
    from advpure.models.public import pyautoattack_resnet18_path

    model = load_classifier(f"resnet18-cifar:{pyautoattack_resnet18_path()}")
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    x, y = data.load("cifar10", "test", root=shared_dir / "data" / "cifar10-subset")
    with torch.no_grad():
        predicted = torch.cat([model(x[i:i + 128]).argmax(1) for i in range(0, len(y), 128)])
    assert len(y) == 846 and int((predicted == y).sum()) == 796          # 94.09 %


def test_resnet50_reads_torchvision_and_robustbench_layouts(tmp_path):
    """torchvision's plain keys, or RobustBench's Standard_R50 (``model.`` prefixes and the
    ImageNet normalisation as ``normalize.*`` buffers); other statistics are refused."""
    from advpure.models.public import read_resnet50
    from advpure.models.resnet_imagenet import IMAGENET_MEAN, IMAGENET_STD, ResNet50

    net = ResNet50(layers=(1, 1, 1, 1), num_classes=5).eval()
    torch.save(net.state_dict(), tmp_path / "plain.pth")
    wrapped = {"model." + k: v for k, v in net.state_dict().items()}
    wrapped |= {"normalize.mean": torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                "normalize.std": torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)}
    torch.save(wrapped, tmp_path / "robustbench.pt")
    assert read_resnet50(tmp_path / "plain.pth").keys() == read_resnet50(
        tmp_path / "robustbench.pt").keys() == net.state_dict().keys()
    wrapped["normalize.mean"] = torch.zeros(1, 3, 1, 1)
    torch.save(wrapped, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="expected the ImageNet normalize.mean"):
        read_resnet50(tmp_path / "other.pt")
    x = torch.rand(2, 3, 64, 64)
    manual = ResNet50(layers=(1, 1, 1, 1), num_classes=5, normalize=False).eval()
    manual.load_state_dict(net.state_dict())
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(net(x), manual((x - mean) / std))


def test_evaluate_runs_a_public_classifier_spec_on_cifar10(shared_dir, tmp_path):
    """The CLI with a FAMILY:PATH spec on real CIFAR-10 images: PGD breaks the undefended
    ResNet-18; the robust subset and the standard set are decoded by index only."""
    from typer.testing import CliRunner

    from advpure.cli import app
    from advpure.models.public import pyautoattack_resnet18_path

    result = CliRunner().invoke(app, [
        "evaluate", "--dataset", "cifar10", "--data-root",
        str(shared_dir / "data" / "cifar10-subset"),
        "--classifier", f"resnet18-cifar:{pyautoattack_resnet18_path()}", "--attack", "pgd",
        "--eps", str(8 / 255), "--steps", "5", "--n", "8", "--standard-n", "32", "--seeds", "0",
        "--save-adversarial", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    text = json.dumps(summary)
    assert "resnet18-cifar:" in text and (tmp_path / "run" / "grid.png").is_file()
    assert "| 0.0 % |" in (tmp_path / "run" / "results.md").read_text()
