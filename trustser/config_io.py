"""Reading YAML config files (study spaces, scenarios) with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from trustser.errors import ConfigError


def read_yaml_mapping(path: Path, known_keys: Iterable[str], name_default: bool = True) -> dict[str, Any]:
    """The file's top-level mapping, with ``name`` defaulting to the file's stem (``name_default``); ConfigError
    naming the file when it is not valid YAML or not a mapping."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys ({', '.join(known_keys)}), got {type(raw).__name__}")
    if name_default:
        raw.setdefault("name", Path(path).stem)
    return raw
