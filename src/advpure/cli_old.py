"""The ``advpure`` command."""
from __future__ import annotations

import contextlib
import inspect
import shlex
import typing
import sys
import time
from pathlib import Path

import typer

app = typer.Typer(help="Diffusion-based adversarial purification and its adaptive evaluation.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
train_app = typer.Typer(help="Train the embedded default's models.", no_args_is_help=True)
app.add_typer(train_app, name="train")
toy_app = typer.Typer(help="The papers' closed-form toy experiments.", no_args_is_help=True)
app.add_typer(toy_app, name="toy")
case_app = typer.Typer(help="The papers' case-study figures.", no_args_is_help=True)
app.add_typer(case_app, name="case-study")
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
    dataset: str = typer.Option("digits", help="digits | cifar10 | cifar100 | svhn"),
    data_root: Path = typer.Option(None, "--data-root", "--data-dir",
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
    from . import data
    from .models import save_checkpoint
    from .training import DiffusionTraining, train_diffusion
    from .training.diffusion import eps_mse

    cfg = DiffusionTraining(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
                            ema_decay=ema_decay, t_max=t_max, base=base,
                            mults=_parse_list(mults, int), seed=seed)
    x, _ = data.load(dataset, "train", root=data_root)
    resume = Path(f"{out}.resume.pt")
    began = time.perf_counter()
    model, config = train_diffusion(x, cfg, resume=resume, resume_every=resume_every)
    x_test, _ = data.load(dataset, "test", root=data_root)
    mse = eps_mse(model, x_test)
    meta = {"dataset": dataset, "training": vars(cfg), "schedule": "VP beta_min=0.1 beta_max=20",
            "test_eps_mse": mse, "images": len(x), "command": _command_line(),
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
    data_root: Path = typer.Option(None, "--data-root", "--data-dir",
                                   help="directory of a local dataset copy"),
    trades_lambda: float = typer.Option(6.0, help="λ of AGDM Eq. 6 (robustness weight)"),
    eps: float = typer.Option(0.2, help="ℓ∞ budget of the inner maximisation (CIFAR-10: 8/255)"),
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
    from . import data
    from .models import load_classifier, save_checkpoint
    from .models.checkpoint import read_checkpoint_config
    from .models.registry import resolve_spec
    from .training import GuidanceTraining, train_guidance
    from .training.guidance import clean_and_robust_accuracy

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
            "final_loss": history[-1] if history else None, "command": _command_line(),
            "seconds_this_run": round(time.perf_counter() - began, 1)}
    path = save_checkpoint(model, out, family="small-cnn", kind="classifier", config=config,
                           meta=meta, half=half)
    resume.unlink(missing_ok=True)
    typer.echo(f"test accuracy {clean:.2%}, robust (PGD-{eval_steps}, ε = {eps:g}) {robust:.2%}; "
               f"wrote {path}")


def _parse_seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers such as 0,1,2, found {text!r}")


# the options of an evaluation, shared by `evaluate` and `sweep`: (name, type, help). Their names
# are the experiment-file fields (see evaluation.config.flat_fields); None keeps the file's value
# or the config default shown in the help.
EVAL_OPTIONS = [
    ("dataset", str, "digits | cifar10 | cifar100 | svhn | imagenet"),
    ("data_root", str, "directory of a local dataset copy (CIFAR batches, SVHN .mat files, "
                       "ImageNet val class folders)"),
    ("n", int, "robust accuracy: size of the fixed random subset (at most the split)"),
    ("standard_n", int, "standard accuracy: images of the same fixed order (default: the "
                        "whole split; = n for the robust subset only)"),
    ("subset_seed", int, "seed of the subset"),
    ("classifier", str, "classifier spec: builtin:NAME, FAMILY:PATH (wrn-28-10, "
                        "wrn-70-16-dropout, resnet18-cifar, resnet50) or a checkpoint path"),
    ("defense", str, "none | diffpure | coup | agdm | hetero"),
    ("diffusion", str, "eps-model spec: builtin:NAME, FAMILY:PATH (score_sde, "
                       "guided-diffusion[-fp16], diffusers, edm) or a checkpoint path"),
    ("sampler", str, "sde | ode | ld | ddpm | ddim"),
    ("t_star", float, "diffusion time t* (default 0.1; none for ld; coup l2 preset 0.075; "
                      "agdm 0.07); ddpm/ddim/agdm: level 1000·t*"),
    ("t_star_delta", float, "randomized t*: uniform on t* ± Δ, per image"),
    ("dt", float, "solver step (paper: 1e-3; ddpm/ddim: 1e-3 = every level)"),
    ("ddpm_variance", str, "ddpm, agdm, hetero: posterior (β̃, default) | beta"),
    ("ddim_eta", float, "ddim: η (default 0)"),
    ("ld_sigma2", float, "ld: σ² (default 100)"),
    ("ld_lambda", float, "ld: λ (default 0.1)"),
    ("ld_eta", float, "ld: η (default 1)"),
    ("ld_score_t", float, "ld: time at which the score 'at 0' is taken (default 1e-3)"),
    ("guidance_scale", float, "coup: λ, agdm: s of the guidance (default 1; 0 = unguided)"),
    ("guidance_grad", str, "coup, agdm: second_order (default) | first_order attack gradient "
                           "through the guidance"),
    ("guidance_classifier", str, "coup: guidance classifier (default: the defended one); agdm: "
                                 "the robust φ (default builtin:digits-guidance)"),
    ("guidance_distance", str, "agdm: D between softmax outputs, kl (default) | reverse_kl | l2"),
    ("guidance_label", str, "agdm: ŷ from φ on the input (default) | on the state x_t"),
    ("form", str, "agdm: discrete (Algorithm 1, DDPM; default) | continuous (Eq. 18, VP-SDE)"),
    ("forward_noise", bool, "coup: diffuse to t* first as DiffPure does (default off; not in "
                            "the paper)"),
    ("preset", str, "coup: the paper's setting, linf (t* 0.1, λ 1, default) | l2 (t* 0.075)"),
    ("t_large", float, "hetero: t_l, the noise inside the attention mask (default 0.2)"),
    ("t_small", float, "hetero: t_s, the noise outside it (default 0.05)"),
    ("tau", float, "hetero: mask threshold τ on the normalised attention maps (default 0.8)"),
    ("mask_blocks", str, "hetero: comma-separated classifier module names whose outputs make "
                         "the mask (default: the architecture's blocks)"),
    ("mask_normalisation", str, "hetero: minmax (default, the authors' code) | softmax (the "
                                "paper's φ; empty masks at τ = 0.8)"),
    ("resampling", str, "hetero: single (Eq. 11, default) | repaint (U-step) | none"),
    ("resample_jumps", int, "hetero: U (default 10)"),
    ("resample_stage", str, "hetero: resample in stage1 (default) | all steps"),
    ("gradient", str, "exact | checkpoint | adjoint | bpda | surrogate | blind"),
    ("surrogate_dt", float, "solver step of the surrogate"),
    ("ensemble", int, "S purifications per image, outputs combined (Pei et al. Algorithm 3)"),
    ("ensemble_rule", str, "mean of the S outputs (default) | vote"),
    ("purify_size", int, "purify at size×size and resize back (ImageNet guided diffusion: 256)"),
    ("attack", str, "none | pgd | bpda | transfer | diffusion | apgd | autoattack | square | "
                    "stadv (one attack; several: an experiment file's 'attacks' list)"),
    ("eps", float, "perturbation budget"),
    ("norm", str, "linf | l2"),
    ("steps", int, "attack iterations"),
    ("step_size", float, "PGD step (default 2.5·eps/steps)"),
    ("eot", int, "EOT copies per gradient (default 1; autoattack rand: 20)"),
    ("random_init", bool, "pgd-style attacks: random start in the ball"),
    ("loss", str, "apgd: ce (default) | dlr"),
    ("version", str, "autoattack: standard (default) | rand"),
    ("queries", int, "square, autoattack: Square's queries (default 5000)"),
    ("bound", float, "stadv: flow bound (default 0.05)"),
    ("lr", float, "stadv: Adam learning rate (default 0.01)"),
    ("note", str, "a line shown first in every report and table (e.g. 'reduced protocol')"),
    ("protocol", str, "a paper's attacks: diffpure | diffpure-l2 | diffpure-stadv | coup | "
                      "agdm | leekim | pei (instead of --attack)"),
    ("max_steps", int, "cap every protocol attack's iterations"),
    ("max_eot", int, "cap every protocol attack's EOT count"),
    ("max_queries", int, "cap Square's queries in a protocol"),
    ("draws", int, "purification draws per final evaluation (single-draw and vote accuracy)"),
    ("save_adversarial", bool, "keep the adversarial images in the record store"),
    ("seeds", str, "comma-separated seeds, e.g. 0,1,2"),
    ("batch_size", int, "images per batch"),
]


def _eval_parameters() -> list[inspect.Parameter]:
    from .evaluation.config import config_from_flat

    defaults = _flat_defaults(config_from_flat({}))
    params = [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                                default=typer.Option(None, help="experiment file (YAML or JSON, "
                                                     "e.g. a run's config.json); flags "
                                                     "override it"))]
    for name, kind, help_text in EVAL_OPTIONS:
        shown = defaults.get(name)
        if shown is not None and "default" not in help_text:
            help_text += f" (default: {shown})"
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                        default=typer.Option(None, help=help_text)))
    return params


