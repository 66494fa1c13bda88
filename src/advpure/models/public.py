"""Public pretrained checkpoints, loaded offline from local files and strictly checked.

A spec is ``FAMILY:PATH`` (``score_sde:/models/checkpoint_8.pth``, ``wrn-28-10:/models/Standard.pt``).
Each family is data: the kind of model, how its file layout yields (network, state dict), the
adapter to our conventions, and — for fixed architectures — the full-size factory with the
published parameter count. Every load then goes the same way: exact key set and shapes against
our implementation (a wrong file is an error that says which family it looks like, never a
model silently left with random weights: DiffPure's own loader uses ``strict=False``), the
parameter count, eval mode, frozen weights. Files are read with ``weights_only=True`` on the CPU
(EDM pickles by a restricted unpickler that executes nothing).
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapters import DiscreteTimestepEps, EDMDenoiserEps, ScoreSDEEps
from .contract import Contract, conv_channels, declare, output_classes
from .adm_unet import ADMUNet
from .edm import EDMPrecond
from .ncsnpp import NCSNpp
from .resnet_cifar import ResNet18
from .resnet_imagenet import IMAGENET_MEAN, IMAGENET_STD, ResNet50
from .safe_pickle import read_edm_pickle
from .wideresnet import WideResNet

State = dict[str, torch.Tensor]
PREFIXES = ("module.", "model.")


def _as_is(net: nn.Module, path: Path) -> nn.Module:
    return net


@dataclass(frozen=True)
class Family:
    kind: str                                            # "classifier" | "diffusion"
    what: str
    load: Callable[[Path], tuple[nn.Module, State]]      # file -> (our network, its weights)
    adapt: Callable[[nn.Module, Path], nn.Module] = _as_is   # -> our conventions
    build: Callable[[], nn.Module] | None = None         # full-size network (fixed families)
    parameters: int | None = None                        # the published parameter count


def fixed(kind: str, what: str, build: Callable[[], nn.Module], parameters: int,
          read: Callable[[Path], State] | None = None,
          adapt: Callable[[nn.Module, Path], nn.Module] = _as_is) -> Family:
    """A family of one architecture: our full-size network and the file's state dict."""
    return Family(kind, what, lambda path: (build(), (read or read_state_dict)(path)), adapt,
                  build, parameters)


# --- file layouts -------------------------------------------------------------------------------

def torch_file(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU with errors that say what went wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: expected a file, found none at {path}")
    try:
        with warnings.catch_warnings():     # torch's note on old pickle protocols: not ours
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:     # truncated, not a torch file, or code that may not be run
        detail = str(err).splitlines()[0][:200] if "weights_only" not in str(err) else \
            "it is not a plain tensor file (a pickle that would run code is never loaded)"
        raise ValueError(f"checkpoint {path}: expected a PyTorch checkpoint of tensors, found "
                         f"an unreadable file — truncated, another format, or another family's "
                         f"file ({type(err).__name__}: {detail}); check the path and the "
                         "spec's family (`advpure models` lists them)") from None


def read_state_dict(path: str | Path) -> State:
    """The tensors of a ``.pt``/``.pth`` file: ``state_dict`` unwrapped, prefixes stripped."""
    content = torch_file(path)
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not _is_state(content):
        raise ValueError(f"checkpoint {path}: expected a state dict of tensors (or one under "
                         f"'state_dict'), found {_describe(content)}{_looks_like(content)}")
    return {_strip(k): v for k, v in content.items()}


def read_training_checkpoint(path: str | Path, net: nn.Module) -> State:
    """score_sde's training layout {'model', 'ema', 'optimizer', 'step'} with the EMA weights:
    ``ema.shadow_params`` is an unnamed list in ``parameters()`` order (DiffPure runs
    ``ema.copy_to(model.parameters())`` after ``restore_checkpoint``); buffers come from
    ``model``; the optimizer state is ignored."""
    content = torch_file(path)
    ema = content.get("ema") if isinstance(content, dict) else None
    if not (isinstance(content.get("model") if isinstance(content, dict) else None, dict)
            and isinstance(ema, dict) and isinstance(ema.get("shadow_params"), list)):
        raise ValueError(f"checkpoint {path}: expected a score_sde training checkpoint (a dict "
                         f"with 'model' and 'ema' holding 'shadow_params'), found "
                         f"{_describe(content)}{_looks_like(content)}")
    names = [name for name, _ in net.named_parameters()]
    if len(ema["shadow_params"]) != len(names):
        raise ValueError(f"checkpoint {path}: expected {len(names)} EMA tensors, found "
                         f"{len(ema['shadow_params'])} (a checkpoint of another configuration?)")
    state = {_strip(k): v for k, v in content["model"].items()}
    state.update(zip(names, ema["shadow_params"]))
    return state


def read_resnet50(path: str | Path) -> State:
    """torchvision's plain state dict, or RobustBench's ``Standard_R50`` (``model.`` prefixes and
    ``normalize.mean/std`` buffers, which must be the ImageNet statistics applied inside)."""
    state = read_state_dict(path)
    for key, value in (("normalize.mean", IMAGENET_MEAN), ("normalize.std", IMAGENET_STD)):
        if key in state:
            found = state.pop(key).flatten()
            if not torch.allclose(found, torch.tensor(value), atol=1e-6):
                raise ValueError(f"checkpoint {path}: expected the ImageNet {key} {value}, "
                                 f"found {found.tolist()}")
    return state


def load_edm(path: Path) -> tuple[nn.Module, State]:
    """An EDM snapshot: the network from the constructor arguments recorded in the pickle, the
    tensors of its ``ema`` network."""
    ema = read_edm_pickle(path)["ema"]
    kwargs = dict(ema.state.get("_init_kwargs") or {})
    supported = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                     decoder_type="standard", channel_mult_noise=1, label_dim=0, use_fp16=False)
    for key, value in supported.items():
        if kwargs.pop(key, value) != value:
            raise ValueError(f"EDM pickle {path}: expected {key}={value!r} (the DDPM++ "
                             f"configuration, unconditional), found {ema.state['_init_kwargs'][key]!r}")
    sigma_data = float(ema.state.get("sigma_data", 0.5))
    net = EDMPrecond(kwargs.pop("img_resolution"), kwargs.pop("img_channels"),
                     sigma_data=sigma_data, **kwargs)
    return net, ema.tensors()


