"""``advpure train``: the classifier, the eps-model and AGDM's robust guidance classifier."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from .app import command_line, train_app
from .options import parse_list


@train_app.command("classifier")
def train_classifier_cmd(
    out: Path = typer.Option(..., help="checkpoint stem: writes <out>.safetensors and <out>.json"),
    dataset: str = typer.Option("digits", help="digits | cifar10 | cifar100"),
    data_root: Path = typer.Option(None, help="directory of a local CIFAR copy"),
    steps: int = typer.Option(3000, help="optimizer steps"),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(1e-3),
    width: int = typer.Option(32, help="SmallCNN width"),
    seed: int = typer.Option(0),
) -> None:
    """Train the SmallCNN classifier (EMA weights) and report its test accuracy."""
    import torch

    from .. import data
    from ..models import save_checkpoint
    from ..training import ClassifierTraining, train_classifier

    cfg = ClassifierTraining(steps=steps, batch_size=batch_size, lr=lr, width=width, seed=seed)
    x, y = data.load(dataset, "train", root=data_root)
    model, config = train_classifier(x, y, cfg)
    x_test, y_test = data.load(dataset, "test", root=data_root)
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    meta = {"dataset": dataset, "training": vars(cfg), "test_accuracy": acc,
            "command": command_line()}
    path = save_checkpoint(model, out, family="small-cnn", kind="classifier", config=config, meta=meta)
    typer.echo(f"test accuracy {acc:.2%}; wrote {path}")


@train_app.command("diffusion")
def train_diffusion_cmd(
    out: Path = typer.Option(..., help="checkpoint stem: writes <out>.safetensors and <out>.json"),
    dataset: str = typer.Option("digits", help="digits | cifar10 | cifar100 | svhn"),
    data_root: Path = typer.Option(None, "--data-root",
                                   help="directory of a local dataset copy"),
    steps: int = typer.Option(8000, help="optimizer steps"),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(2e-3),
    warmup: int = typer.Option(500, help="linear learning-rate warm-up steps"),
    ema_decay: float = typer.Option(0.999, help="EMA decay of the saved weights"),
    t_max: float = typer.Option(1.0, help="train only t ≤ t_max, the noise levels purification "
                                "visits (e.g. 0.3 for t* ≤ 0.3)"),
    base: int = typer.Option(32, help="SmallUNet base width"),
    mults: str = typer.Option("1,2,2", help="SmallUNet width multipliers, one level each"),
    half: bool = typer.Option(False, help="store the weights in float16 (half the size; "
                              "loaded back as float32)"),
    resume_every: int = typer.Option(500, help="save the training state every this many steps "
                                     "(whole epochs) to <out>.resume.pt; rerunning continues"),
    seed: int = typer.Option(0),
) -> None:
    """Train the SmallUNet eps-model on the continuous VP schedule (EMA weights); an interrupted
    run continues from <out>.resume.pt when started again with the same command."""
    from .. import data
    from ..models import save_checkpoint
    from ..training import DiffusionTraining, train_diffusion
    from ..training.diffusion import eps_mse

    cfg = DiffusionTraining(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
                            ema_decay=ema_decay, t_max=t_max, base=base,
                            mults=parse_list(mults, int), seed=seed)
    x, _ = data.load(dataset, "train", root=data_root)
    resume = Path(f"{out}.resume.pt")
    began = time.perf_counter()
    model, config = train_diffusion(x, cfg, resume=resume, resume_every=resume_every)
    x_test, _ = data.load(dataset, "test", root=data_root)
    mse = eps_mse(model, x_test)
    meta = {"dataset": dataset, "training": vars(cfg), "schedule": "VP beta_min=0.1 beta_max=20",
            "test_eps_mse": mse, "images": len(x), "command": command_line(),
            "seconds_this_run": round(time.perf_counter() - began, 1)}
    path = save_checkpoint(model, out, family="small-unet", kind="diffusion", config=config,
                           meta=meta, half=half)
    resume.unlink(missing_ok=True)
    typer.echo("test eps MSE " + ", ".join(f"t={t}: {v:.4f}" for t, v in mse.items()))
    typer.echo(f"wrote {path}")


@train_app.command("guidance")
def train_guidance_cmd(
    out: Path = typer.Option(..., help="checkpoint stem: writes <out>.safetensors and <out>.json"),
    dataset: str = typer.Option("digits", help="digits | cifar10 | cifar100 | svhn"),
    data_root: Path = typer.Option(None, "--data-root",
                                   help="directory of a local dataset copy"),
    trades_lambda: float = typer.Option(6.0, help="λ of AGDM Eq. 6 (robustness weight)"),
    eps: float = typer.Option(None, help="ℓ∞ budget of the inner maximisation (default: the "
                              "dataset's: digits 0.2, CIFAR-10 8/255)"),
    inner_steps: int = typer.Option(10, help="TRADES ascent steps (size ε/4)"),
    init: str = typer.Option(None, help="fine-tune this classifier spec instead of training "
                                        "from scratch"),
    steps: int = typer.Option(3000, help="optimizer steps"),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(1e-3),
    ema_decay: float = typer.Option(0.999, help="EMA decay of the saved weights; lower it for "
                                    "short fine-tunes (0.99 ≈ the last 100 steps)"),
    width: int = typer.Option(32, help="SmallCNN width (from scratch)"),
    seed: int = typer.Option(0),
    eval_steps: int = typer.Option(20, help="PGD steps of the robust-accuracy check at ε"),
    half: bool = typer.Option(False, help="store the weights in float16"),
    resume_every: int = typer.Option(200, help="save the training state every this many steps "
                                     "(whole epochs) to <out>.resume.pt; rerunning continues"),
) -> None:
    """Train AGDM's robust guidance classifier φ (TRADES: CE + λ·max KL, AGDM Eq. 6); an
    interrupted run continues from <out>.resume.pt when started again with the same command."""
    from .. import data
    from ..models import load_classifier, save_checkpoint
    from ..models.checkpoint import read_checkpoint_config
    from ..models.registry import resolve_spec
    from ..training import GuidanceTraining, train_guidance
    from ..training.guidance import clean_and_robust_accuracy

    from ..data.profiles import default_eps

    eps = default_eps(dataset, "linf") if eps is None else eps
    cfg = GuidanceTraining(steps=steps, batch_size=batch_size, lr=lr, width=width, seed=seed,
                           trades_lambda=trades_lambda, eps=eps, inner_steps=inner_steps,
                           ema_decay=ema_decay)
    x, y = data.load(dataset, "train", root=data_root)
    start = None
    if init is not None:
        start = (load_classifier(init), read_checkpoint_config(resolve_spec(init, "classifier"))
                 ["config"])
    resume = Path(f"{out}.resume.pt")
    began = time.perf_counter()
    model, config, history = train_guidance(x, y, cfg, start, resume=resume,
                                            resume_every=resume_every)
    x_test, y_test = data.load(dataset, "test", root=data_root)
    clean, robust = clean_and_robust_accuracy(model, x_test, y_test, eps, eval_steps)
    meta = {"dataset": dataset, "training": vars(cfg), "init": init, "test_accuracy": clean,
            f"test_robust_accuracy_pgd{eval_steps}": robust,
            "final_loss": history[-1] if history else None, "command": command_line(),
            "seconds_this_run": round(time.perf_counter() - began, 1)}
    path = save_checkpoint(model, out, family="small-cnn", kind="classifier", config=config,
                           meta=meta, half=half)
    resume.unlink(missing_ok=True)
    typer.echo(f"test accuracy {clean:.2%}, robust (PGD-{eval_steps}, ε = {eps:g}) {robust:.2%}; "
               f"wrote {path}")
