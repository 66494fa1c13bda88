"""The ``advpure`` command."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

app = typer.Typer(help="Diffusion-based adversarial purification and its adaptive evaluation.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
train_app = typer.Typer(help="Train the embedded default's models.", no_args_is_help=True)
app.add_typer(train_app, name="train")
bench_app = typer.Typer(help="Benchmarks and numerical checks: print and save their figures.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _command_line() -> str:
    return "advpure " + " ".join(shlex.quote(a) for a in sys.argv[1:])


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

    from . import data
    from .models import save_checkpoint
    from .training import ClassifierTraining, train_classifier

    cfg = ClassifierTraining(steps=steps, batch_size=batch_size, lr=lr, width=width, seed=seed)
    x, y = data.load(dataset, "train", root=data_root)
    model, config = train_classifier(x, y, cfg)
    x_test, y_test = data.load(dataset, "test", root=data_root)
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    meta = {"dataset": dataset, "training": vars(cfg), "test_accuracy": acc,
            "command": _command_line()}
    path = save_checkpoint(model, out, family="small-cnn", kind="classifier", config=config, meta=meta)
    typer.echo(f"test accuracy {acc:.2%}; wrote {path}")


@train_app.command("diffusion")
def train_diffusion_cmd(
    out: Path = typer.Option(..., help="checkpoint stem: writes <out>.safetensors and <out>.json"),
    dataset: str = typer.Option("digits", help="digits | cifar10 | cifar100"),
    data_root: Path = typer.Option(None, help="directory of a local CIFAR copy"),
    steps: int = typer.Option(8000, help="optimizer steps"),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(2e-3),
    base: int = typer.Option(32, help="SmallUNet base width"),
    seed: int = typer.Option(0),
) -> None:
    """Train the SmallUNet eps-model on the continuous VP schedule (EMA weights)."""
    from . import data
    from .models import save_checkpoint
    from .training import DiffusionTraining, train_diffusion

    cfg = DiffusionTraining(steps=steps, batch_size=batch_size, lr=lr, base=base, seed=seed)
    x, _ = data.load(dataset, "train", root=data_root)
    model, config = train_diffusion(x, cfg)
    meta = {"dataset": dataset, "training": vars(cfg), "schedule": "VP beta_min=0.1 beta_max=20",
            "command": _command_line()}
    path = save_checkpoint(model, out, family="small-unet", kind="diffusion", config=config, meta=meta)
    typer.echo(f"wrote {path}")


def _parse_seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers such as 0,1,2, found {text!r}")


@app.command()
def evaluate(
    out: Path = typer.Option(Path("runs/latest"), help="run directory to write"),
    dataset: str = typer.Option("digits", help="digits | cifar10 | cifar100"),
    data_root: str = typer.Option(None, help="directory of a local CIFAR copy"),
    n: int = typer.Option(128, help="size of the fixed random subset"),
    subset_seed: int = typer.Option(0, help="seed of the subset"),
    classifier: str = typer.Option("builtin:digits-cnn", help="classifier spec"),
    defense: str = typer.Option("none", help="none | diffpure"),
    diffusion: str = typer.Option("builtin:digits-unet", help="eps-model spec (diffpure)"),
    t_star: float = typer.Option(0.1, help="DiffPure diffusion time t*"),
    dt: float = typer.Option(1e-3, help="reverse-SDE step (paper: 1e-3)"),
    sampler: str = typer.Option("sde", help="sde (reverse VP-SDE) | ode (probability-flow VP-ODE)"),
    gradient: str = typer.Option(
        "exact", help="exact | checkpoint | adjoint | bpda | surrogate | blind"),
    surrogate_dt: float = typer.Option(None, help="reverse-SDE step of the surrogate"),
    attack: str = typer.Option("none", help="none | pgd"),
    eps: float = typer.Option(8 / 255, help="perturbation budget"),
    norm: str = typer.Option("linf", help="linf | l2"),
    steps: int = typer.Option(20, help="PGD iterations"),
    step_size: float = typer.Option(None, help="PGD step (default 2.5·eps/steps)"),
    eot: int = typer.Option(1, help="EOT copies per gradient"),
    seeds: str = typer.Option("0", help="comma-separated seeds, e.g. 0,1,2"),
    batch_size: int = typer.Option(128),
) -> None:
    """Standard and robust accuracy (mean ± std over seeds); writes a run directory."""
    from pydantic import ValidationError

    from .evaluation import EvalConfig, results_table, run_evaluation, write_run
    from .evaluation.config import config_errors

    try:
        cfg = EvalConfig.model_validate(dict(
            dataset=dataset, data_root=data_root, n=n, subset_seed=subset_seed,
            classifier=classifier, seeds=_parse_seeds(seeds), batch_size=batch_size,
            defense=dict(name=defense, diffusion=diffusion, t_star=t_star, dt=dt,
                         sampler=sampler, gradient=gradient, surrogate_dt=surrogate_dt),
            attack=dict(name=attack, eps=eps, norm=norm, steps=steps, step_size=step_size,
                        eot=eot)))
    except ValidationError as err:
        raise typer.BadParameter(config_errors(err)) from None
    result = run_evaluation(cfg)
    write_run(result, out)
    typer.echo(results_table([result]))
    typer.echo(f"wrote {out}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-report"), help="report directory"),
    n: int = typer.Option(64, help="test images"),
    steps: int = typer.Option(20, help="PGD iterations"),
    eot: int = typer.Option(4, help="EOT copies"),
    dt: float = typer.Option(1e-2, help="reverse-SDE step (paper: 1e-3)"),
) -> None:
    """No defense vs DiffPure under adaptive ℓ∞ PGD+EOT (ε = 0.2) on the shipped digits models."""
    from .evaluation.demo import DemoSettings, run_demo

    report = run_demo(out, DemoSettings(n=n, steps=steps, eot=eot, dt=dt))
    typer.echo(report)
    typer.echo(f"wrote {out / 'report.md'}")


def _parse_list(text: str, kind: type) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected a comma-separated list, found {text!r}") from None


@bench_app.command("gradients")
def bench_gradients(
    out: Path = typer.Option(Path("bench/gradients"), help="directory for the table and plot"),
    workloads: str = typer.Option("digits,unet32", help="digits (batch 64) and/or unet32 (batch 4)"),
    steps: str = typer.Option("10,20,50,100,200", help="numbers of reverse steps N"),
    modes: str = typer.Option("exact,checkpoint,adjoint", help="gradient modes"),
    cap_gb: float = typer.Option(16.0, help="memory cap: above it a mode is 'out of memory'"),
    repeats: int = typer.Option(2, help="timed runs per configuration (after one untimed)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """Time and peak memory of exact, checkpoint and adjoint gradients against N."""
    from .benchmarks import gradients

    names = _parse_list(workloads, str)
    unknown = [w for w in names if w not in gradients.WORKLOADS]
    if unknown:
        raise typer.BadParameter(f"expected workloads among {', '.join(gradients.WORKLOADS)}, "
                                 f"found {', '.join(unknown)}")
    report = gradients.run(out, names, _parse_list(steps, int), _parse_list(modes, str),
                           cap_gb, repeats, device)
    typer.echo(report)
    typer.echo(f"wrote {out}/gradients.md, gradients.json, gradients.png")


@bench_app.command("analytic")
def bench_analytic(
    out: Path = typer.Option(Path("bench/analytic"), help="directory for the table and plot"),
    t_star: float = typer.Option(0.1, help="diffusion time t*"),
) -> None:
    """DiffPure App. B.5: gradient error against Eq. 31 for each mode and step size."""
    from .benchmarks import analytic

    typer.echo(analytic.run(out, t_star))
    typer.echo(f"wrote {out}/analytic.md, analytic.json, analytic.png")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
