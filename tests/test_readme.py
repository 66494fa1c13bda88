"""Every code block of README.md runs: each `advpure` command is parsed by the real CLI (the
evaluation commands validate their config with --dry-run; the others parse their flags), and
the Python blocks run in order with the smallest budgets (heavy calls are checked against the
real signatures and shrunk)."""
from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import click
import pytest
import torch
import typer
from typer.testing import CliRunner

import advpure
from advpure.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands() -> list[list[str]]:
    """The `advpure …` lines of the bash blocks, continuation lines joined, comments cut."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["advpure"]:
                found.append(words[1:])
    return found


def leaf(args: list[str]) -> tuple[click.Command, click.Context]:
    """The command that ``args`` name, with its options parsed (nothing runs)."""
    command: click.Command = typer.main.get_command(app)
    context = command.make_context("advpure", list(args), resilient_parsing=False)
    while isinstance(command, click.Group):
        protected = getattr(context, "_protected_args", None)
        rest = [*(context.protected_args if protected is None else protected), *context.args]
        name, command, rest = command.resolve_command(context, rest)
        context = command.make_context(name, rest, parent=context)
    return command, context


EVALUATING = {"evaluate", "sweep", "table", "audit"}


def test_the_readme_has_commands_of_every_group():
    assert {args[0] for args in commands()} >= EVALUATING | {"train", "bench", "models", "report"}


@pytest.mark.parametrize("args", commands(), ids=lambda a: " ".join(a)[:60])
def test_every_readme_command_parses(args, monkeypatch):
    monkeypatch.chdir(ROOT)
    command, context = leaf(args)
    if command.name not in EVALUATING:
        return                                   # parsed: every flag exists and has its type
    if "--config" in args:
        path = Path(args[args.index("--config") + 1])
        if not path.is_file():                   # a run directory the README made before
            args = args[:args.index("--config")] + args[args.index("--config") + 2:]
    result = CliRunner().invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- the Python blocks

def checked(function, result=lambda *args, **kwargs: args[1] if len(args) > 1 else None):
    """A stand-in for a long call: the arguments must bind to ``function``'s signature."""
    signature = inspect.signature(function)

    def call(*args, **kwargs):
        signature.bind(*args, **kwargs)
        return result(*args, **kwargs)
    return call


def small(cfg):
    """``cfg`` on 2 images, one seed, one draw (the attacks as written)."""
    return cfg.model_copy(update={"n": 2, "standard_n": 2, "seeds": cfg.seeds[:1], "draws": 1,
                                  "batch_size": 2})


def shrunk(function):
    def call(cfg, *args, **kwargs):
        inspect.signature(function).bind(cfg, *args, **kwargs)
        if function.__name__ == "run_sweep":
            args = (args[0], args[1][:1], *args[2:])
        kwargs.pop("executor", None)
        return function(small(cfg), *args, **kwargs)
    return call


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_readme_python_blocks_run(tmp_path, monkeypatch):
    from advpure import attacks, data
    from advpure.evaluation import executors, runner
    from advpure.reports import sweep
    from advpure.studies import audit

    monkeypatch.chdir(tmp_path)
    for name in ("pgd", "apgd_eot", "apgd_official", "autoattack", "square", "stadv",
                 "diffusion_only", "diffattack", "diffhammer", "low_frequency"):
        monkeypatch.setattr(attacks, name, checked(getattr(attacks, name)))
    monkeypatch.setattr(runner, "run_evaluation", shrunk(runner.run_evaluation))
    monkeypatch.setattr(advpure.evaluation, "run_evaluation", shrunk(runner.run_evaluation))
    monkeypatch.setattr(sweep, "run_sweep", shrunk(sweep.run_sweep))
    monkeypatch.setattr(executors, "RayExecutor", checked(executors.RayExecutor,
                                                          lambda *a, **k: executors.LocalExecutor()))
    real_audit, real_target = audit.run_audit, audit.target_from_config
    monkeypatch.setattr(audit, "run_audit", checked(real_audit, lambda target, budget: real_audit(
        target, audit.AuditBudget(images=2, budget_factors=(1, 2), eps_factors=(0.5, 1.0), draws=2,
                                  square_queries=5))))
    def cheap(cfg):                  # the audit multiplies its attack's budget: start small
        return small(cfg).model_copy(update={"attacks": tuple(
            a.replace(**{k: 2 if k == "steps" else 1 for k in a.budgets()}) for a in cfg.attacks)})
    monkeypatch.setattr(audit, "target_from_config",
                        checked(real_target, lambda cfg, images: real_target(cheap(cfg), 2)))
    real_load = data.load
    monkeypatch.setattr(data, "load", lambda name, *a, **k: real_load("digits", "test")
                        if name == "imagenet" else real_load(name, *a, **k))
    digits = {"classifier": advpure.load_classifier, "diffusion": advpure.load_diffusion}
    for kind, loader in digits.items():            # public files the README points at
        monkeypatch.setattr(advpure, f"load_{kind}", lambda spec, loader=loader, kind=kind:
                            loader(spec if Path(spec.partition(":")[2]).is_file() or
                                   spec.startswith("builtin:") else f"builtin:digits-"
                                   f"{'cnn' if kind == 'classifier' else 'unet'}"))
    python = blocks("python")
    audit_block = next(b for b in python if "run_audit" in b)
    ordered = [b for b in python if b is not audit_block] + [audit_block]
    namespace: dict = {}
    for block in ordered:
        exec(compile(block.replace("dt=1e-3)   # paper defaults", "dt=5e-2)"), "README.md",
                     "exec"), namespace)
    assert namespace["x_pur"].shape[1:] == (1, 8, 8) and torch.isfinite(namespace["logits"]).all()
    assert namespace["audit"].checks and (tmp_path / "runs/example/results.md").is_file()
