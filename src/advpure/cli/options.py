"""The options of the commands that evaluate, generated from the settings: every purifier's,
every attack's and the evaluation's fields become flags (``t_star`` -> ``--t-star``) whose type,
default and help text come from the field's declaration, so no default is typed twice."""
from __future__ import annotations

import contextlib
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from pydantic.fields import FieldInfo

from ..settings import plain_type

PANELS = {None: "Evaluation", "defense": "Defense (--defense NAME and its options)",
          "attack": "Attack (--attack NAME and its options; several: an experiment file)"}


def flag_type(info: FieldInfo) -> type:
    """The command-line type of a field: bool, int, float or str (choices and comma-separated
    lists are strings, validated by the settings)."""
    kind = plain_type(info.annotation)
    return kind if kind in (bool, int, float) else str


def is_list(info: FieldInfo) -> bool:
    return typing.get_origin(plain_type(info.annotation)) is tuple


def _with_default(text: str, info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=True)
    if default is None or default == () or "default" in text:
        return text
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else \
        f"{default:.4g}" if isinstance(default, float) else default
    return f"{text} (default: {shown})"


def option_help(owners: list[tuple[str, FieldInfo]], every: int) -> str:
    """One help text for an option several entries declare: 'desc (default: X)' when they
    agree, else 'coup: desc (default: X); agdm: …'; entries named unless all have it."""
    texts = {}
    for entry, info in owners:
        texts.setdefault(_with_default(info.description or "", info), []).append(entry)
    if len(texts) == 1 and len(owners) == every:
        return next(iter(texts))
    return "; ".join(f"{'/'.join(entries)}: {text}" for text, entries in texts.items())


def eval_options() -> list[tuple[str, type, str, str]]:
    """(flag name, type, help, panel) of every evaluation option, from the registries."""
    from ..attacks import ATTACKS
    from ..evaluation.config import EvalConfig, flat_fields, section_fields
    from ..purifiers import PURIFIERS
    from ..settings import command_line

    registries = {"defense": command_line(PURIFIERS), "attack": command_line(ATTACKS)}
    fields = {section: section_fields(entries) for section, entries in registries.items()}
    options = []
    for name, (section, field) in flat_fields().items():
        if section is None:
            info = EvalConfig.model_fields[field]
            options.append((name, flag_type(info), _with_default(info.description, info),
                            PANELS[None]))
        elif field == "name":
            names = " | ".join(registries[section])
            extra = "" if section == "defense" else " (none: no attack)"
            options.append((name, str, f"{names}{extra}", PANELS[section]))
        else:
            owners = fields[section][field]
            options.append((name, flag_type(owners[0][1]),
                            option_help(owners, len(registries[section]) - 1), PANELS[section]))
    return options


def list_options() -> set[str]:
    """The flat options given as comma-separated lists (seeds, mask_blocks)."""
    from ..attacks import ATTACKS
    from ..evaluation.config import EvalConfig, flat_fields, section_fields
    from ..purifiers import PURIFIERS

    infos = dict(EvalConfig.model_fields)
    for entries in (PURIFIERS, ATTACKS):
        infos |= {f: owners[0][1] for f, owners in section_fields(entries).items()}
    return {name for name in flat_fields() if name in infos and is_list(infos[name])}


def _keyword(name: str, kind: type, default: Any, help_text: str, panel: str | None = None):
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                             default=typer.Option(default, help=help_text,
                                                  rich_help_panel=panel))


def _own_parameters(command, skip: str) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(command)        # the annotations as types, not strings
    return [p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(command).parameters.values() if p.name != skip]


def with_eval_options(prepare: Callable[[dict, dict], None] | None = None):
    """Add the evaluation options (and ``--config``) to a command, which receives the validated
    ``EvalConfig`` as its ``config`` argument. ``prepare(options, own_arguments)`` may fill
    options from the command's own arguments before validation."""
    def decorate(command):
        params = [_keyword("config", Path, None, "experiment file (YAML or JSON, e.g. a run's "
                           "config.json); flags override it", PANELS[None])]
        params += [_keyword(name, kind, None, text, panel)
                   for name, kind, text, panel in eval_options()]
        names = [p.name for p in params]
        params.append(_keyword("dry_run", bool, False, "validate the options, print the config "
                               "and stop", PANELS[None]))

        def wrapper(**kwargs):
            options = {name: kwargs.pop(name) for name in names}
            dry_run = kwargs.pop("dry_run")
            if prepare is not None:
                prepare(options, kwargs)
            config = eval_config(options)
            if dry_run:
                from ..evaluation.experiment import describe

                typer.echo(f"{describe(config)}\n{config.model_dump_json(indent=2)}")
                return None
            return command(config=config, **kwargs)

        wrapper.__name__, wrapper.__doc__ = command.__name__, command.__doc__
        own = _own_parameters(command, "config")
        wrapper.__signature__ = inspect.Signature(in_panel_order(own + params))
        return wrapper
    return decorate


PANEL_ORDER = [None, PANELS[None], PANELS["defense"], PANELS["attack"], "Executor"]


def _panel(parameter: inspect.Parameter) -> str | None:
    return getattr(parameter.default, "rich_help_panel", None)


def in_panel_order(params: list[inspect.Parameter]) -> list[inspect.Parameter]:
    """The command's own options first, then the evaluation's, the defense's, the attack's,
    and the executor's last (``--help`` lists the panels in this order)."""
    rank = {panel: i for i, panel in enumerate(PANEL_ORDER)}
    return sorted(params, key=lambda p: rank.get(_panel(p), 0))


def eval_config(options: dict):
    """The ``EvalConfig`` of the command line: the experiment file, then the flags."""
    from pydantic import ValidationError

    from ..evaluation.config import (
        config_errors,
        config_from_flat,
        read_experiment_file,
    )

    path = options.pop("config")
    try:
        base = None if path is None else read_experiment_file(path)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    for name in list_options():
        if options.get(name) is not None:
            options[name] = tuple(v.strip() for v in options[name].split(","))
    try:
        return config_from_flat(options, base)
    except ValidationError as err:
        raise typer.BadParameter(config_errors(err)) from None
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


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
    params = [_keyword(name, kind, default, text, "Executor")
              for name, kind, default, text in EXECUTOR_OPTIONS]

    def wrapper(**kwargs):
        from ..evaluation.executors import make_executor

        options = {name: kwargs.pop(name) for name, *_ in EXECUTOR_OPTIONS}
        try:
            executor = make_executor(options.pop("executor"), **options)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
        return command(executor=executor, **kwargs)

    wrapper.__name__, wrapper.__doc__ = command.__name__, command.__doc__
    wrapper.__signature__ = inspect.Signature(_own_parameters(command, "executor") + params)
    return wrapper


@contextlib.contextmanager
def reported_run_errors():
    """A run that cannot go on (its directory in use, shards failed) ends with its message."""
    from ..evaluation.store import RunError

    try:
        yield
    except RunError as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from None


@contextlib.contextmanager
def bad_parameters():
    """A ValueError from the library becomes the command's usage error, with its message."""
    try:
        yield
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


def parse_list(text: str, kind: type) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected a comma-separated list, found {text!r}") from None