def _flat_defaults(cfg) -> dict[str, object]:
    from .evaluation.config import flat_fields

    from .evaluation.config import AttackConfig

    dumped = cfg.model_dump() | {"attack": AttackConfig().model_dump()}
    return {name: (dumped if section is None else dumped[section])[field]
            for name, (section, field) in flat_fields().items()}


def with_eval_options(command):
    """Add the evaluation options (and ``--config``) to a command, which receives the validated
    ``EvalConfig`` as its ``config`` argument."""
    hints = typing.get_type_hints(command)        # the annotations as types, not strings
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(command).parameters.values() if p.name != "config"]
    eval_params = _eval_parameters()
    names = [p.name for p in eval_params]

    def wrapper(**kwargs):
        options = {name: kwargs.pop(name) for name in names}
        return command(config=_eval_config(options), **kwargs)

    wrapper.__name__, wrapper.__doc__ = command.__name__, command.__doc__
    wrapper.__signature__ = inspect.Signature(own + eval_params)
    return wrapper


EXECUTOR_OPTIONS = [
    ("executor", str, "local", "where shards (batches) run: local (this process) | ray"),
    ("address", str, None, "ray: the cluster to join (auto, or ray://HEAD:10001); without it "
                           "a local Ray instance is started"),
    ("workers", int, None, "ray: at most this many shards at once (a local instance gets "
                           "workers × cpus-per-task CPUs)"),
    ("cpus_per_task", float, None, "ray: CPUs per shard task (default 1)"),
    ("gpus_per_task", float, None, "ray: GPUs per shard task (default 0)"),
    ("retries", int, None, "attempts after a shard raises before it is reported (default: ray "
                           "2, local 0)"),
    ("threads", int, None, "torch threads where shards run (ray default: cpus-per-task); pin "
                           "it to compare runs bit for bit"),
]


