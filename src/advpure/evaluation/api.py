"""``advpure.evaluate``: the one-call evaluation of any defense built in Python, as RobustBench
and AutoAttack users expect, through the engine the command line runs — the same shards and
per-batch generators, records (``records.sqlite`` under ``out``), results and reports."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .._checks import check_images, check_labels
from ..attacks import AttackSettings
from ..attacks.base import check_classes, check_model_input
from ..defense import PurifiedClassifier
from ..purifiers import ModuleDefense
from .config import IN_MEMORY, AttackConfig, EvalConfig
from .executors import LocalExecutor
from .experiment import evaluate_batch
from .results import EvalResult
from .runner import run_planned

NEEDS_PURIFIER = ("bpda", "transfer", "diffusion_only")   # attacks on a part of the defense


class GivenDefense:
    """The engine's view of a defense given as a module: the model attacks see, bound to each
    batch's generator. A ``PurifiedClassifier`` is rebuilt around that generator exactly as the
    command line builds its own (so the same seeds give the same numbers); any other module is
    used as it is (its randomness, if any, is its own)."""

    def __init__(self, module: nn.Module):
        self.module = module
        given = isinstance(module, PurifiedClassifier)
        self.purifier = module.purifier if given else None
        self.classifier = module.classifier if given else module

    def model(self, classifier: nn.Module, generator: torch.Generator,
              gradient: str | None = None) -> nn.Module:
        m = self.module
        if not isinstance(m, PurifiedClassifier):
            return m
        gradient = gradient or m.gradient
        return PurifiedClassifier(m.purifier, m.classifier, generator=generator,
                                  gradient=gradient,
                                  surrogate=m.surrogate if gradient == "surrogate" else None,
                                  ensemble=m.ensemble, ensemble_rule=m.ensemble_rule,
                                  memory_budget=m.memory_budget if gradient == "checkpoint"
                                  else None, rows_per_pass=m.rows_per_pass)


def fingerprint(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 (16 hex digits) of the module's weights and buffers and of the data: a run
    directory resumes only the same defense on the same images."""
    digest = hashlib.sha256()
    for name, tensor in [*module.state_dict().items(), ("x", x), ("y", y)]:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def describe_module(module: nn.Module) -> str:
    """'PurifiedClassifier(DiffPure, SmallCNN; exact gradient)' or the module's class name."""
    if isinstance(module, PurifiedClassifier):
        inner = [type(module.purifier).__name__, type(module.classifier).__name__]
        return f"PurifiedClassifier({', '.join(inner)}; {module.gradient} gradient)"
    return type(module).__name__


def _attack(value: AttackSettings | dict | str) -> AttackSettings:
    if isinstance(value, str):
        value = {"name": value}
    attack = value if isinstance(value, AttackSettings) else AttackConfig(**value)
    if "eps" in type(attack).model_fields and attack.eps is None:
        raise ValueError(f"attacks: {attack.name} needs eps (ε): tensors given in Python have "
                         "no dataset default")
    return attack


def evaluate(defense: nn.Module, x: torch.Tensor, y: torch.Tensor,
             attacks: Iterable[AttackSettings | dict | str] = (), *, seeds: Iterable[int] = (0,),
             draws: int = 1, out: str | Path | None = None, batch_size: int = 128,
             save_adversarial: bool = False, note: str | None = None,
             progress: bool = True) -> EvalResult:
    """Standard and robust accuracy of ``defense`` (any nn.Module: [0, 1] images in, logits
    out) on the images ``x`` with labels ``y`` under ``attacks`` (settings such as
    ``advpure.attacks.ATTACKS["pgd"](eps=0.2, steps=20, eot=4)``, their dicts, or names), for
    every seed, each final input classified in ``draws`` purification draws.

    With ``out`` every batch is recorded in ``out/records.sqlite`` as it finishes (a run of the
    same defense, data and settings there is resumed), and ``results.md``/``.json``/``.csv``
    are written as ``advpure evaluate`` writes them. A ``PurifiedClassifier`` gets the command
    line's per-batch generators: the same seeds give the command line's numbers.
    """
    check_images(x)
    y = check_labels(y, x.shape[0])
    check_model_input(defense, x)
    check_classes(defense, y)
    chosen = [_attack(a) for a in attacks]
    given = GivenDefense(defense)
    partial = [a.name for a in chosen if a.name in NEEDS_PURIFIER]
    if partial and given.purifier is None:
        raise ValueError(f"attacks: {partial[0]} attacks a part of the defense (its purifier or "
                         "classifier): give the defense as advpure.PurifiedClassifier(purifier, "
                         f"classifier), found a {type(defense).__name__}")
    cfg = EvalConfig(dataset=IN_MEMORY, n=len(y), classifier=type(given.classifier).__name__,
                     defense=ModuleDefense(label=describe_module(defense),
                                           fingerprint=fingerprint(defense, x, y)),
                     attacks=tuple(chosen), seeds=tuple(seeds), draws=draws,
                     batch_size=batch_size, save_adversarial=save_adversarial, note=note)
    attack_list = cfg.resolved_attacks()

    def work(config_json: str, shard) -> list:
        indices = torch.tensor(shard.indices)
        return evaluate_batch(cfg, given, given.classifier, attack_list, x[indices], y[indices],
                              indices, shard.seed, shard.start)

    result = run_planned(cfg, len(y), LocalExecutor(work=work), out and Path(out), progress)
    if out is not None:
        from ..reports import write_run

        write_run(result, Path(out))
    return result
