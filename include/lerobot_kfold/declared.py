"""Settings declared once: a dataclass field carries its type, default, limits and one-line description.

Why: a run's settings reach the library through three surfaces, the command line, the Airflow trigger
form (Params with a JSON schema) and the task group's ``settings=`` constants. When each surface wrote
its own defaults and limits they drifted apart (the form accepted a hold-out of 0.9 that the library
refused). Here a setting is one ``setting(...)`` field of a config dataclass, the way lerobot's draccus
configs are a dataclass per concern with a comment per field. Everything else is derived from it:

- ``check_declared`` validates an instance (called from the dataclass's ``__post_init__``);
- ``build`` makes an instance from a mapping (typed values, or command-line text), refusing unknown names;
- ``json_schema`` gives the trigger form's schema, with the same limits;
- ``add_options`` adds the command-line options, with the same defaults and descriptions.

Limits follow JSON Schema's meaning exactly (``minimum``/``maximum`` inclusive, ``above``/``below``
exclusive, ``pattern`` searched with ``re.search``, so patterns are anchored), so the form and the library
accept and refuse the same values. The one gap: JSON Schema cannot refuse NaN, which the library does.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SPEC_KEY = "lerobot_kfold.setting"
_KINDS = (bool, int, float, str, dict)
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "string"}


@dataclass(frozen=True)
class Spec:
    """What a setting accepts; stored in the dataclass field's metadata by :func:`setting`."""

    # One line for a person: the form field's description and the CLI option's help.
    help: str
    # bool, int, float, str, or dict (a JSON object; text at the edges: the form, the CLI).
    kind: type
    # Inclusive bounds (numbers).
    minimum: float | None = None
    maximum: float | None = None
    # Exclusive bounds (numbers).
    above: float | None = None
    below: float | None = None
    # Allowed values (strings).
    choices: tuple[str, ...] | None = None
    # Anchored regular expression a string must match, and what it means to a person.
    pattern: str | None = None
    pattern_hint: str = ""
    # The form may leave it empty (null); it then means "". Strings only.
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise TypeError(f"a setting's kind must be one of {_KINDS}, got {self.kind!r}")

    def limits_text(self) -> str:
        """The rule in words, for messages: 'an integer from 2 to 1024'."""
        noun = {
            bool: "true or false",
            int: "an integer",
            float: "a finite number",
            str: "a string",
            dict: 'a JSON object such as {"dim_model": 64}',
        }[self.kind]
        parts = []
        if self.minimum is not None:
            parts.append(f">= {_num(self.minimum)}")
        if self.above is not None:
            parts.append(f"> {_num(self.above)}")
        if self.maximum is not None:
            parts.append(f"<= {_num(self.maximum)}")
        if self.below is not None:
            parts.append(f"< {_num(self.below)}")
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        if self.pattern is not None:
            return self.pattern_hint or f"a string matching {self.pattern}"
        return f"{noun} {' and '.join(parts)}" if parts else noun


