"""Frozen evaluation configs (pydantic), saved next to every result (DESIGN.md §2, §5).

The defense and the attacks are the settings of the registered purifiers (``PURIFIERS``) and
attacks (``ATTACKS``), chosen by ``name``: a discriminated union resolved through the
registries, so every option is declared once, in its purifier's or attack's own module.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PositiveInt,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from ..attacks import ATTACKS, AttackSettings
from ..data import DATASETS, SPLITS
from ..data.profiles import default_eps, default_model
from ..purifiers import PURIFIERS, AGDMSettings, DefenseSettings, NoDefense
from ..settings import Settings, command_line, resolve, validation_errors
from .protocols import PROTOCOLS, protocol_attacks, reductions

# the defaults of the single config model before the registries (0.1.0 run files): a field
# another purifier or attack owned was written with these values, or None, and means nothing
DEFAULT_N = 512            # the papers' robust subset
IN_MEMORY = "in-memory"     # the dataset of advpure.evaluate: tensors given in Python
LEGACY_DEFAULTS = {
    "defense": {"diffusion": "builtin:digits-unet", "sampler": "sde", "t_star_delta": 0.0,
                "dt": 1e-3, "gradient": "exact", "ensemble": 1, "ensemble_rule": "mean"},
    "attack": {"eps": 8 / 255, "norm": "linf", "steps": 20, "random_init": True},
}


def upgrade_legacy(options: Any, section: str, entries: dict) -> Any:
    """Options written by advpure 0.1.0 (every field of every purifier or attack, None or its
    default where unused) reduced to the named entry's own; a field that mattered and is not
    the entry's stays, and validation names it."""
    if not isinstance(options, dict) or options.get("name", "none") not in entries:
        return options
    own = entries[options.get("name", "none")].model_fields
    legacy = LEGACY_DEFAULTS[section]
    kept = {}
    for field, value in options.items():
        unused = value is None or (field not in own and legacy.get(field, ...) == value)
        if options.get("name") == "stadv" and field in ("eps", "norm"):
            unused = True              # 0.1.0 wrote them for StAdv too, documented as unused
        if not unused or (field in own and own[field].default is None):
            kept[field] = value
    return kept


def DefenseConfig(**options) -> DefenseSettings:            # noqa: N802 (the union's name)
    """The settings of the purifier ``name`` (default 'none') from its options."""
    return resolve(PURIFIERS, upgrade_legacy(options, "defense", PURIFIERS), "defense")


def AttackConfig(**options) -> AttackSettings:              # noqa: N802 (the union's name)
    """The settings of the attack ``name`` from its options."""
    return resolve(ATTACKS, upgrade_legacy(options, "attack", ATTACKS), "attack")


def _message(err: ValueError) -> str:
    return validation_errors(err) if isinstance(err, ValidationError) else str(err)


def _defense(value: Any) -> DefenseSettings:
    return value if isinstance(value, DefenseSettings) else DefenseConfig(**value)


def _attack(value: Any) -> AttackSettings:
    return value if isinstance(value, AttackSettings) else AttackConfig(**value)


def with_default_models(defense: DefenseSettings, dataset: str) -> DefenseSettings:
    """``defense`` with its unset model specs (eps-model, AGDM's φ) set to ``dataset``'s."""
    if defense.name == "none":
        return defense
    changes = {}
    if defense.diffusion is None:
        changes["diffusion"] = default_model(dataset, "diffusion")
    if isinstance(defense, AGDMSettings) and defense.guidance_classifier is None:
        changes["guidance_classifier"] = default_model(dataset, "guidance")
    return defense.replace(**changes) if changes else defense


def with_default_eps(attack: AttackSettings, dataset: str) -> AttackSettings:
    """``attack`` with an unset ε set to ``dataset``'s for its norm."""
    if "eps" not in type(attack).model_fields or attack.eps is not None:
        return attack
    return attack.replace(eps=default_eps(dataset, attack.norm))


