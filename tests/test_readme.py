"""Every code block of README.md runs: each `advpure` command is parsed by the real CLI (the
evaluation commands validate their config with --dry-run; the others parse their flags), and
the Python blocks run in order, as written, each attack and evaluation for real on 2 images at
the shortest budgets (the README's own budgets are a CPU's minutes)."""
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


SHORTEST = {"steps": 2, "eot": 2, "queries": 10, "square_queries": 10, "em_iters": 1,
            "draws": 2, "restarts": 2}


def shortest(function, images: int = 2):
    """The real attack on the first ``images`` images at the shortest budgets; the images not
    attacked are returned as they were, so the README's shapes hold."""
    signature = inspect.signature(function)

    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        arguments = bound.arguments
        x = arguments["x"]
        arguments["x"] = x[:images]
        for name in ("y", "targets"):
            if arguments.get(name) is not None:
                arguments[name] = arguments[name][:images]
        for name, cap in SHORTEST.items():
            if name in arguments and arguments[name] is not None:
                arguments[name] = min(arguments[name], cap)
        attacked = function(*bound.args, **bound.kwargs)
        if isinstance(attacked, tuple):                 # (images, the attack's log)
            return (torch.cat([attacked[0], x[images:]]), *attacked[1:])
        return torch.cat([attacked, x[images:]])
    return call


def shortest_evaluate(defense, x, y, attacks=(), **kwargs):
    """``advpure.evaluate`` on 2 images, one seed, one draw, the attacks at the shortest
    budgets."""
    from advpure.evaluation.api import evaluate
    from advpure.evaluation.config import AttackConfig

    def cut(a):
        a = AttackConfig(**a) if isinstance(a, dict) else a
        return a.replace(**{k: min(v, SHORTEST[k]) for k, v in a.budgets().items()})
    kwargs.update(seeds=tuple(kwargs.get("seeds", (0,)))[:1], draws=1)
    return evaluate(defense, x[:2], y[:2], [cut(a) for a in attacks], **kwargs)


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
                 "diffusion_only", "diffattack", "diffhammer", "diffhammer_authors",
                 "low_frequency"):
        monkeypatch.setattr(attacks, name, shortest(getattr(attacks, name)))
    monkeypatch.setattr(advpure, "evaluate", shortest_evaluate)
    monkeypatch.setattr(runner, "run_evaluation", shrunk(runner.run_evaluation))
    monkeypatch.setattr(advpure.evaluation, "run_evaluation", shrunk(runner.run_evaluation))
    monkeypatch.setattr(sweep, "run_sweep", shrunk(sweep.run_sweep))
    monkeypatch.setattr(executors, "RayExecutor", checked(executors.RayExecutor,
                                                          lambda *a, **k: executors.LocalExecutor()))
    real_audit, real_target = audit.run_audit, audit.target_from_config
    monkeypatch.setattr(audit, "run_audit", checked(real_audit, lambda target, budget: real_audit(
        target, audit.AuditBudget(images=2, factors=(1, 2), eps_factors=(0.5, 1.0), repeats=2,
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
    namespace: dict = {}
    for block in blocks("python"):                 # in order, as a reader runs them
        exec(compile(block.replace("dt=1e-3)   # paper defaults", "dt=5e-2)"), "README.md",
                     "exec"), namespace)
    assert namespace["x_pur"].shape[1:] == (1, 8, 8) and torch.isfinite(namespace["logits"]).all()
    assert namespace["audit"].checks and (tmp_path / "runs/example/results.md").is_file()
    assert (tmp_path / "runs/python/records.sqlite").is_file()
    assert namespace["blurred"].accuracy("standard")["mean"] >= 0