def with_executor_options(command):
    """Add the executor options to a command, which receives the executor as ``executor``."""
    hints = typing.get_type_hints(command)        # the annotations as types, not strings
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(command).parameters.values() if p.name != "executor"]
    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                default=typer.Option(default, help=help_text))
              for name, kind, default, help_text in EXECUTOR_OPTIONS]

    def wrapper(**kwargs):
        from .evaluation.executors import make_executor

        options = {name: kwargs.pop(name) for name, *_ in EXECUTOR_OPTIONS}
        try:
            executor = make_executor(options.pop("executor"), **options)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
        return command(executor=executor, **kwargs)

    wrapper.__name__, wrapper.__doc__ = command.__name__, command.__doc__
    wrapper.__signature__ = inspect.Signature(own + params)
    return wrapper


@contextlib.contextmanager
def reported_run_errors():
    """A run that cannot go on (its directory in use, shards failed) ends with its message."""
    from .evaluation.store import RunError

    try:
        yield
    except RunError as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from None


def _eval_config(options: dict):
    """The ``EvalConfig`` of the command line: the experiment file, then the flags."""
    from pydantic import ValidationError

    from .evaluation.config import config_errors, config_from_flat, read_experiment_file

    path = options.pop("config")
    try:
        base = None if path is None else read_experiment_file(path)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    if options["seeds"] is not None:
        options["seeds"] = _parse_seeds(options["seeds"])
    if options["mask_blocks"] is not None:
        options["mask_blocks"] = tuple(b.strip() for b in options["mask_blocks"].split(","))
    try:
        return config_from_flat(options, base)
    except ValidationError as err:
        raise typer.BadParameter(config_errors(err)) from None
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


