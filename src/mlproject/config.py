"""Typed configs: dataclasses validated when built from YAML, CLI flags or MLflow parameters.

Every config in the suite is a dataclass. This module is the one place that turns untyped
input (a YAML mapping, `--flag value` strings, `-P key=value` from `mlflow run`) into those
dataclasses, so every entry point validates the same way:

- an unknown key is an error naming the key and the allowed ones;
- a value is coerced to the field's annotated type (int, float, bool, str, Literal choices,
  Optional, list) or rejected with the key, the value and the expected type;
- CLI flags are generated from the fields (`--max-steps` and `--max_steps` both work, because
  MLflow passes an undeclared `-P max_steps=30` as `--max_steps 30`).

Field metadata understood here: `help` (flag help text), `cli` (False hides the field from the
CLI, e.g. values derived at run time), `aliases` (extra flag spellings kept from older tools),
`metavar` (the flag's value placeholder in `--help`), `repeat` (a list flag that may be given
several times, its values adding up); `split` and `bare` are described at `field`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from mlproject.errors import ConfigError

T = TypeVar("T")

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def field(default: Any = dataclasses.MISSING, *, help: str = "", cli: bool = True,
          aliases: tuple[str, ...] = (), split: bool = True, bare: bool = False, repeat: bool = False,
          metavar: str | None = None, hidden: bool = False, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with the metadata the CLI generator reads.

    `split=False` keeps a single string whole for a list field (free text such as prompts)
    instead of splitting it on spaces and commas. `bare=True` lets the flag stand alone, meaning
    the field's default (the original suite's `--val-checking` switch). `repeat=True` lets a list
    flag be given several times (`--step a --step b`); otherwise the last one wins. `hidden=True`
    parses the flag but leaves it out of `--help` (a misplaced flag its section refuses by name).
    """
    meta = {"help": help, "cli": cli, "aliases": aliases, "split": split, "bare": bare, "repeat": repeat,
            "metavar": metavar, "hidden": hidden}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- type coercion

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " (or null)"
    if origin is list:
        (inner,) = typing.get_args(tp) or (str,)
        return f"list of {_type_name(inner)}"
    if tp is float:
        return "finite float"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, *, key: str, source: str = "config") -> Any:
    """Convert `value` to annotated type `tp`, or raise a one-line ConfigError."""

    def fail() -> ConfigError:
        return ConfigError(f"{source}: {key}={value!r} is not a valid value; expected {_type_name(tp)}")

    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, typing.get_args(tp), fail, key=key, source=source)
    if origin is Literal:
        return _coerce_literal(value, typing.get_args(tp), fail)
    if origin is list:
        (inner,) = typing.get_args(tp) or (str,)
        if isinstance(value, str):  # "gpt2 gpt3" or "42,43" (how `mlflow run -P` passes lists)
            value = value.replace(",", " ").split()
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(v, inner, key=key, source=source) for v in value]
    if tp in _SCALARS:
        return _SCALARS[tp](value, fail)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_dict(tp, value, source=f"{source}: {key}")
        raise fail()
    if tp is Any or isinstance(value, tp):
        return value
    raise fail()


def _coerce_union(value: Any, args: tuple[Any, ...], fail: Callable[[], ConfigError], *, key: str,
                  source: str) -> Any:
    """`X | None` and other unions: None (or its spellings) where allowed, else the first member
    type the value converts to."""
    if value is None or (isinstance(value, str) and value.strip().lower() in {"none", "null", ""}):
        if type(None) in args:
            return None
        raise fail()
    for arg in (a for a in args if a is not type(None)):
        try:
            return coerce(value, arg, key=key, source=source)
        except ConfigError:
            continue
    raise fail()


def _coerce_literal(value: Any, choices: tuple[Any, ...], fail: Callable[[], ConfigError]) -> Any:
    for choice in choices:
        if value == choice or (isinstance(value, str) and str(choice) == value.strip()):
            return choice
    raise fail()


def _coerce_bool(value: Any, fail: Callable[[], ConfigError]) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise fail()


def _coerce_int(value: Any, fail: Callable[[], ConfigError]) -> int:
    """An int, or a float or string that is a whole number ("1e3" from a shell); never a bool."""
    if isinstance(value, bool):
        raise fail()
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            as_float = float(value)
        except ValueError:
            raise fail() from None
        if as_float.is_integer():
            return int(as_float)
    raise fail()


def _coerce_str(value: Any, fail: Callable[[], ConfigError]) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise fail()


