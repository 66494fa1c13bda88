"""Every bad input raises an error that says what was expected and what was found."""
import json
import pickle

import pytest
import torch
from typer.testing import CliRunner

import advpure
from advpure import PurifiedClassifier
from advpure.attacks import pgd
from advpure.cli import app
from advpure.models import SmallCNN, save_checkpoint
from advpure.purifiers import DiffPure
from conftest import tiny_cnn, tiny_unet

GOOD = torch.rand(2, 1, 8, 8)
BAD_IMAGES = {
    "not a tensor": ([[0.5]], "found list"),
    "wrong shape": (torch.rand(1, 8, 8), "found shape (1, 8, 8)"),
    "int dtype": (torch.ones(2, 1, 8, 8, dtype=torch.uint8), "found dtype torch.uint8"),
    "nan": (torch.full((2, 1, 8, 8), float("nan")), "found NaN"),
    "above one": (GOOD * 255, "values in [0, 1], found .* outside, min"),
    "below zero": (GOOD - 0.5, "values in [0, 1], found .* outside, min"),
}
ENTRY_POINTS = {
    "purifier": lambda x: DiffPure(tiny_unet(), dt=0.05)(x, torch.Generator()),
    "defense": lambda x: PurifiedClassifier(DiffPure(tiny_unet(), dt=0.05), tiny_cnn())(x),
    "pgd": lambda x: pgd(tiny_cnn(), x, torch.zeros(2, dtype=torch.long), eps=0.1, steps=1),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_images_are_rejected_at_every_entry_point(entry, case):
    x, message = BAD_IMAGES[case]
    with pytest.raises((TypeError, ValueError), match="expected .*" + message.replace("[", r"\[")
                       .replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        ENTRY_POINTS[entry](x)


@pytest.mark.parametrize("kwargs,message", [
    (dict(eps=-1.0), "eps: expected a positive number, found -1.0"),
    (dict(eps=0.1, norm="l3"), "norm: expected one of linf, l2, found 'l3'"),
    (dict(eps=0.1, steps=0), "expected integer steps >= 1"),
])
def test_bad_attack_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pgd(tiny_cnn(), GOOD, torch.zeros(2, dtype=torch.long), **kwargs)


def test_bad_labels():
    with pytest.raises(ValueError, match="expected 2 labels .* found 3"):
        pgd(tiny_cnn(), GOOD, torch.zeros(3, dtype=torch.long), eps=0.1)
    with pytest.raises(TypeError, match="int64 tensor, found dtype torch.float32"):
        pgd(tiny_cnn(), GOOD, torch.zeros(2), eps=0.1)


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="dataset: expected one of digits, cifar10, cifar100, svhn, imagenet, found 'mnist'"):
        advpure.data.load("mnist")
    with pytest.raises(ValueError, match="split: expected one of train, test, found 'val'"):
        advpure.data.load("digits", "val")


def test_missing_and_malformed_cifar_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a directory 'cifar-10-batches-py'"):
        advpure.data.load("cifar10", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="found no data_root"):
        advpure.data.load("cifar10")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"nothing": 1}))
    with pytest.raises(ValueError, match="is not a CIFAR python batch"):
        advpure.data.load("cifar10", "test", root=tmp_path)


def test_unknown_builtin_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="expected a builtin classifier among builtin:cifar10-resnet18, "
                       "builtin:cifar10-guidance, builtin:digits-cnn, builtin:digits-guidance, "
                       "found 'resnet'"):
        advpure.load_classifier("builtin:resnet")
    with pytest.raises(ValueError, match="expected a diffusion model, found a classifier .*give it as "
                       "--classifier, and one of builtin:cifar10-unet-small, builtin:digits-unet"):
        advpure.load_diffusion("builtin:digits-cnn")
    with pytest.raises(FileNotFoundError, match="expected .*nope.json"):
        advpure.load_classifier(str(tmp_path / "nope"))


def test_mismatched_checkpoint(tmp_path):
    path = save_checkpoint(SmallCNN(width=4), tmp_path / "clf", family="small-cnn",
                           kind="classifier", config={"width": 4})
    record = json.loads(path.read_text())
    record["config"]["width"] = 8
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"shape mismatches \['features.0.bias: expected \(8,\), found \(4,\)"):
        advpure.load_classifier(str(path))
    with pytest.raises(ValueError, match="expected a diffusion checkpoint, found a classifier one"):
        advpure.load_diffusion(str(path))


def test_cli_rejects_unknown_defense_name():
    result = CliRunner().invoke(app, ["evaluate", "--defense", "magic"])
    assert result.exit_code != 0
    output = " ".join(result.output.replace("│", " ").split())
    assert ("defense: expected a purifier name among none, diffpure, coup, agdm, hetero, gdmp, "
            "lm, found 'magic'") in output
