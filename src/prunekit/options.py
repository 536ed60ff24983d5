"""Config fields that carry their own help and flag, so every front end reads one source.

`option()` declares a field; `add_config_flags` turns a config's fields into argparse flags (unset
flags stay absent, so the config's own defaults apply) and `config_options` reads them back;
`flag_message` rewrites a ParameterError from parameter names to flag names; `check_types` holds every
field to its declared type, whichever front end (CLI, recipe, plan, Python) filled it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from typing import Any

from prunekit.errors import ParameterError


def option(default: Any = None, help: str = "", *, factory=None, flag: str | None = None, **metadata) -> Any:
    """A dataclass field with `help` (and optionally the CLI `flag` that differs from --field-name)."""
    meta = {"help": help, **({"flag": flag} if flag else {}), **metadata}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _number_or_word(annotation: str):
    """A number; "none" where the field may be None; other words where it may be text (the config's
    check names what it takes); anything else is an argument error."""

    def parse(text: str):
        if text == "none" and "None" in annotation:
            return None
        try:
            return float(text)
        except ValueError:
            if "str" in annotation:
                return text
            raise argparse.ArgumentTypeError(f"'{text}' is not a number{' or none' if 'None' in annotation else ''}") from None

    return parse


def _value_type(annotation: str):
    if (annotation.startswith("float") and "|" in annotation) or (annotation.startswith("int") and "str" in annotation):
        return _number_or_word(annotation)
    return int if annotation.startswith("int") else float if annotation.startswith("float") else str


def _flagged_fields(config_cls) -> list[dataclasses.Field]:
    return [
        f for f in dataclasses.fields(config_cls) if "config" not in f.metadata and not f.metadata.get("internal") and f.name != "recovery"
    ]


def field_default(field: dataclasses.Field):
    """A dataclass field's default (made by its factory where it has one); None where it has neither."""
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else None


def _config_name(cls) -> str:
    return cls.__name__.removesuffix("Config").lower()


def _other_meanings(field: dataclasses.Field, config_cls, others: tuple) -> str:
    """'; liar: fraction of every block's parameters...': what the flag means for configs that share it and read it otherwise."""
    own = field.metadata.get("help")
    meanings = {}
    for cls in others:
        for other in dataclasses.fields(cls):
            text = other.metadata.get("help")
            if other.name == field.name and cls is not config_cls and text and text != own:
                meanings.setdefault(text, _config_name(cls))
    return "".join(f"; {name}: {text}" for text, name in meanings.items())


def _help_with_default(field: dataclasses.Field, config_cls, others: tuple) -> str | None:
    """The field's help, ending with its default (and where another config sharing the flag has its own
    default or meaning)."""
    text = field.metadata.get("help")
    if text is None:
        return None
    return _with_default(text, field, config_cls, others) + _other_meanings(field, config_cls, others)


def _with_default(text: str, field: dataclasses.Field, config_cls, others: tuple) -> str:
    default = field_default(field)
    if "default" in text or default in (None, (), [], "") or isinstance(default, bool):
        return text
    spelled = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default
    differing = [
        f"{_config_name(cls)}: {field_default(f)}"
        for cls in others
        for f in dataclasses.fields(cls)
        if f.name == field.name and cls is not config_cls and field_default(f) != default
    ]
    return f"{text} (default {spelled}{'; ' + ', '.join(differing) if differing else ''})"


def add_config_flags(group, config_cls, seen: set[str], prefix: str = "", others: tuple = ()) -> None:
    """One flag per field (dest = prefix + field name), skipping names in `seen` (shared with another config);
    `others`: the configs that share these flags, whose different defaults the help names."""
    for field in _flagged_fields(config_cls):
        if field.name in seen:
            continue
        seen.add(field.name)
        kind = str(field.type)
        common = {"dest": prefix + field.name, "default": argparse.SUPPRESS, "help": _help_with_default(field, config_cls, others)}
        if kind == "bool":
            if "flag_help" in field.metadata:  # a flag that turns the field off says what it does, not what the field is
                common["help"] = field.metadata["flag_help"]
            group.add_argument(flag_of(field), action="store_const", const=not field.default, **common)
        elif kind.startswith("tuple"):
            group.add_argument(flag_of(field), type=int, nargs="*", **common)
        else:
            group.add_argument(flag_of(field), type=_value_type(kind), **common)


