"""CIFAR-10 end to end on the real images in ../shared/data/cifar10-subset (skipped without
it): the shipped CIFAR-10 models, DiffPure's standard accuracy, and the reduced-protocol table."""
import json
from pathlib import Path

import pytest
import torch

import advpure
from advpure.models.registry import WEIGHTS_DIR

EXPERIMENT = Path(__file__).parent.parent / "experiments" / "cifar10-reduced.yaml"


@pytest.fixture
def cifar_test(shared_dir):
    return advpure.data.load("cifar10", "test", root=shared_dir / "data" / "cifar10-subset")


def test_shipped_cifar10_models_are_small_and_say_how_they_were_made():
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir())
    assert total < 15 * 2**20                                   # all shipped models together
    for name in ("cifar10-unet-small", "cifar10-guidance"):
        record = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
        assert record["meta"]["command"].startswith("advpure train")
        assert (WEIGHTS_DIR / f"{name}.safetensors").stat().st_size < 10 * 2**20
    resnet = advpure.load_classifier("builtin:cifar10-resnet18")
    assert sum(p.numel() for p in resnet.parameters()) == 11_173_962


def test_the_cifar10_unet_denoises_the_test_images(cifar_test):
    from advpure.training.diffusion import eps_mse

    x, _ = cifar_test
    mse = eps_mse(advpure.load_diffusion("builtin:cifar10-unet-small"), x[:128])
    # 1.0 = predicting zero; the noise is hardest to tell from the image at small t
    assert mse[0.2] < mse[0.1] < mse[0.05] < 0.2


def test_diffpure_keeps_most_of_the_resnet18_standard_accuracy(cifar_test):
    x, y = cifar_test
    x, y = x[:64], y[:64]
    classifier = advpure.load_classifier("builtin:cifar10-resnet18")
    purifier = advpure.purifiers.DiffPure(advpure.load_diffusion("builtin:cifar10-unet-small"),
                                          t_star=0.1, dt=0.01)
    with torch.no_grad():
        purified = purifier(x, torch.Generator().manual_seed(0))
        accuracy = (classifier(purified).argmax(1) == y).float().mean()
    assert accuracy >= 0.3       # 53.5 % on all 846 images (94.1 % undefended); chance 10 %


def test_the_cifar10_guidance_classifier_is_more_robust_than_the_standard_one(cifar_test):
    from advpure.training.guidance import clean_and_robust_accuracy

    x, y = cifar_test
    phi = advpure.load_classifier("builtin:cifar10-guidance")
    standard = advpure.load_classifier("builtin:cifar10-resnet18")
    clean, robust = clean_and_robust_accuracy(phi, x[:128], y[:128], 8 / 255, steps=10)
    _, standard_robust = clean_and_robust_accuracy(standard, x[:128], y[:128], 8 / 255, steps=10)
    assert clean > 0.25 and robust > standard_robust + 0.1


@pytest.mark.slow
def test_the_reduced_cifar10_table_has_every_defense_and_says_it_is_reduced(shared_dir, tmp_path):
    """The documented table command, on fewer images to keep the test under an hour."""
    from typer.testing import CliRunner

    from advpure.cli import app

    result = CliRunner().invoke(app, [
        "table", "--config", str(EXPERIMENT), "--out", str(tmp_path),
        "--data-root", str(shared_dir / "data" / "cifar10-subset"), "--n", "8",
        "--standard-n", "16"])
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "table.json").read_text())
    assert [row["defense"].split("(")[0] for row in table["rows"]] == \
        ["none", "diffpure", "coup", "agdm", "hetero"]
    assert "Reduced protocol" in (tmp_path / "table.md").read_text()
    assert table["budget_reductions"]