@app.command()
@with_eval_options
@with_executor_options
def evaluate(
    out: Path = typer.Option(Path("runs/latest"), help="run directory to write"),
    config=None,
    executor=None,
) -> None:
    """Standard and robust accuracy (mean ± std over seeds); writes a run directory.

    Every finished batch is recorded at once in --out/records.sqlite: started again with the
    same config, an interrupted run resumes where it stopped.
    """
    from .evaluation import results_table, run_evaluation, write_run

    if config.defenses:
        raise typer.BadParameter("the experiment file lists several defenses: run it with "
                                 "`advpure table --config FILE`")
    with reported_run_errors():
        result = run_evaluation(config, out_dir=out, executor=executor)
    write_run(result, out)
    typer.echo(results_table([result]))
    typer.echo(f"wrote {out}")


@app.command()
@with_eval_options
@with_executor_options
def sweep(
    param: str = typer.Option("t_star", help="the purifier option to vary, e.g. t_star, dt, "
                              "t_star_delta, ddim_eta, guidance_scale, tau; a model: "
                              "guidance_classifier, diffusion; or an attack option set on every "
                              "attack: eps, eot, steps"),
    values: str = typer.Option(..., help="comma-separated values, e.g. 0.025,0.05,0.1,0.2 "
                               "(model specs for a model)"),
    out: Path = typer.Option(Path("runs/sweep"), help="directory: one run per value, sweep.md, "
                             "sweep.json, sweep.png"),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline",
                                  help="also evaluate the undefended classifier"),
    config=None,
    executor=None,
) -> None:
    """Standard and robust accuracy against one purifier option (DiffPure Fig. 3) or model
    (AGDM Fig. 3c: one trained φ per value).

    Finished runs in --out with the same config are reused: an interrupted sweep resumes.
    """
    from .evaluation.sweep import MODEL_SWEEPABLE, run_sweep, sweep_table

    kind = str if param in MODEL_SWEEPABLE else float
    try:
        with reported_run_errors():
            result = run_sweep(config, param, list(_parse_list(values, kind)), out, baseline,
                               executor=executor)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(sweep_table(result))
    typer.echo(f"wrote {out}/sweep.md, sweep.json, sweep.png")


@app.command()
@with_eval_options
@with_executor_options
def table(
    defenses: str = typer.Option("none,diffpure,coup,agdm,hetero", help="comma-separated "
                                 "purifiers, each at its defaults (the --defense options apply "
                                 "to the one named there); an experiment file's 'defenses' "
                                 "list replaces them"),
    out: Path = typer.Option(Path("runs/table"), help="directory: one run per defense, "
                             "table.md, table.csv, table.json"),
    config=None,
    executor=None,
) -> None:
    """The papers' table: standard and per-attack robust accuracy for several defenses under
    the same attacks (e.g. --protocol diffpure); finished runs are reused."""
    from .evaluation.table import run_table, table_configs, table_markdown

    try:
        with reported_run_errors():
            result = run_table(config, table_configs(config, list(_parse_list(defenses, str))),
                               out, executor=executor)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(table_markdown(result, config))
    typer.echo(f"wrote {out}/table.md, table.csv, table.json")


@app.command()
@with_eval_options
def audit(
    out: Path = typer.Option(Path("runs/audit"), help="directory: audit.md, audit.json, "
                             "audit.png"),
    images: int = typer.Option(64, min=2, help="images of the fixed robust subset"),
    factors: str = typer.Option("1,2,4", help="multipliers of the attack's iterations and EOT"),
    eps_factors: str = typer.Option("0.25,0.5,1,2", help="multipliers of the attack's ε"),
    repeats: int = typer.Option(16, min=2, help="calls per image for the randomness check"),
    square_queries: int = typer.Option(1000, min=1, help="queries of the black-box Square"),
    alpha: float = typer.Option(0.01, min=1e-6, max=0.5, help="level of each one-sided test"),
    config=None,
) -> None:
    """Check a defense's evaluation for gradient masking (Carlini et al. 2019; AutoAttack's
    flags): unbounded attack, accuracy vs ε / iterations / EOT, noise, Square and transfer
    baselines, zero gradients, randomness, the gradient mode against exact. The audited attack
    is the config's first PGD/APGD (default PGD-10 at the dataset's ε)."""
    from .evaluation.audit import AuditBudget, run_audit, target_from_config, write_audit

    budget = AuditBudget(images, _parse_list(factors, int), _parse_list(eps_factors, float),
                         repeats, square_queries, alpha)
    target = target_from_config(config, images)
    result = run_audit(target, budget)
    typer.echo(write_audit(result, out))
    typer.echo(f"wrote {out}/audit.md, audit.json, audit.png")


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