def _finite_float(value: Any, fail: Any) -> float:
    """`value` as a finite float. NaN and infinity are refused for every float field: each of
    them passes a range check written as `x <= 0` (every comparison with NaN is false) and then
    trains to a NaN loss, so no field of the suite means anything by them."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise fail()
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise fail() from None
    if not math.isfinite(number):
        raise fail()
    return number


# The scalar field types and their converters (each raises `fail()` for a value it refuses).
_SCALARS: dict[Any, Callable[[Any, Callable[[], ConfigError]], Any]] = {
    bool: _coerce_bool, int: _coerce_int, float: _finite_float, str: _coerce_str,
}


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints evaluates every annotation string (ms per class); configs are validated often
    return typing.get_type_hints(cls)


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, source: str = "config") -> T:
    """Build dataclass `cls` from a mapping: unknown keys and mistyped values are one-line errors.

    Dashes in keys are accepted as underscores (`max-steps` == `max_steps`), and the
    `aliases` of a field as its name.
    """
    data = dict(data or {})
    upgrade = getattr(cls, "upgrade", None)
    if callable(upgrade):  # keys of earlier releases, rewritten to today's fields
        data = upgrade({str(k).replace("-", "_"): v for k, v in data.items()})
    hints = _hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    aliases = {a.lstrip("-").replace("-", "_"): f.name for f in names.values()
               for a in f.metadata.get("aliases", ())}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        key = aliases.get(key, key)
        if key not in names:
            allowed = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown key {raw_key!r}; allowed keys: {allowed}")
        if isinstance(value, str) and not names[key].metadata.get("split", True):
            value = [value]
        kwargs[key] = coerce(value, hints[key], key=key, source=source)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{source}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def check_types(obj: Any, *, source: str | None = None) -> None:
    """Validate every field of a dataclass built in code against its annotation (choices too)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        coerce(getattr(obj, f.name), hints[f.name], key=f.name, source=source or type(obj).__name__)


def replace(obj: T, /, *, where: str | None = None, **changes: Any) -> T:
    """`dataclasses.replace` with the same coercion and validation as `from_dict` (errors name
    `where`, default the class): the one way the suite derives a config from another."""
    data = merge(to_dict(obj, shallow=True), changes)  # `max-steps` changes max_steps
    return from_dict(type(obj), data, source=where or type(obj).__name__)


def to_dict(obj: Any, *, shallow: bool = False) -> dict[str, Any]:
    """A dataclass as a plain dict (nested dataclasses too, unless `shallow`)."""
    if shallow:
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return dataclasses.asdict(obj)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a dataclass or mapping to `prefix.key` entries (for MLflow params)."""
    items = to_dict(obj) if dataclasses.is_dataclass(obj) else dict(obj)
    out: dict[str, Any] = {}
    for key, value in items.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) or dataclasses.is_dataclass(value):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


# ----------------------------------------------------------------------------- YAML

def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing file or bad syntax."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        if isinstance(exc, yaml.reader.ReaderError):  # a control character: its message has no mark
            where, problem = f" (offset {exc.position})", f"unacceptable character {exc.character!r}"
        else:
            problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{p}: invalid YAML{where}: {' '.join(str(problem).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def dump_yaml(data: Any) -> str:
    """YAML text for a dataclass or mapping, keys in definition order."""
    if dataclasses.is_dataclass(data):
        data = to_dict(data)
    return yaml.safe_dump(data, sort_keys=False)


# ----------------------------------------------------------------------------- CLI flags

def _flag_type(tp: Any) -> tuple[Any, dict[str, Any]]:
    """argparse `type`/`nargs` for an annotation; values are validated later by `coerce`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _flag_type(args[0]) if len(args) == 1 else (str, {})
    if origin is list:
        return str, {"nargs": "+"}
    if tp is bool:
        return str, {"nargs": "?", "const": "true"}
    return str, {}


def flag_spellings(f: dataclasses.Field) -> list[str]:
    """The flags of field `f`: `--max-steps`, `--max_steps` and its aliases."""
    spellings = [f"--{f.name.replace('_', '-')}"]
    if "_" in f.name:
        spellings.append(f"--{f.name}")
    return spellings + [a for a in f.metadata.get("aliases", ()) if a not in spellings]


def _legacy_spellings(name: str) -> list[str]:
    return list(dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}"]))


