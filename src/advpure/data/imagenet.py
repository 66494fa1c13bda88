"""ImageNet validation images from a local class-subfolder directory (never downloaded).

Layout: ``root/val/<wnid>/*.JPEG`` or ``root/<wnid>/*.JPEG`` (the usual ``valprep.sh`` result).
Labels follow the standard 1000-class order, which is the sorted order of all 1000 WordNet ids:
with every class folder present that is the sorted folder list; with only some present, the
order must come from a synset list beside the images (``LOC_synset_mapping.txt`` of the Kaggle
release or ``synsets.txt``, one wnid first on each line), otherwise the labels would silently
index the present folders only.

Preprocessing is the papers' (DiffPure, RobustBench): shorter side resized to 256 (bilinear),
centre crop 224, values /255. DiffPure's guided-diffusion purifier then works at 256 and
resizes 224 → 256 → 224 around the diffusion (``purifiers.Resized``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CLASSES = 1000
EXTENSIONS = (".jpeg", ".jpg", ".png")
SYNSET_LISTS = ("LOC_synset_mapping.txt", "synsets.txt")


def find_image_folder(root: str | Path | None) -> Path:
    """``root/val`` if it exists, else ``root``; it must hold class subfolders."""
    if root is None:
        raise FileNotFoundError("imagenet: expected --data-root DIR (Python: root=DIR) pointing at the validation images "
                                "in class subfolders (root/val/<wnid>/*.JPEG); found no data_root")
    for folder in (Path(root) / "val", Path(root)):
        if folder.is_dir() and any(p.is_dir() for p in folder.iterdir()):
            return folder
    raise FileNotFoundError(f"imagenet: expected class subfolders (<wnid>/*.JPEG) under {root} "
                            "or its val/, found none")


def class_order(folder: Path) -> list[str]:
    """The 1000 wnids in label order: a synset list beside the images, or all 1000 folders."""
    for directory in (folder, folder.parent):
        for name in SYNSET_LISTS:
            if (directory / name).is_file():
                lines = (directory / name).read_text().split("\n")
                return [line.split()[0] for line in lines if line.strip()]
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if len(present) != CLASSES:
        raise ValueError(f"imagenet: found {len(present)} class folders under {folder}, not "
                         f"{CLASSES}; the labels of a partial copy need the class order: put "
                         f"{' or '.join(SYNSET_LISTS)} (the 1000 wnids, one per line) beside it")
    return present


def image_files(root: str | Path | None) -> tuple[list[Path], torch.Tensor]:
    """Every image path (sorted by class, then name) and its int64 label, nothing decoded."""
    folder = find_image_folder(root)
    index = {wnid: i for i, wnid in enumerate(class_order(folder))}
    files, labels = [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if class_dir.name not in index:
            raise ValueError(f"imagenet: folder {class_dir.name!r} is not among the "
                             f"{len(index)} classes of the synset list")
        found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in EXTENSIONS)
        files += found
        labels += [index[class_dir.name]] * len(found)
    if not files:
        raise FileNotFoundError(f"imagenet: expected images ({', '.join(EXTENSIONS)}) in the "
                                f"class folders under {folder}, found none")
    return files, torch.tensor(labels, dtype=torch.long)


def preprocess(path: Path, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """RGB, shorter side to ``resize`` (bilinear), centre ``crop``, 3×crop×crop in [0, 1]."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        image = image.resize(size, Image.BILINEAR)
        w, h = image.size
        left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
        image = image.crop((left, top, left + crop, top + crop))
        array = np.asarray(image, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255.0


def load_imagenet(root: str | Path | None, indices: torch.Tensor | None = None,
                  crop: int = 224) -> tuple[torch.Tensor, torch.Tensor]:
    """Images N×3×crop×crop in [0, 1] and labels; ``indices`` decodes only those images (the
    whole validation set is 50,000 images, 30 GB as float tensors)."""
    files, labels = image_files(root)
    chosen = range(len(files)) if indices is None else [int(i) for i in indices]
    resize = round(crop * 256 / 224)
    images = [preprocess(files[i], resize, crop) for i in chosen]
    return torch.stack(images), labels[list(chosen)]