@toy_app.command("coup")
def toy_coup(
    out: Path = typer.Option(Path("coup-toy"), help="directory for toy.md and flips.png"),
    lambdas: str = typer.Option("0,0.5,1,2,5,10", help="guidance weights λ"),
    noise: str = typer.Option("0,1,5,10", help="classifier noise levels c"),
    runs: int = typer.Option(100_000, min=1, help="simulated purifications per (λ, c)"),
    dt: float = typer.Option(1e-3, min=1e-6, help="Euler–Maruyama step"),
    seed: int = typer.Option(0, help="seed of the Brownian paths (shared by every λ, c)"),
    json_path: Path = typer.Option(None, "--json", help="also write the records as JSON"),
) -> None:
    """COUP §5.3.2 (Fig. 3b): label-flip probability of the guided reverse SDE on 1-D data."""
    from .toys import coup

    records = coup.run_toy(list(_parse_list(lambdas, float)), list(_parse_list(noise, float)),
                           runs=runs, dt=dt, seed=seed)
    coup.write_toy(records, out, json_path)
    typer.echo(coup.toy_table(records))
    typer.echo(f"exact posterior P(x0 < 0) = {coup.closed_form_flip():.4f} (λ = 0, c = 0)")
    typer.echo(f"wrote {out}/toy.md, flips.png" + (f", {json_path}" if json_path else ""))


@case_app.command("coup")
def case_study_coup(
    out: Path = typer.Option(Path("coup-case-study"), help="directory for the report and plot"),
    dataset: str = typer.Option("digits", help="digits | cifar10 | cifar100"),
    data_root: str = typer.Option(None, help="directory of a local CIFAR copy"),
    n: int = typer.Option(128, min=1, help="images of the fixed test subset"),
    classifier: str = typer.Option("builtin:digits-cnn", help="classifier spec"),
    diffusion: str = typer.Option("builtin:digits-unet", help="eps-model spec"),
    t_star: float = typer.Option(0.1, help="purification time t*"),
    dt: float = typer.Option(1e-2, help="Euler step (paper: 1e-3)"),
    guidance_scale: float = typer.Option(1.0, help="λ of the guided path"),
    eps: float = typer.Option(0.1, help="ℓ∞ budget of APGD-CE"),
    steps: int = typer.Option(50, min=1, help="APGD-CE iterations"),
    seed: int = typer.Option(0, help="APGD's seed"),
) -> None:
    """COUP Fig. 2a: p̂(y_true|x_t), p̂(y_adv|x_t) along noise-free paths, with and without
    guidance, for the cases APGD-CE breaks against COUP w/o guidance."""
    from .evaluation.coup_case import CaseStudySettings, run_case_study, write_case_study

    settings = CaseStudySettings(dataset=dataset, data_root=data_root, n=n,
                                 classifier=classifier, diffusion=diffusion, t_star=t_star,
                                 dt=dt, guidance_scale=guidance_scale, eps=eps, steps=steps,
                                 seed=seed)
    typer.echo(write_case_study(run_case_study(settings), out))
    typer.echo(f"wrote {out}/case_study.md, case_study.json, confidence.png")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a run directory (with records.sqlite)"),
    out: Path = typer.Option(None, help="where to write the tables (default: RUN_DIR)"),
) -> None:
    """Rebuild a run's tables (results.md, .json, .csv) from its record store alone."""
    from .evaluation.report import load_run, report_text, write_run

    try:
        result = load_run(run_dir)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    write_run(result, out or run_dir)
    typer.echo(report_text(result))
    typer.echo(f"wrote {out or run_dir}/results.md, results.json, results.csv")