def load_diffusers(path: Path) -> tuple[nn.Module, State]:
    """A diffusers ``UNet2DModel`` directory (``config.json`` + weights, or a pipeline folder with
    ``unet/``) through ``from_pretrained`` offline; missing, unexpected or mis-shaped weights
    are an error."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")       # never reach for the model hub
    from diffusers import UNet2DModel

    folder = diffusers_unet_folder(path)
    try:
        net, info = UNet2DModel.from_pretrained(str(folder), local_files_only=True,
                                                output_loading_info=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"diffusers folder {path}: expected a UNet2DModel saved by "
                         f"save_pretrained: {str(err)[:300]}") from None
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise ValueError(f"diffusers folder {path}: the weights do not match the config: {problems}")
    return net, net.state_dict()


def diffusers_unet_folder(path: Path) -> Path:
    for folder in (path, path / "unet"):
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"diffusers: expected a folder with config.json (or unet/config.json) "
                            f"at {path}, found none")


def adapt_diffusers(net: nn.Module, path: Path) -> nn.Module:
    """Eps adapter with the prediction type of the folder's scheduler config (DDPM linear β
    1e-4..0.02 over 1000 steps required; epsilon assumed without a scheduler config)."""
    config: dict[str, Any] = {}
    for candidate in (path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json"):
        if candidate.is_file():
            config = json.loads(candidate.read_text())
    expected = dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                    num_train_timesteps=1000)
    for key, value in expected.items():
        if config.get(key, value) != value:
            raise ValueError(f"diffusers folder {path}: expected {key}={value!r} (the DDPM "
                             f"schedule of DiscreteSchedule), found {config[key]!r}")
    return DiscreteTimestepEps(net, net.config.out_channels,
                               config.get("prediction_type", "epsilon"))


# --- the registry -------------------------------------------------------------------------------

def _ncsnpp_deep() -> NCSNpp:
    return NCSNpp(32, 128, (1, 2, 2, 2), 8, (16,))


def load_score_sde(path: Path) -> tuple[nn.Module, State]:
    net = _ncsnpp_deep()
    return net, read_training_checkpoint(path, net)


def _adm_256(use_fp16: bool = False) -> ADMUNet:
    return ADMUNet(256, 256, (1, 1, 2, 2, 4, 4), 2, (32, 16, 8), 64, use_fp16=use_fp16)


FAMILIES: dict[str, Family] = {
    "wrn-28-10": fixed("classifier", "RobustBench's CIFAR-10 WideResNet-28-10 ('Standard'), "
                       "input [0, 1]", lambda: WideResNet(28, 10), 36_479_194),
    "wrn-70-16-dropout": fixed("classifier", "DiffPure's CIFAR-10 WideResNet-70-16 with "
                               "dropout, normalisation inside",
                               lambda: WideResNet(70, 16, drop_rate=0.3, normalize=True),
                               266_796_506),
    "resnet18-cifar": fixed("classifier", "the CIFAR-10 ResNet-18 of the pyautoattack examples, "
                            "input [0, 1]", ResNet18, 11_173_962),
    "resnet50": fixed("classifier", "torchvision's ImageNet ResNet-50, ImageNet normalisation "
                      "inside", ResNet50, 25_557_032, read_resnet50),
    "score_sde": Family(
        "diffusion", "score_sde NCSN++ (DDPM++ deep, continuous VP) training checkpoint, e.g. "
        "DiffPure's checkpoint_8.pth; EMA weights",
        load_score_sde, lambda net, path: ScoreSDEEps(net), _ncsnpp_deep, 106_632_579),
    "guided-diffusion": fixed(
        "diffusion", "guided-diffusion's 256x256_diffusion_uncond.pt (ADM UNet, learned "
        "variance)", _adm_256, 552_814_086,
        adapt=lambda net, path: DiscreteTimestepEps(net, 3, learned_variance=True)),
    "guided-diffusion-fp16": fixed(
        "diffusion", "256x256_diffusion_uncond.pt with the upstream fp16 trunk (use_fp16=True)",
        lambda: _adm_256(True), 552_814_086,
        adapt=lambda net, path: DiscreteTimestepEps(net, 3, learned_variance=True)),
    "diffusers": Family("diffusion", "a diffusers UNet2DModel folder (e.g. google/ddpm-cifar10-32)",
                        load_diffusers, adapt_diffusers),
    "edm": Family("diffusion", "an EDM snapshot pickle (EDMPrecond(SongUNet), DDPM++)", load_edm,
                  lambda net, path: EDMDenoiserEps(net)),
}


FIXED_SIZES = {"wrn-28-10": 32, "wrn-70-16-dropout": 32, "resnet18-cifar": 32}   # CIFAR nets


def pyautoattack_resnet18_path() -> Path:
    """The CIFAR-10 ResNet-18 checkpoint shipped inside pyautoattack (``examples/model_test.pt``)."""
    import pyautoattack

    return Path(pyautoattack.__file__).parent / "examples" / "model_test.pt"


def is_public_spec(spec: str) -> bool:
    return isinstance(spec, str) and ":" in spec and spec.split(":", 1)[0] in FAMILIES


def expected_shapes(family: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the family's full-size model, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = FAMILIES[family].build()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_public(spec: str, kind: str) -> nn.Module:
    """The model of ``FAMILY:PATH``, weights checked key by key and shape by shape, adapted to
    our conventions (classifiers: [0, 1] in, logits out; diffusion: the eps-model protocol)."""
    name, path = spec.split(":", 1)
    family, path = FAMILIES[name], Path(path)
    if family.kind != kind:
        raise ValueError(f"model spec {spec!r}: expected a {kind}, found the {family.kind} "
                         f"family {name!r} ({family.what})")
    net, state = family.load(path)
    check_weights(net, state, name, path)
    net.load_state_dict(state, strict=True)
    count = sum(p.numel() for p in net.parameters())
    if family.parameters is not None and count != family.parameters:
        raise ValueError(f"checkpoint {path}: expected {family.parameters:,} parameters for "
                         f"{name}, found {count:,}")
    model = family.adapt(net.eval(), path).eval().requires_grad_(False)
    size = FIXED_SIZES.get(name)
    return declare(model, Contract(spec, kind, conv_channels(model), size and (size, size),
                                   output_classes(model) if kind == "classifier" else None))


def check_weights(net: nn.Module, state: State, family: str, path: Path) -> None:
    """Raise unless ``state`` has exactly the keys and shapes of ``net``, naming the family
    the file looks like when another one fits."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    problems = _mismatch(expected, state)
    if problems:
        raise ValueError(f"checkpoint {path}: expected a {family} checkpoint "
                         f"({FAMILIES[family].what}); {problems}{_looks_like(state, family)}")