class EvalConfig(Settings):
    """An evaluation: data, classifier, defense, the attacks (given, or a paper's ``protocol``
    with optional caps), seeds and the number of purification draws per final evaluation.

    The single-attack form ``attack: {...}`` (the CLI's ``--attack`` flags, older run files) is
    read as ``attacks: [{...}]``."""

    dataset: Literal[DATASETS + (IN_MEMORY,)] = Field("digits", description=" | ".join(DATASETS))
    data_root: str | None = Field(None, description="directory of a local dataset copy (CIFAR "
                                  "batches, SVHN .mat files, ImageNet val class folders)")
    split: Literal[SPLITS] = Field("test", description="the split evaluated")
    n: PositiveInt | None = Field(None, description="robust accuracy: size of the fixed random "
                                  f"subset, at most the split (default: {DEFAULT_N}, or the "
                                  "whole split when smaller; the run records the value)")
    standard_n: PositiveInt | None = Field(None, description="standard accuracy: images of the "
                                           "same fixed order (default: the whole split; = n "
                                           "for the robust subset only)")
    subset_seed: int = Field(0, description="seed of the subset")
    classifier: str | None = Field(None, description="classifier spec: builtin:NAME, "
                                   "FAMILY:PATH (wrn-28-10, wrn-70-16-dropout, resnet18-cifar, "
                                   "resnet50) or a checkpoint path (default: the dataset's, "
                                   "builtin:digits-cnn or builtin:cifar10-resnet18)")
    defense: SerializeAsAny[DefenseSettings] = Field(NoDefense(), description="the purifier: "
                                                     + " | ".join(command_line(PURIFIERS)))
    defenses: tuple[SerializeAsAny[DefenseSettings], ...] = Field(
        (), description="the rows of `advpure table` (experiment files only)")
    attacks: tuple[SerializeAsAny[AttackSettings], ...] = Field(
        (), description="the attacks, each evaluated on its own")
    protocol: Literal[PROTOCOLS] | None = Field(None, description="a paper's attacks, instead "
                                                "of given ones: " + " | ".join(PROTOCOLS))
    max_steps: PositiveInt | None = Field(None, description="cap every protocol attack's "
                                          "iterations")
    max_eot: PositiveInt | None = Field(None, description="cap every protocol attack's EOT "
                                        "count")
    max_queries: PositiveInt | None = Field(None, description="cap Square's queries in a "
                                            "protocol")
    draws: PositiveInt = Field(1, description="purification draws per final evaluation "
                               "(single-draw and vote accuracy)")
    save_adversarial: bool = Field(False, description="keep the adversarial images in the "
                                   "record store")
    note: str | None = Field(None, description="a line shown first in every report and table "
                             "(e.g. 'reduced protocol')")
    seeds: tuple[int, ...] = Field((0,), min_length=1, description="seeds of the repeated "
                                   "evaluation, e.g. 0,1,2")
    batch_size: PositiveInt = Field(128, description="images per batch (one shard)")

    @field_validator("defense", mode="before")
    @classmethod
    def _resolve_defense(cls, value):
        return _defense(value)

    @field_validator("defenses", "attacks", mode="before")
    @classmethod
    def _resolve_lists(cls, values, info):
        resolve_one = _defense if info.field_name == "defenses" else _attack
        resolved = []
        for i, value in enumerate(values):
            try:
                resolved.append(resolve_one(value))
            except ValueError as err:
                raise ValueError(f"[{i}] {_message(err)}") from None
        return tuple(resolved)

    @model_validator(mode="before")
    @classmethod
    def _single_attack(cls, data):
        if not isinstance(data, dict) or "attack" not in data:
            return data
        data = dict(data)
        attack = data.pop("attack")
        if data.get("attacks"):
            raise ValueError("expected either 'attack' (one attack) or 'attacks' (a list), "
                             "found both")
        name = attack.get("name", "none") if isinstance(attack, dict) else attack.name
        data["attacks"] = () if name == "none" else (attack,)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        d = self.defense
        if self.standard_n is not None and self.standard_n < (self.n or 1):
            raise ValueError(f"expected standard_n >= n (the robust subset is part of the "
                             f"standard one), found standard_n={self.standard_n}, n={self.n}")
        if self.protocol is not None and self.attacks:
            raise ValueError(f"expected either a protocol or attacks, found protocol "
                             f"{self.protocol!r} and {len(self.attacks)} attack(s)")
        caps = [f for f in ("max_steps", "max_eot", "max_queries") if getattr(self, f)]
        if caps and self.protocol is None:
            raise ValueError(f"{', '.join(caps)} cap a protocol's budgets; found no protocol "
                             "(set the attack's own steps/eot instead)")
        needy = [a.name for a in self.attacks if getattr(a, "needs_purifier", False)]
        if isinstance(d, NoDefense) and needy:
            raise ValueError(f"the {needy[0]!r} attack needs a purifier; found defense 'none'")
        return self

    @model_validator(mode="after")
    def _dataset_defaults(self) -> EvalConfig:
        """Unset models and budgets become the dataset's (``data.profiles``), so that the
        config — and config.json — says what actually runs. (Set while validating, before
        anyone sees the instance: the one place a frozen config is written.)"""
        dataset = self.dataset
        if dataset == IN_MEMORY:             # advpure.evaluate: the caller's models and ε
            return self
        updates = {"classifier": self.classifier or default_model(dataset, "classifier"),
                   "defense": with_default_models(self.defense, dataset),
                   "defenses": tuple(with_default_models(d, dataset) for d in self.defenses),
                   "attacks": tuple(with_default_eps(a, dataset) for a in self.attacks)}
        for field, value in updates.items():
            object.__setattr__(self, field, value)
        return self

    def resolved_attacks(self) -> list[AttackSettings]:
        """The attacks to run: the given ones, or the protocol's with the caps applied."""
        if self.protocol is None:
            return list(self.attacks)
        caps = {"steps": self.max_steps, "eot": self.max_eot, "queries": self.max_queries}
        return [a.capped(caps) for a in protocol_attacks(self.protocol, self.dataset)]

    def budget_reductions(self) -> list[str]:
        """What this run used less of than its protocol (empty without one)."""
        if self.protocol is None:
            return []
        return reductions(protocol_attacks(self.protocol, self.dataset), self.resolved_attacks())


