"""The studies: the gradient-masking audit, the demo, the papers' toys, case studies and masks."""
from __future__ import annotations

from pathlib import Path

import typer
import typer.models

from ..purifiers import COUPSettings, HeteroSettings
from .app import app, case_app, toy_app
from .options import bad_parameters, parse_list, with_eval_options


def _budget_option(name: str, **limits) -> typer.models.OptionInfo:
    """The ``advpure audit`` flag of an ``AuditBudget`` field: its default and help text."""
    from dataclasses import fields

    from ..studies.audit import AuditBudget

    f = next(f for f in fields(AuditBudget) if f.name == name)
    default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
    return typer.Option(default, help=f.metadata["help"], **limits)


@app.command()
@with_eval_options()
def audit(
    out: Path = typer.Option(Path("runs/audit"), help="directory: audit.md, audit.json, "
                             "audit.png"),
    images: int = _budget_option("images", min=2),
    factors: str = _budget_option("factors"),
    eps_factors: str = _budget_option("eps_factors"),
    repeats: int = _budget_option("repeats", min=2),
    square_queries: int = _budget_option("square_queries", min=1),
    alpha: float = _budget_option("alpha", min=1e-6, max=0.5),
    warn_alpha: float = _budget_option("warn_alpha", min=1e-6, max=0.5),
    effect: float = _budget_option("effect", min=1e-3, max=1.0),
    unbounded_accuracy: float = _budget_option("unbounded_accuracy", min=0.0, max=1.0),
    config=None,
) -> None:
    """Check a defense's evaluation for gradient masking (Carlini et al. 2019; AutoAttack's
    flags): unbounded attack, accuracy vs ε / iterations / EOT, noise, Square and transfer
    baselines, zero gradients, randomness, the gradient mode against exact. The audited attack
    is the config's first PGD/APGD (default PGD-10 at the dataset's ε)."""
    from ..studies.audit import AuditBudget, run_audit, target_from_config, write_audit

    budget = AuditBudget(images=images, factors=parse_list(factors, int),
                         eps_factors=parse_list(eps_factors, float), repeats=repeats,
                         square_queries=square_queries, alpha=alpha,
                         warn_alpha=warn_alpha, effect=effect,
                         unbounded_accuracy=unbounded_accuracy)
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
    from ..studies.demo import DemoSettings, run_demo

    report = run_demo(out, DemoSettings(n=n, steps=steps, eot=eot, dt=dt))
    typer.echo(report)
    typer.echo(f"wrote {out / 'report.md'}")


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
    from ..toys import coup

    records = coup.run_toy(list(parse_list(lambdas, float)), list(parse_list(noise, float)),
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
    t_star: float = typer.Option(COUPSettings.default("t_star"), help="purification time t*"),
    dt: float = typer.Option(1e-2, help="Euler step (paper: 1e-3)"),
    guidance_scale: float = typer.Option(COUPSettings.default("guidance_scale"),
                                         help="λ of the guided path"),
    eps: float = typer.Option(0.1, help="ℓ∞ budget of APGD-CE"),
    steps: int = typer.Option(50, min=1, help="APGD-CE iterations"),
    seed: int = typer.Option(0, help="APGD's seed"),
) -> None:
    """COUP Fig. 2a: p̂(y_true|x_t), p̂(y_adv|x_t) along noise-free paths, with and without
    guidance, for the cases APGD-CE breaks against COUP w/o guidance."""
    from ..studies.coup_case import CaseStudySettings, run_case_study, write_case_study

    settings = CaseStudySettings(dataset=dataset, data_root=data_root, n=n,
                                 classifier=classifier, diffusion=diffusion, t_star=t_star,
                                 dt=dt, guidance_scale=guidance_scale, eps=eps, steps=steps,
                                 seed=seed)
    typer.echo(write_case_study(run_case_study(settings), out))
    typer.echo(f"wrote {out}/case_study.md, case_study.json, confidence.png")


@app.command()
def masks(
    out: Path = typer.Option(Path("masks.png"), help="figure to write"),
    dataset: str = typer.Option("digits", help="digits | cifar10 | cifar100"),
    data_root: str = typer.Option(None, help="directory of a local CIFAR copy"),
    n: int = typer.Option(8, min=1, help="images of the fixed test subset"),
    classifier: str = typer.Option(None, help="classifier spec, the mask's source (default: "
                                   "the dataset's)"),
    diffusion: str = typer.Option(None, help="eps-model spec (default: the dataset's)"),
    t_large: float = typer.Option(HeteroSettings.default("t_large"), help="t_l inside the mask"),
    t_small: float = typer.Option(HeteroSettings.default("t_small"), help="t_s outside the mask"),
    tau: float = typer.Option(HeteroSettings.default("tau"), help="mask threshold τ"),
    mask_convention: str = typer.Option("paper", help="paper | authors-code (the mask as "
                                        "the authors' code computes it)"),
    dt: float = typer.Option(1e-2, help="DDPM respacing step (1e-3: every level)"),
    eps: float = typer.Option(0.0, help="> 0: show ℓ∞ PGD-20 adversarial images of the bare "
                              "classifier at this budget"),
    seed: int = typer.Option(0, help="seed of the purification noise (and PGD's start)"),
) -> None:
    """Heterogeneous purification, pictured (Pei et al. Fig. 5): input, attention map of every
    block, mask, purified image."""
    from ..studies.masks import MaskSettings, run_masks

    from ..data.profiles import default_model

    with bad_parameters():
        classifier = classifier or default_model(dataset, "classifier")
        diffusion = diffusion or default_model(dataset, "diffusion")
    settings = MaskSettings(dataset=dataset, data_root=data_root, n=n, classifier=classifier,
                            diffusion=diffusion, t_large=t_large, t_small=t_small, tau=tau,
                            mask_convention=mask_convention, dt=dt, eps=eps, seed=seed)
    with bad_parameters():
        path, coverage = run_masks(settings, out)
    typer.echo(f"the mask covers {coverage:.1%} of the pixels of the {n} images")
    typer.echo(f"wrote {path}")
