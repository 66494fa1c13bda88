"""Datasets the public models need, on tiny synthetic copies the tests create: ImageNet
validation class folders (the papers' preprocessing, the standard class order) and SVHN .mat."""
import numpy as np
import pytest
import torch

from advpure import data
from advpure.data.imagenet import preprocess

WNIDS = ["n01440764", "n01443537", "n01484850"]     # the first three of the 1000, in order


def write_image(path, width, height, seed):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def imagenet_copy(root, classes=("n01443537", "n01484850"), synsets=True):
    """val/<wnid>/*.JPEG for some classes, with or without the synset list."""
    for c, wnid in enumerate(classes):
        (root / "val" / wnid).mkdir(parents=True)
        for i in range(2):
            write_image(root / "val" / wnid / f"ILSVRC2012_val_{c}{i}.JPEG", 300 + 40 * i, 260, c * 2 + i)
    if synsets:
        (root / "LOC_synset_mapping.txt").write_text(
            "".join(f"{w} some class name\n" for w in WNIDS))
    return root


def test_imagenet_labels_follow_the_synset_list(tmp_path):
    root = imagenet_copy(tmp_path)
    assert data.labels("imagenet", "test", root).tolist() == [1, 1, 2, 2]
    x, y = data.load("imagenet", "test", root, indices=torch.tensor([1, 2]))
    assert x.shape == (2, 3, 224, 224) and y.tolist() == [1, 2]
    assert 0 <= x.min() and x.max() <= 1
    x256, _ = data.load("imagenet", "test", root, size=256, indices=torch.tensor([0]))
    assert x256.shape == (1, 3, 256, 256)


def test_imagenet_partial_copy_without_class_order_is_an_error(tmp_path):
    root = imagenet_copy(tmp_path, synsets=False)
    with pytest.raises(ValueError, match="found 2 class folders .* not 1000"):
        data.labels("imagenet", "test", root)
    with pytest.raises(FileNotFoundError, match="class subfolders"):
        data.load("imagenet", "test", tmp_path / "val" / "n01443537")
    with pytest.raises(FileNotFoundError, match="found no data_root"):
        data.load("imagenet", "test", None)


def test_imagenet_preprocessing_is_resize_256_then_centre_crop_224(tmp_path):
    """A 448×336 image: shorter side 336 → 256 (long side 341), centre 224 crop; a picture
    whose left and right quarters differ shows where the crop sits."""
    from PIL import Image

    pixels = np.zeros((336, 448, 3), dtype=np.uint8)
    pixels[:, 224:] = 255
    Image.fromarray(pixels).save(tmp_path / "half.png")
    x = preprocess(tmp_path / "half.png")
    assert x.shape == (3, 224, 224)
    column_means = x.mean(dim=(0, 1))
    assert column_means[:100].max() < 0.01 and column_means[-100:].min() > 0.99


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    from scipy.io import savemat

    images = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": images, "y": np.array([[1], [10], [3], [10], [9]])})
    x, y = data.load("svhn", "test", tmp_path)
    assert x.shape == (5, 3, 32, 32) and y.tolist() == [1, 0, 3, 0, 9]
    assert torch.equal(x[2, 1], torch.from_numpy(images[:, :, 1, 2]).float() / 255)
    with pytest.raises(FileNotFoundError, match="train_32x32.mat"):
        data.load("svhn", "train", tmp_path)
    savemat(tmp_path / "train_32x32.mat", {"images": images})
    with pytest.raises(ValueError, match="not an SVHN .mat file"):
        data.load("svhn", "train", tmp_path)


def test_evaluate_on_imagenet_folders_with_a_resnet50_file(tmp_path):
    """The ImageNet path end to end: a full-size ResNet-50 file (random weights, torchvision
    keys) through its spec, images decoded by index, PGD at ε = 4/255 through the CLI."""
    from typer.testing import CliRunner

    from advpure.cli import app
    from advpure.models.resnet_imagenet import ResNet50

    root = imagenet_copy(tmp_path / "imagenet")
    torch.manual_seed(0)
    torch.save(ResNet50().state_dict(), tmp_path / "resnet50.pth")
    result = CliRunner().invoke(app, [
        "evaluate", "--dataset", "imagenet", "--data-root", str(root), "--n", "2",
        "--classifier", f"resnet50:{tmp_path / 'resnet50.pth'}", "--attack", "pgd",
        "--eps", str(4 / 255), "--steps", "1", "--seeds", "0", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "none vs pgd-linf" in (tmp_path / "run" / "results.md").read_text()
