"""CIFAR-10 / CIFAR-100 from a local directory in the standard python-pickle layout."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

LAYOUTS = {
    "cifar10": ("cifar-10-batches-py",
                {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                b"labels"),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, b"fine_labels"),
}


def layout_help(name: str) -> str:
    folder, files, _ = LAYOUTS[name]
    listed = ", ".join(files["train"] + files["test"])
    return f"a directory '{folder}' (or the root holding it) with the pickled batches {listed}"


def find_folder(name: str, root: str | Path | None) -> Path:
    """``root`` itself or ``root/<standard folder>``, whichever holds the batch files."""
    if root is None:
        raise FileNotFoundError(f"{name}: expected --data-root DIR (Python: root=DIR) pointing at {layout_help(name)}; "
                                "found no data_root (datasets are never downloaded)")
    folder, files, _ = LAYOUTS[name]
    for candidate in (Path(root), Path(root) / folder):
        if (candidate / files["test"][0]).is_file():
            return candidate
    raise FileNotFoundError(f"{name}: expected {layout_help(name)} under {root}, found none")


def read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR: expected the batch file {path}, found no such file")
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as err:
        raise ValueError(f"CIFAR: {path} is not a CIFAR python batch (a pickled dict with "
                         f"b'data' N×3072 uint8 and {label_key!r}): {err}") from err
    return data, labels


def load_cifar(name: str, split: str, root: str | Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images N×3×32×32 in [0, 1] (uint8 / 255) and int64 labels."""
    folder = find_folder(name, root)
    _, files, label_key = LAYOUTS[name]
    parts = [read_batch(folder / f, label_key) for f in files[split]]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(data).float() / 255.0, torch.from_numpy(labels)
