import pickle

import numpy as np
import pytest
import torch

import advpure
from advpure.data import fixed_subset


def test_digits_split_is_fixed_disjoint_and_in_unit_range():
    x_train, y_train = advpure.data.load("digits", "train")
    x_test, y_test = advpure.data.load("digits", "test")
    assert x_train.shape == (1438, 1, 8, 8) and x_test.shape == (359, 1, 8, 8)
    assert x_train.min() == 0 and x_train.max() == 1
    assert len(torch.unique(x_test)) == 17                          # grey levels 0..16
    assert set(y_test.tolist()) == set(range(10))
    assert torch.equal(advpure.data.load("digits", "test")[0], x_test)


def test_digits_resize():
    x, _ = advpure.data.load("digits", "test", size=32)
    assert x.shape == (359, 1, 32, 32) and 0 <= x.min() and x.max() <= 1


def test_fixed_subset_is_reproducible_and_seed_dependent():
    x, y = advpure.data.load("digits", "test")
    a = fixed_subset(x, y, 50, seed=0)
    assert torch.equal(a[2], fixed_subset(x, y, 50, seed=0)[2])
    assert not torch.equal(a[2], fixed_subset(x, y, 50, seed=1)[2])
    assert len(set(a[2].tolist())) == 50 and torch.equal(a[0], x[a[2]])
    with pytest.raises(ValueError, match="expected 0 < n <= 359, found 400"):
        fixed_subset(x, y, 400, seed=0)


def test_cifar_loader_reads_the_standard_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2, 3, 4, 5]}))
    x, y = advpure.data.load("cifar10", "train", root=tmp_path)
    assert x.shape == (25, 3, 32, 32) and y.tolist()[:5] == [1, 2, 3, 4, 5]
    assert torch.equal(x[0], torch.from_numpy(data[0].reshape(3, 32, 32)).float() / 255)


def test_cifar_subset_from_shared(shared_dir):
    root = shared_dir / "data" / "cifar10-subset"
    x, y = advpure.data.load("cifar10", "test", root=root)
    assert x.shape == (846, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    x_train, _ = advpure.data.load("cifar10", "train", root=root / "cifar-10-batches-py")
    assert len(x_train) == 4660