config_errors = validation_errors


def section_fields(entries: dict) -> dict[str, list[tuple[str, Any]]]:
    """Option name -> [(entry name, its FieldInfo), …] over a registry (``name`` left out)."""
    fields: dict[str, list[tuple[str, Any]]] = {}
    for entry, settings in command_line(entries).items():
        for field, info in settings.model_fields.items():
            if field != "name":
                fields.setdefault(field, []).append((entry, info))
    return fields


def flat_fields() -> dict[str, tuple[str | None, str]]:
    """Flat option name -> (section, field): 'ddim_eta' -> ('defense', 'ddim_eta'), 'defense' ->
    ('defense', 'name'), 'n' -> (None, 'n'). The CLI flags are these names with dashes. A field
    that purifiers and attacks both declare keeps its name for the defense and is
    'attack_<name>' for the attack ('variant' -> --variant, --attack-variant)."""
    fields: dict[str, tuple[str | None, str]] = {}
    for section, entries in (("defense", PURIFIERS), ("attack", ATTACKS)):
        fields[section] = (section, "name")
        fields.update({(f"attack_{f}" if section == "attack" and f in fields else f): (section, f)
                       for f in section_fields(entries)})
    own = {f: (None, f) for f in EvalConfig.model_fields
           if f not in ("defense", "attacks", "defenses")}     # lists: files only
    clash = sorted(set(own) & set(fields))
    if clash:
        raise RuntimeError(f"option names used twice across sections: {', '.join(clash)}")
    return fields | own


def read_experiment_file(path: Path) -> dict:
    """The content of a YAML (.yaml, .yml) or JSON experiment file, as a dict; a ValueError
    names the file and what is wrong with it (validation happens in ``config_from_flat``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"expected an experiment file, found no file {path}")
    text = path.read_text()
    try:
        content = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                         f"{err}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a mapping of fields (dataset, defense, attacks or "
                         f"protocol, seeds, …), found {type(content).__name__}")
    check_nesting(content, path)
    return content


def check_nesting(content: dict, path: Path) -> None:
    """Refuse the flat style of the command line in a file (``attack: pgd``, ``eps: 0.2`` at
    the top), saying how to nest it."""
    example = {"defense": "defense: {name: diffpure, t_star: 0.1}",
               "attack": "attacks: [{name: pgd, eps: 0.2}]"}
    for section in ("defense", "attack"):
        if isinstance(content.get(section), str):
            raise ValueError(f"{path}: {section}: expected a mapping with its name and options, "
                             f"such as {example[section]}, found {content[section]!r}")
    own = set(EvalConfig.model_fields) | {"attack"}
    fields = flat_fields()
    for key in content:
        if key not in own and key in fields and fields[key][0] is not None:
            section = fields[key][0]
            nested = f"defense: {{name: …, {key}: …}}" if section == "defense" else \
                f"attacks: [{{name: …, {key}: …}}]"
            raise ValueError(f"{path}: {key}: expected it inside the {section}'s mapping, "
                             f"{nested}, found it at the top level (the flat style is the "
                             "command line's)")


def config_from_flat(values: dict[str, object], base: dict | None = None) -> EvalConfig:
    """An ``EvalConfig`` from flat options (None = keep), on top of ``base`` (an experiment
    file's content); raises pydantic's ``ValidationError`` (see ``config_errors``)."""
    nested = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (base or {}).items()}
    fields = flat_fields()
    attack_flags = [n for n, v in values.items() if v is not None and fields[n][0] == "attack"]
    if attack_flags and nested.get("attacks"):
        if len(nested["attacks"]) != 1:
            raise ValueError(f"the experiment file lists {len(nested['attacks'])} attacks; "
                             f"flags such as --{attack_flags[0].replace('_', '-')} change one "
                             "attack: edit the file instead")
        nested["attack"] = dict(nested.pop("attacks")[0])
    for name, value in values.items():
        if value is None:
            continue
        section, field = fields[name]
        target = nested if section is None else nested.setdefault(section, {})
        target[field] = value
    return EvalConfig.model_validate(nested)