@app.command()
def models(
    specs: list[str] = typer.Argument(None, help="specs to load and check (none: list the forms)"),
) -> None:
    """List the model specs advpure understands, or load the given ones with every check
    (keys, shapes, parameter count) and say what they are."""
    from .models.registry import catalog, check_spec

    if not specs:
        typer.echo(catalog())
        return
    for spec in specs:
        try:
            typer.echo(check_spec(spec))
        except (ValueError, FileNotFoundError) as err:
            raise typer.BadParameter(str(err)) from None


@app.command()
def masks(
    out: Path = typer.Option(Path("masks.png"), help="figure to write"),
    dataset: str = typer.Option("digits", help="digits | cifar10 | cifar100"),
    data_root: str = typer.Option(None, help="directory of a local CIFAR copy"),
    n: int = typer.Option(8, min=1, help="images of the fixed test subset"),
    classifier: str = typer.Option("builtin:digits-cnn", help="classifier spec (the mask's source)"),
    diffusion: str = typer.Option("builtin:digits-unet", help="eps-model spec"),
    t_large: float = typer.Option(0.2, help="t_l inside the mask"),
    t_small: float = typer.Option(0.05, help="t_s outside the mask"),
    tau: float = typer.Option(0.8, help="mask threshold τ"),
    dt: float = typer.Option(1e-2, help="DDPM respacing step (1e-3: every level)"),
    eps: float = typer.Option(0.0, help="> 0: show ℓ∞ PGD-20 adversarial images of the bare "
                              "classifier at this budget"),
    seed: int = typer.Option(0, help="seed of the purification noise (and PGD's start)"),
) -> None:
    """Heterogeneous purification, pictured (Pei et al. Fig. 5): input, attention map of every
    block, mask, purified image."""
    from .evaluation.masks import MaskSettings, run_masks

    settings = MaskSettings(dataset=dataset, data_root=data_root, n=n, classifier=classifier,
                            diffusion=diffusion, t_large=t_large, t_small=t_small, tau=tau,
                            dt=dt, eps=eps, seed=seed)
    try:
        typer.echo(f"wrote {run_masks(settings, out)}")
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


@bench_app.command("executors")
def bench_executors(
    out: Path = typer.Option(Path("bench/executors"), help="directory for the table and plot"),
    n: int = typer.Option(32, min=1, help="digits images (robust and standard)"),
    batch_size: int = typer.Option(4, min=1, help="images per shard"),
    steps: int = typer.Option(5, min=1, help="PGD iterations (EOT 2)"),
) -> None:
    """Throughput of a digits evaluation: the local executor (1 and 2 threads) against a local
    Ray instance with 1 and 2 single-thread workers."""
    from .benchmarks import executors

    typer.echo(executors.run(out, n, batch_size, steps))
    typer.echo(f"wrote {out}/executors.md, executors.json, executors.png")


@bench_app.command("resampling")
def bench_resampling(
    out: Path = typer.Option(Path("bench/resampling"), help="directory for the table and plot"),
    workloads: str = typer.Option("digits,unet32", help="digits (batch 64) and/or unet32 (one "
                                  "3×32×32 image, as the paper's figure)"),
    jumps: str = typer.Option("1,5,10,20", help="resampling U"),
    modes: str = typer.Option("exact,checkpoint", help="gradient modes"),
    steps: int = typer.Option(10, min=2, help="sampling steps from t_l (paper: 10)"),
    cap_gb: float = typer.Option(16.0, help="memory cap: above it a setting is 'out of memory'"),
    repeats: int = typer.Option(2, help="timed runs per configuration (after one untimed)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """Time and peak memory of one attack gradient: U-step against single-step resampling
    (Pei et al. supplement §7)."""
    from .benchmarks import resampling

    names = _parse_list(workloads, str)
    unknown = [w for w in names if w not in resampling.BATCH]
    if unknown:
        raise typer.BadParameter(f"expected workloads among {', '.join(resampling.BATCH)}, "
                                 f"found {', '.join(unknown)}")
    report = resampling.run(out, names, _parse_list(jumps, int), _parse_list(modes, str),
                            cap_gb, repeats, device, steps=steps)
    typer.echo(report)
    typer.echo(f"wrote {out}/resampling.md, resampling.json, resampling.png")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