def config_options(args, config_cls, prefix: str = "") -> dict:
    """The options of `config_cls` given on the command line."""
    return {f.name: getattr(args, prefix + f.name) for f in _flagged_fields(config_cls) if hasattr(args, prefix + f.name)}


def flag_names(*config_classes) -> dict[str, str]:
    return {f.name: flag_of(f) for cls in config_classes for f in dataclasses.fields(cls)}


def flag_message(error: Exception, flags: dict[str, str]) -> str:
    """The error with parameter names (a ParameterError's own, `quoted` ones, and any_with_underscores)
    spelled as flags (--ffn-ratio); other text is left as it is."""

    def spell(match) -> str:
        name = match.group(1) or match.group(2)
        return flags.get(name, name)

    def spelled(text: str) -> str:
        return re.sub(r"`([a-z_]+)`|\b([a-z]+_[a-z_]+)\b", spell, text)

    if isinstance(error, ParameterError):
        return f"{flags.get(error.parameter, error.parameter)} {spelled(error.detail)}"
    return flag_text(str(error), flags)


def flag_text(text: str, flags: dict[str, str]) -> str:
    """Library text (a message, a warning, a log line) with its `quoted` parameter names spelled as flags."""
    return re.sub(r"`([a-z_]+)`", lambda match: flags.get(match.group(1), match.group(1)), text)


_KIND_WORDS = {"int": "whole number", "float": "number", "str": "text", "bool": "true or false", "None": "none"}


def _describe(kinds: list[str]) -> str:
    words = ["list of whole numbers" if k.startswith("tuple") else _KIND_WORDS.get(k, k) for k in kinds]
    return " or ".join(dict.fromkeys(words))


def checked_value(name: str, annotation: str, value: Any) -> Any:
    """`value` as the type `annotation` declares ("int | None", "float | str", "tuple[int, ...]", ...):
    an integral float becomes an int, an int a float where a float belongs, a list a tuple; anything
    else (a number as text, a fraction where a count belongs, NaN, a bool as a number) is a ParameterError."""
    kinds = [k.strip() for k in annotation.split("|")]
    wanted = _describe([k for k in kinds if k != "None"])
    if value is None:
        if "None" in kinds:
            return None
        raise ParameterError(name, f"is missing: give a {wanted}")
    if isinstance(value, bool):
        if "bool" in kinds:
            return value
        raise ParameterError(name, f"must be a {wanted}, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ParameterError(name, f"must be a finite {wanted}, got {value!r}")
        if "int" in kinds and float(value).is_integer():
            return int(value)
        if "float" in kinds:
            return float(value)
        raise ParameterError(name, f"must be a {wanted}, got {value!r}")
    if isinstance(value, (str, os.PathLike)):
        if "str" in kinds:
            return os.fspath(value)
        raise ParameterError(name, f"must be a {wanted}, got the text {value!r}")
    if isinstance(value, (list, tuple)) and any(k.startswith("tuple") for k in kinds):
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return tuple(value)
        raise ParameterError(name, f"must be a list of whole numbers, got {list(value)!r}")
    raise ParameterError(name, f"must be a {wanted}, got a {type(value).__name__}")


def check_types(config) -> None:
    """Hold every field of a config dataclass to its declared type, normalising as `checked_value` does
    (nested configs are checked by their own `check`)."""
    for field in dataclasses.fields(config):
        if "config" in field.metadata or "Config" in str(field.type):
            continue
        setattr(config, field.name, checked_value(field.name, str(field.type), getattr(config, field.name)))