def setting(default: Any, help: str, **limits: Any) -> Any:
    """A declared dataclass field: ``k: int = setting(5, "number of folds", minimum=2)``.

    The kind is the default's type (``dict`` defaults are copied per instance).
    """
    spec = Spec(help=help, kind=type(default), **limits)
    metadata = {SPEC_KEY: spec}
    if isinstance(default, dict):
        frozen = dict(default)
        return dataclasses.field(default_factory=lambda: dict(frozen), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared(cls: Any) -> dict[str, tuple[dataclasses.Field, Spec]]:
    """The declared settings of a dataclass (type or instance), in declaration order."""
    return {f.name: (f, f.metadata[SPEC_KEY]) for f in dataclasses.fields(cls) if SPEC_KEY in f.metadata}


def default_of(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


# ------------------------------------------------------------------------------------------ validation


def check_value(name: str, value: Any, spec: Spec) -> Any:
    """The value in its kind (an integral float becomes an int), or ``ValueError`` naming the setting."""
    value = _typed(name, value, spec)
    if spec.kind in (int, float):
        _check_bounds(name, value, spec)
    elif spec.kind is str:
        if spec.choices is not None and value not in spec.choices:
            raise ValueError(f"{name} must be one of {list(spec.choices)}, got {value!r}")
        if spec.pattern is not None and not re.search(spec.pattern, value):
            raise ValueError(f"{name} must be {spec.limits_text()}, got {value!r}")
    return value


def _typed(name: str, value: Any, spec: Spec) -> Any:
    bad = ValueError(f"{name} must be {_kind_text(spec)}, got {value!r}")
    is_bool = isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's bool too
    if spec.kind is bool:
        if not is_bool:
            raise bad
        return bool(value)
    if spec.kind in (int, float):
        if is_bool or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise bad
        if spec.kind is int:
            if not isinstance(value, numbers.Integral) and not float(value).is_integer():
                raise bad
            return int(value)
        return float(value)
    if spec.kind is dict:
        if not isinstance(value, Mapping):
            raise bad
        return {str(key): item for key, item in value.items()}
    if value is None and spec.nullable:
        return ""
    if not isinstance(value, str):
        raise bad
    return value.strip()


def _kind_text(spec: Spec) -> str:
    return Spec(help="", kind=spec.kind).limits_text()


def _check_bounds(name: str, value: float, spec: Spec) -> None:
    rules = (
        (spec.minimum, lambda v, b: v >= b, "at least"),
        (spec.above, lambda v, b: v > b, "greater than"),
        (spec.maximum, lambda v, b: v <= b, "at most"),
        (spec.below, lambda v, b: v < b, "less than"),
    )
    for bound, holds, words in rules:
        if bound is not None and not holds(value, bound):
            raise ValueError(f"{name} must be {words} {_num(bound)}, got {_num(value)}")


def check_declared(instance: Any) -> None:
    """Validate every declared field of ``instance`` in place (works on frozen dataclasses too)."""
    for name, (_, spec) in declared(instance).items():
        object.__setattr__(instance, name, check_value(name, getattr(instance, name), spec))


# -------------------------------------------------------------------------------------- building


def parse_text(name: str, text: str, spec: Spec) -> Any:
    """A value from command-line text, in its kind (then validated by the dataclass)."""
    if spec.kind is bool:
        lowered = text.strip().lower()
        if lowered in {"true", "1", "yes"}:
            return True
        if lowered in {"false", "0", "no"}:
            return False
        raise ValueError(f"{name} must be true or false, got {text!r}")
    if spec.kind is int:
        try:
            return int(text.strip())
        except ValueError:
            pass
        try:
            number = float(text.strip())  # "2.0" or "1e3", as JSON would give them
        except ValueError:
            number = math.nan
        if not number.is_integer():
            raise ValueError(f"{name} must be an integer, got {text!r}")
        return int(number)
    if spec.kind is float:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"{name} must be a finite number, got {text!r}") from None
    if spec.kind is dict:
        return parse_json_object(name, text)
    return text


def parse_json_object(name: str, text: str) -> dict[str, Any]:
    """A JSON object from text; empty text is the empty object."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(name, pairs))
    except json.JSONDecodeError as exc:
        raise ValueError(f'{name} must be a JSON object such as {{"dim_model": 64}}: {exc}') from None
    if not isinstance(value, dict):
        raise ValueError(f'{name} must be a JSON object such as {{"dim_model": 64}}, got {text!r}')
    return value


def _unique_keys(name: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict, refusing a repeated key (``json.loads`` would keep the last)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"{name} has the key {key!r} twice; give each name once")
        seen[key] = value
    return seen


def split_known(values: Mapping[str, Any], known: Iterable[str], what: str = "setting") -> None:
    """Refuse names that are not settings, suggesting the closest known ones (a typo such as 'K')."""
    known = list(known)
    unknown = sorted(set(values) - set(known))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1) or [
            k for k in known if k.lower() == str(name).lower()
        ]
        if close:
            hints.append(f"{name!r} -> did you mean {close[0]!r}?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    raise ValueError(f"unknown {what}(s) {unknown}{hint}; known {what}s: {sorted(known)}")


def build(cls: type, values: Mapping[str, Any], *, text: bool = False, **fixed: Any) -> Any:
    """An instance of ``cls`` from declared settings in ``values`` (text from a CLI when ``text``).

    Names that are not declared settings of ``cls`` are refused; ``fixed`` passes other fields.
    """
    specs = declared(cls)
    split_known(values, specs)
    kwargs = {
        name: parse_text(name, value, specs[name][1]) if text and isinstance(value, str) else value
        for name, value in values.items()
    }
    kwargs = {name: from_edge(name, value, specs[name][1]) for name, value in kwargs.items()}
    return cls(**kwargs, **fixed)


def from_edge(name: str, value: Any, spec: Spec) -> Any:
    """A value as the form or XCom carry it, in its kind: objects arrive as JSON text (or null)."""
    if spec.kind is dict and value is None:
        return {}
    if spec.kind is dict and isinstance(value, str):
        return parse_json_object(name, value)
    return value


def edge_value(value: Any, spec: Spec) -> Any:
    """A setting's value as the form and XCom carry it: scalars as they are, objects as JSON text."""
    if spec.kind is dict:
        # Key order is kept: it can mean something (candidates are listed in order of preference).
        return json.dumps(value)
    return value


# ------------------------------------------------------------------------------------- derivations


def json_schema(spec: Spec) -> dict[str, Any]:
    """The JSON schema of one setting (the trigger form's validation), with the declared limits."""
    json_type = _JSON_TYPES[spec.kind]
    # An object's text may be cleared in the form (the UI refuses to submit an empty required field).
    nullable = spec.nullable or spec.kind is dict
    schema: dict[str, Any] = {"type": [json_type, "null"] if nullable else json_type}
    for key, bound in (
        ("minimum", spec.minimum),
        ("maximum", spec.maximum),
        ("exclusiveMinimum", spec.above),
        ("exclusiveMaximum", spec.below),
    ):
        if bound is not None:
            schema[key] = bound
    if spec.choices is not None:
        schema["enum"] = list(spec.choices)
    if spec.pattern is not None:
        schema["pattern"] = spec.pattern
    return schema


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    title: str,
    aliases: Mapping[str, Iterable[str]] | None = None,
    only: Iterable[str] | None = None,
) -> None:
    """One option per declared setting of ``cls`` (or of those named in ``only``), in a group ``title``.

    Options keep the text as given (``default=SUPPRESS``: absent means "the declared default"), so
    the values go through :func:`build` like the form's: one validation for every surface.
    """
    group = parser.add_argument_group(title)
    aliases = aliases or {}
    wanted = None if only is None else set(only)
    for name, (field, spec) in declared(cls).items():
        if wanted is not None and name not in wanted:
            continue
        flags = [option_name(name), *aliases.get(name, ())]
        default = edge_value(default_of(field), spec)
        help_text = f"{spec.help} ({spec.limits_text()}; default {default!r})".replace("%", "%%")
        if spec.kind is bool:
            group.add_argument(
                *flags,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                *flags, dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text
            )


def given_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The declared settings of ``cls`` given on the command line (absent ones keep their defaults)."""
    return {name: getattr(args, name) for name in declared(cls) if hasattr(args, name)}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))
