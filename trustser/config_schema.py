"""One schema, three surfaces: a run's configuration (``RunConfig`` with its ``train`` and ``trust`` sections) read
from YAML files, from ``--set key=value`` overrides and from study files by the same code.

Why one loader: the CLI, MLproject and the study YAML each used to expose a different subset of the run's settings,
with their own validation. Here every leaf field of the schema is addressable by its dotted name (``train.lr``,
``trust.snr_db``, ``precision``), values are coerced from YAML or text by the field's declared type, and every
problem is a ``ConfigError`` naming the source and the key (and the allowed values where the field has a fixed
set). The dataclasses validate their own values on construction; this module only turns data into them.

    from trustser.config_schema import load_run_config, with_assignments
    config = with_assignments(load_run_config("configs/paper.yaml"), ["train.lr=1e-3"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from trustser.errors import ConfigError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"", "none", "null", "~"}


@dataclass(frozen=True)
class SchemaField:
    """A leaf of the schema: its dotted key, declared type and default."""

    key: str
    type: Any
    default: Any


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def leaf_fields(cls: type, prefix: str = "") -> list[SchemaField]:
    """Every leaf setting of a config dataclass, nested sections flattened to dotted keys, in declaration order."""
    hints = _hints(cls)
    out: list[SchemaField] = []
    for f in fields(cls):
        kind = hints[f.name]
        if is_dataclass(kind):
            out += leaf_fields(kind, f"{prefix}{f.name}.")
        else:  # read from the field, not from an instance: no validation (and none of its imports) runs
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append(SchemaField(f"{prefix}{f.name}", kind, default))
    return out


def _optional_of(kind: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(kind)) == 2:
            return args[0]
    return None


def coerce(value: Any, kind: Any, key: str) -> Any:
    """``value`` (from YAML, or text from a command line) as the declared ``kind``; ConfigError naming ``key``."""
    inner = _optional_of(kind)
    if inner is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        return coerce(value, inner, key)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # also YAML 1.1's reading of 5e-4 (no dot) as a string
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if kind is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return str(value)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = args[0]
        if typing.get_origin(item) is tuple:  # key/value pairs: a mapping, or KEY=VALUE items
            if isinstance(value, Mapping):
                return tuple((str(k), str(v)) for k, v in value.items())
            pairs = []
            for entry in _as_list(value, key):
                k, sep, v = str(entry).partition("=")
                if not sep or not k.strip():
                    raise ConfigError(f"{key}: expected KEY=VALUE entries or a mapping, got {entry!r}")
                pairs.append((k.strip(), v.strip()))
            return tuple(pairs)
        return tuple(coerce(v, item, key) for v in _as_list(value, key))
    raise ConfigError(f"{key}: no reader for type {kind!r}")  # a schema field of a type this module does not know


def _as_list(value: Any, key: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):  # a command line's "fgsm,gaussian"
        return [v.strip() for v in value.split(",") if v.strip()]
    raise ConfigError(f"{key}: expected a list, got {value!r}")


def from_mapping(cls: type, raw: Mapping[str, Any], source: str = "<memory>", prefix: str = "") -> Any:
    """An instance of config dataclass ``cls`` from a (possibly partial) mapping; unknown keys, bad types and bad
    values are ConfigErrors naming ``source`` and the dotted key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: expected a mapping of settings, got {raw!r}")
    hints = _hints(cls)
    names = [f.name for f in fields(cls)]
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise ConfigError(f"{source}: {key}: unknown setting; known: {', '.join(names)}")
        kind = hints[name]
        try:
            values[name] = (
                from_mapping(kind, value or {}, source, f"{key}.") if is_dataclass(kind) else coerce(value, kind, key)
            )
        except ConfigError as exc:
            raise _from_source(source, exc) from None
    try:
        return cls(**values)
    except ConfigError as exc:  # the dataclass's own validation, which names its key (e.g. "train.schedule ...")
        raise _from_source(source, exc) from None


def _from_source(source: str, exc: ConfigError) -> ConfigError:
    """``exc`` naming ``source`` once (a nested section's error already does)."""
    text = str(exc)
    return ConfigError(text if text.startswith(f"{source}: ") else f"{source}: {text}")


def to_mapping(config: Any) -> dict[str, Any]:
    """The config as YAML-shaped data (tuples as lists, pair tuples as mappings): ``from_mapping`` reads it back."""
    out: dict[str, Any] = {}
    hints = _hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            out[f.name] = to_mapping(value)
        elif isinstance(value, tuple) and typing.get_origin(typing.get_args(hints[f.name])[0]) is tuple:
            out[f.name] = dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` → ``("train.lr", 0.001)``: the value is read as YAML (lists, numbers, booleans)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=1e-3")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def split_assignments(values: Iterable[str]) -> list[str]:
    """``--set`` values, each of which may hold several space-separated assignments (MLproject's ``-P set=...``
    arrives as one argument)."""
    out: list[str] = []
    for value in values:
        out += [part for part in str(value).split() if part]
    return out


def with_assignments(
    config: Any, assignments: Iterable[str | tuple[str, Any]], source: str = "--set", skip_empty: bool = False
) -> Any:
    """``config`` with dotted-key assignments applied in order, validated again. ``skip_empty`` ignores
    ``key=`` with nothing after it (MLproject's way of saying "not given", so its defaults stay the schema's)."""
    data = to_mapping(config)
    known = {f.key: f for f in leaf_fields(type(config))}
    for item in assignments:
        key, value = parse_assignment(item) if isinstance(item, str) else item
        if skip_empty and value in ("", None):
            continue
        if key not in known:
            near = [k for k in known if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
            raise ConfigError(
                f"{source}: {key}: unknown setting"
                + (f"; did you mean {', '.join(near)}?" if near else f"; known: {', '.join(known)}")
            )
        section = data
        *parents, leaf = key.split(".")
        for part in parents:
            section = section[part]
        section[leaf] = value
    return from_mapping(type(config), data, source)


def load_run_config(path: str | Path) -> Any:
    """A ``RunConfig`` from a YAML file (any subset of its settings; the rest keep their defaults)."""
    from trustser.config_io import read_yaml_mapping
    from trustser.run_config import RunConfig

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = read_yaml_mapping(path, [f.name for f in fields(RunConfig)], name_default=False)
    return from_mapping(RunConfig, raw, str(path))


__all__ = [
    "SchemaField",
    "coerce",
    "from_mapping",
    "leaf_fields",
    "load_run_config",
    "parse_assignment",
    "split_assignments",
    "to_mapping",
    "with_assignments",
]
