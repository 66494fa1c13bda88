"""Checkpoints of the project's own models: ``<stem>.safetensors`` (weights) + ``<stem>.json``.

The JSON holds the model family, its constructor arguments and how it was trained, so a
checkpoint rebuilds its model without any code outside this package.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .small_cnn import SmallCNN
from .small_unet import SmallUNet

FAMILIES: dict[str, type[nn.Module]] = {"small-cnn": SmallCNN, "small-unet": SmallUNet}
KINDS = ("classifier", "diffusion")


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, config) paths for a checkpoint given as its stem, .json or .safetensors path."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_checkpoint(model: nn.Module, path: str | Path, *, family: str, kind: str,
                    config: dict[str, Any], meta: dict[str, Any] | None = None,
                    half: bool = False) -> Path:
    """Write weights and config; returns the JSON path. ``half`` stores floating-point weights
    as float16 (half the file; ``load_checkpoint`` returns float32 weights either way)."""
    weights_path, config_path = checkpoint_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(weights_path))
    record = {"family": family, "kind": kind, "config": config, "meta": meta or {}}
    config_path.write_text(json.dumps(record, indent=2) + "\n")
    return config_path


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    weights_path, config_path = checkpoint_paths(path)
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint: expected {p} (a checkpoint is <stem>.json with "
                                    "<stem>.safetensors beside it), found no such file")
    record = json.loads(config_path.read_text())
    if record.get("family") not in FAMILIES or record.get("kind") not in KINDS:
        raise ValueError(f"checkpoint {config_path}: expected family in {sorted(FAMILIES)} and "
                         f"kind in {KINDS}, found {record.get('family')!r}, {record.get('kind')!r}")
    return record


def load_checkpoint(path: str | Path, kind: str) -> nn.Module:
    """Rebuild the model, load its weights strictly, return it in eval mode, frozen weights."""
    record = read_checkpoint_config(path)
    if record["kind"] != kind:
        raise ValueError(f"checkpoint {path}: expected a {kind} checkpoint, found a "
                         f"{record['kind']} one")
    model = FAMILIES[record["family"]](**record["config"])
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in load_file(str(checkpoint_paths(path)[0])).items()}
    check_state_dict(model, state, str(path))
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise naming the missing, unexpected and mis-shaped keys, if any."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    shapes = [f"{k}: expected {expected[k]}, found {found[k]}"
              for k in sorted(expected.keys() & found.keys()) if expected[k] != found[k]]
    if missing or unexpected or shapes:
        raise ValueError(f"checkpoint {where} does not match its model: missing keys {missing[:5]}, "
                         f"unexpected keys {unexpected[:5]}, shape mismatches {shapes[:5]}")