def cli_flags(cls: type) -> set[str]:
    """Every flag spelling that `add_arguments` gives the CLI-visible fields of `cls` (and its
    `LEGACY_FLAGS`, the keys of earlier releases that its `upgrade` rewrites)."""
    legacy = {s for name in getattr(cls, "LEGACY_FLAGS", {}) for s in _legacy_spellings(name)}
    return legacy | {s for f in dataclasses.fields(cls) if f.metadata.get("cli", True) for s in flag_spellings(f)}


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, *, title: str | None = None,
                  exclude: tuple[str, ...] = ()) -> None:
    """Add one flag per CLI-visible field of `cls` (dash and underscore spellings).

    Defaults are suppressed, so `section_overrides` sees only what the user passed. A field
    without a default is a required flag (so its section cannot also come from a YAML file).
    """
    group = parser.add_argument_group(title or cls.__name__) if title is not False else parser
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or f.name in exclude:
            continue
        flag_type, extra = _flag_type(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else (
            None if required else f.default)
        if f.metadata.get("bare") and not extra:
            extra = {"nargs": "?", "const": str(default)}
        if f.metadata.get("repeat"):
            extra["action"] = "extend"
        helptext = f.metadata.get("help", "")
        helptext = f"{helptext} [{_type_name(hints[f.name])}; {'required' if required else f'default: {default}'}]"
        group.add_argument(*flag_spellings(f), dest=f"{cls.__name__}.{f.name}", type=flag_type,
                           metavar=f.metadata.get("metavar") or f.name.upper(), required=required,
                           default=argparse.SUPPRESS, **extra,
                           help=argparse.SUPPRESS if f.metadata.get("hidden") else helptext.strip().replace("%", "%%"))
    for name, helptext in getattr(cls, "LEGACY_FLAGS", {}).items():
        group.add_argument(*_legacy_spellings(name), dest=f"{cls.__name__}.{name}", metavar=name.upper(),
                           default=argparse.SUPPRESS, help=helptext.replace("%", "%%"))


def section_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags of `cls` that the user actually passed, as a {field: raw value} mapping."""
    prefix = f"{cls.__name__}."
    out = {}
    for dest, value in vars(args).items():
        if dest.startswith(prefix):
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            out[dest[len(prefix):]] = value
    return out


def merge(base: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Mapping `base` (e.g. a YAML section) with `overrides` (e.g. flags) winning, keys normalised."""
    out = {str(k).replace("-", "_"): v for k, v in (base or {}).items()}
    out.update({str(k).replace("-", "_"): v for k, v in overrides.items()})
    return out


def build_sections(sections: Mapping[str, type], *, yaml_path: str | os.PathLike[str] | None = None,
                   args: argparse.Namespace | None = None, data: Mapping[str, Any] | None = None,
                   defaults: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Build one dataclass per top-level YAML section, with CLI flags overriding the file and the
    file overriding `defaults` ({section: {field: value}}: a profile's, `mlproject.profiles`).

    `sections` maps a section name (`model`, `train`, ...) to its dataclass. A top-level key
    that is not a section is an error naming the allowed sections. `data` is the file's
    mapping when the caller already read it (`yaml_path` then only names it in errors).
    """
    if data is None:
        data = load_yaml(yaml_path) if yaml_path else {}
    source = str(yaml_path) if yaml_path else "flags"
    unknown = set(data) - set(sections)
    if unknown:
        raise ConfigError(f"{source}: unknown section {sorted(unknown, key=str)[0]!r}; "
                          f"allowed sections: {', '.join(sections)}")
    # the note is for a file the user can edit, not for a config read back from a run
    data = _moved_keys(sections, data, source, note=yaml_path is not None and Path(yaml_path).is_file())
    defaults = defaults or {}
    out = {}
    for name, cls in sections.items():
        section = data.get(name)
        if section is not None and not isinstance(section, Mapping):
            raise ConfigError(f"{source}: section {name!r} must be a mapping")
        flags = section_overrides(args, cls) if args is not None else {}
        out[name] = from_dict(cls, merge(merge(defaults.get(name), section or {}), flags), source=f"{source}: {name}")
    return out


_NOTED: set[str] = set()  # files whose moved keys were noted (once per file and process)


def _moved_keys(sections: Mapping[str, type], data: Mapping[str, Any], source: str, *,
                note: bool) -> Mapping[str, Any]:
    """`data` with the keys that a section class took over from older sections (its `MOVED_FROM`,
    e.g. runtime settings under train:) moved into it. A key given in both places is an error;
    with `note`, a one-line deprecation note on stderr, once per file."""
    out = dict(data)
    moved: list[str] = []
    targets: list[str] = []
    for name, cls in sections.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        for old in getattr(cls, "MOVED_FROM", ()):
            section = out.get(old)
            if not isinstance(section, Mapping) or old not in sections:
                continue
            kept = {f.name for f in dataclasses.fields(sections[old])}
            keys = [k for k in section if str(k).replace("-", "_") in fields - kept]
            if not keys:
                continue
            target = dict(out.get(name) or {})
            for key in keys:
                new_key = str(key).replace("-", "_")
                if new_key in {str(k).replace("-", "_") for k in target}:
                    raise ConfigError(f"{source}: {old}.{key} and {name}.{new_key} are both set; keep {name}.{new_key}")
                target[new_key] = section[key]
                moved.append(f"{old}.{key}")
                targets.append(f"{name}:")
            out[old] = {k: v for k, v in section.items() if k not in keys}
            out[name] = target
    if moved and note and source not in _NOTED:
        _NOTED.add(source)
        print(f"{source}: deprecated: {', '.join(moved)} now belong under {' '.join(dict.fromkeys(targets))} "
              "(they still load where they are)", file=sys.stderr)
    return out
