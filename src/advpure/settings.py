"""Typed, frozen settings: the one place where an option, its default and its description live.

Every purifier and every attack declares its options once, as a ``Settings`` subclass next to
its implementation (DESIGN.md §3, "One source of truth"). The experiment config, the CLI flags,
``describe``, tables and sweeps are derived from those declarations through the helpers here.
"""
from __future__ import annotations

import types
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo


class Settings(BaseModel):
    """A frozen set of options; unknown options are errors, never silently ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def default(cls, field: str) -> Any:
        """The declared default of ``field``."""
        return cls.model_fields[field].get_default(call_default_factory=True)

    def replace(self, **changes: Any):
        """A validated copy with ``changes`` applied."""
        return type(self).model_validate(self.model_dump() | changes)

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults (``name`` excluded)."""
        return {f: getattr(self, f) for f in type(self).model_fields
                if f != "name" and getattr(self, f) != self.default(f)}


class Named(Settings):
    """Settings of one entry of a registry (a purifier, an attack): ``name`` is the
    discriminator, a ``Literal`` of one value in each subclass (declared here so that it comes
    first in every dump)."""

    name: str
    kind: ClassVar[str] = "entry"        # what the registry holds, for error messages

    @classmethod
    def registry_name(cls) -> str:
        return typing.get_args(cls.model_fields["name"].annotation)[0]


def registry(*entries: type[Named]) -> dict[str, type[Named]]:
    """name -> settings class, from the classes' own ``name`` literals."""
    return {entry.registry_name(): entry for entry in entries}


def command_line(entries: dict[str, type[Named]]) -> dict[str, type[Named]]:
    """The entries the command line and tables offer (``python_only`` ones left out: a defense
    that only Python can give, ``advpure.evaluate``'s module)."""
    return {name: e for name, e in entries.items() if not getattr(e, "python_only", False)}


def resolve(entries: dict[str, type[Named]], value: Any, what: str) -> Named:
    """``value`` (a mapping with ``name``, or settings) validated as the entry it names: the
    discriminated union over a registry, looked up when validated so that an entry registered
    later (a plug-in, a test) is accepted like the built-in ones."""
    if isinstance(value, Named):
        value = value.model_dump()
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of {what} options with a 'name', found "
                         f"{type(value).__name__}")
    name = value.get("name", "none")
    if name not in entries:
        kind = next(iter(entries.values())).kind
        raise ValueError(f"expected a {kind} name among {', '.join(command_line(entries))}, found {name!r}")
    own = entries[name].model_fields
    stray = [f"{k}={v!r}" for k, v in value.items() if k not in own]
    if stray:
        options = ", ".join(f for f in own if f != "name")
        raise ValueError(f"{entries[name].kind} {name!r} takes no option {', '.join(stray)} "
                         f"(its options: {options})")
    return entries[name].model_validate(value)


def plain_type(annotation: Any) -> Any:
    """The annotation without ``None`` and ``Annotated`` (constraints): ``PositiveInt | None``
    -> ``int``; a ``Literal`` stays a ``Literal``."""
    if typing.get_origin(annotation) is typing.Annotated:
        return plain_type(typing.get_args(annotation)[0])
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kept = [a for a in typing.get_args(annotation) if a is not type(None)]
        return plain_type(kept[0]) if len(kept) == 1 else annotation
    return annotation


def is_numeric(info: FieldInfo) -> bool:
    """A float field (what a sweep varies)."""
    return plain_type(info.annotation) is float


def validation_errors(err: ValidationError) -> str:
    """One line per invalid field: 'defense.tau: expected less than 1, found 1.5'.

    Errors of a whole section (its fields do not fit together) keep their own message.
    """
    lines = []
    for e in err.errors():
        where = ".".join(str(part) for part in e["loc"])
        if e["type"] == "value_error":
            message = e["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}" if where else message)
        elif e["type"] == "extra_forbidden":
            lines.append(f"{where}: no such option here")
        else:
            expected = e["msg"].removeprefix("Input should be ")
            lines.append(f"{where}: expected {expected}, found {e.get('input')!r}")
    return "; ".join(lines)
