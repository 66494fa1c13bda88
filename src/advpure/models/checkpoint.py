"""Checkpoints of the project's own models: ``<stem>.safetensors`` (weights) + ``<stem>.json``.

The JSON holds the model family, its constructor arguments and how it was trained, so a
checkpoint rebuilds its model without any code outside this package.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .contract import Contract, declare
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
    try:
        record = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint {config_path}: expected JSON (family, kind, config), "
                         f"found unreadable text ({err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ValueError(f"checkpoint {config_path}: expected a JSON object with family, kind "
                         "and config (a mapping)")
    if record.get("family") not in FAMILIES or record.get("kind") not in KINDS:
        raise ValueError(f"checkpoint {config_path}: expected family in {sorted(FAMILIES)} and "
                         f"kind in {KINDS}, found {record.get('family')!r}, {record.get('kind')!r}")
    return record


def load_checkpoint(path: str | Path, kind: str, spec: str | None = None) -> nn.Module:
    """Rebuild the model, load its weights strictly, return it in eval mode, frozen weights,
    held to its ``Contract`` (named ``spec``, default the path)."""
    record = read_checkpoint_config(path)
    if record["kind"] != kind:
        raise ValueError(f"checkpoint {path}: expected a {kind} checkpoint, found a "
                         f"{record['kind']} one")
    model = build_model(record, path)
    state = read_weights(checkpoint_paths(path)[0])
    check_state_dict(model, state, str(path))
    model.load_state_dict(state)
    return declare(model.eval().requires_grad_(False), checkpoint_contract(record, spec or str(path)))


def checkpoint_contract(record: dict[str, Any], spec: str) -> Contract:
    """What a checkpoint's model takes: its channels, the size of its training data's images
    (``meta.dataset``) and its classes."""
    from ..data.profiles import PROFILES

    config, dataset = record["config"], record.get("meta", {}).get("dataset")
    size = PROFILES[dataset].shape[1:] if dataset in PROFILES else None
    return Contract(spec, record["kind"], config.get("in_channels", 1), size,
                    config.get("num_classes", 10) if record["kind"] == "classifier" else None)


def build_model(record: dict[str, Any], path: str | Path) -> nn.Module:
    """The network a checkpoint's JSON describes; a ValueError where its config does not fit
    the family's constructor."""
    family = FAMILIES[record["family"]]
    try:
        return family(**record["config"])
    except (TypeError, ValueError) as err:
        params = [p for p in inspect.signature(family).parameters if p != "self"]
        raise ValueError(f"checkpoint {checkpoint_paths(path)[1]}: expected a {record['family']} "
                         f"config with fields among {', '.join(params)}, found "
                         f"{record['config']!r} ({err})") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The float32 tensors of a safetensors file; a ValueError naming a truncated or corrupt
    file."""
    try:
        state = load_file(str(path))
    except Exception as err:                   # safetensors raises its own error types
        raise ValueError(f"checkpoint {path}: expected a safetensors file (as advpure train "
                         f"writes), found an unreadable one — truncated or corrupt? ({err}); "
                         "copy or train it again") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


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
