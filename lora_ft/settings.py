"""Settings from the command line and config files: key=value words and .json/.yaml files as typed Config values,
unknown names and malformed values refused with the fix, on top of the prepared data's own settings."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path

import yaml

from .config import DATA_FIELDS, Config
from .errors import ConfigError, listed

FIELDS = {f.name: f for f in dataclasses.fields(Config)}
HINTS = typing.get_type_hints(Config)
FORMS = {bool: "true or false", int: "an integer", float: "a number", str: "text",
         tuple: "a comma-separated list (e.g. query,value)"}


def make_config(step: str, config_file: Path | None, overrides: dict) -> Config:
    """The step's Config: file settings, then overrides, on top of the defaults and (but for prepare and all) the
    prepared data's DATA_FIELDS, as notebooks 02 to 08 read them: training settings never carry over between steps."""
    settings = {**(read_config_file(config_file) if config_file else {}), **overrides}
    where = Config(**{name: settings[name] for name in ("output_root", "smoke") if name in settings}).paths
    saved = where.data / "config.json"
    if step in ("prepare", "all") or not saved.exists():
        return Config(**settings)
    prepared = {k: v for k, v in json.loads(saved.read_text()).items() if k in DATA_FIELDS}
    return Config(**{**prepared, **settings})


def read_config_file(path: Path) -> dict:
    """The settings in a .json, .yaml or .yml file, as typed values; unknown keys are an error."""
    path = Path(path)
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"config file {path} is not .json, .yaml or .yml: write the settings in one of those")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: check the path")
    try:
        text = path.read_text(encoding="utf-8")
        settings = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config file {path} ({error}): fix its syntax") from None
    if settings is None:  # an empty YAML file
        return {}
    if not isinstance(settings, dict):
        raise ConfigError(f"config file {path} holds a {type(settings).__name__}, not a mapping: "
                          "write one `setting: value` per line (YAML) or one JSON object")
    _check_names(settings, f" in {path}")
    return {name: setting_value(name, value) for name, value in settings.items()}


def parse_overrides(words: list[str]) -> dict:
    """key=value words as typed settings, e.g. ["r=16", "labels=negative,positive"]."""
    pairs = []
    for word in words:
        name, equals, value = word.partition("=")
        if not equals:
            raise ConfigError(f"{word!r} is not a setting: write settings as key=value, e.g. r=16")
        pairs.append((name.strip(), value))
    _check_names(dict(pairs), "")
    return {name: setting_value(name, value) for name, value in pairs}


def setting_value(name: str, value):
    """value as setting name's type: text is parsed (None or null for unset), other values are checked."""
    hint = HINTS[name]  # its type (bool, int, float, str or tuple), or that type | None
    optional = isinstance(hint, types.UnionType)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    kind = typing.get_origin(base) or base
    form = FORMS[kind] + (" or None" if optional else "")
    if isinstance(value, str):
        if optional and value in ("None", "null"):
            return None
        if kind is tuple:
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if kind is bool and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if kind in (int, float, str):
            with contextlib.suppress(ValueError):
                return kind(value)
    elif value is None and optional:
        return None
    elif (kind is bool and type(value) is bool) or (kind is int and type(value) is int):
        return value
    elif kind is float and type(value) in (int, float):
        return float(value)
    elif kind is tuple and isinstance(value, list) and all(type(v) in (str, int) for v in value):
        return tuple(str(v).strip() for v in value)  # numeric class names are names too; spaces never matter
    raise ConfigError(f"{name}={value!r} is not {form}: set {name} to {form}")


def _check_names(settings: dict, where: str) -> None:
    unknown = [name for name in settings if name not in FIELDS]
    if unknown:  # the closest names, not all of them: the message stays one short line
        close = {m for name in unknown for m in difflib.get_close_matches(str(name), FIELDS, n=3, cutoff=0.6)}
        hint = f"did you mean {', '.join(sorted(close))}? " if close else ""
        raise ConfigError(f"unknown setting(s) {listed(unknown)}{where}: {hint}`--help` lists every setting "
                          "and what it does")


def is_setting(word: str) -> bool:
    name, equals, _ = word.partition("=")
    return bool(equals) and name.strip() in FIELDS


def as_word(value) -> str:
    """A setting's value as a key=value word writes it: true/false, lists comma-separated."""
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