def _mismatch(expected: dict[str, tuple[int, ...]], state: State) -> str:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} instead of {s}" for k, s in expected.items()
              if k in state and tuple(state[k].shape) != s]
    parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})" for keys, what in
             ((missing, "missing keys"), (unexpected, "unexpected keys"),
              (shapes, "shape mismatches")) if keys]
    return "; ".join(parts)


def _looks_like(content: Any, tried: str = "") -> str:
    """'; it looks like a … checkpoint' when the content fits another family's layout."""
    if isinstance(content, dict) and {"model", "ema"} <= content.keys():
        return "; it looks like a score_sde training checkpoint (use score_sde:PATH)"
    if not _is_state(content):
        return ""
    state = {_strip(k): v for k, v in content.items()}
    for name, family in FAMILIES.items():
        if name != tried and family.build is not None and not _mismatch(expected_shapes(name), state):
            return f"; it looks like a {name} checkpoint ({family.what})"
    return ""


def _is_state(content: Any) -> bool:
    return isinstance(content, dict) and bool(content) and all(
        isinstance(v, torch.Tensor) for v in content.values())


def _describe(content: Any) -> str:
    if _is_state(content):
        return f"a state dict of {len(content)} tensors (first key {next(iter(content))!r})"
    if isinstance(content, dict):
        return f"a dict with keys {sorted(map(str, content))[:6]}"
    return type(content).__name__


def _strip(key: str) -> str:
    for prefix in PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key
