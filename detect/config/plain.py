"""Config dataclasses as plain data: to and from dicts and YAML, typed coercion, and
``key=value`` overrides with "did you mean" answers (for ``--set`` and the API's keywords)."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml


def _dotted_keys(data: dict, prefix: str = ""):
    for k, v in data.items():
        if isinstance(v, dict) and v:
            yield from _dotted_keys(v, f"{prefix}{k}.")
        else:
            yield prefix + k


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"invalid config value {name}: {message}")


def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)
                if f.metadata.get("plain", True)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _from_plain(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix or '<root>'} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.metadata.get("plain", True)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(prefix + k for k in unknown)}; "
                         f"known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    return cls(**kwargs)


def _coerce(hint, value, name):
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _from_plain(hint, value, name + ".")
    if origin is tuple:
        (item,) = {a for a in get_args(hint) if a is not Ellipsis}
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config value {name} must be a list, got {value!r}")
        return tuple(_coerce(item, v, name) for v in value)
    args = [a for a in get_args(hint) if a is not type(None)]
    if value is None:
        if type(None) in get_args(hint):
            return None
        raise ValueError(f"config value {name} may not be null")
    target = args[0] if args else hint
    if target is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config value {name} must be true/false, got {value!r}")
        return value
    if target is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config value {name} must be an integer, got {value!r}")
        return value
    if target is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config value {name} must be a number, got {value!r}")
        return float(value)
    if target is str:
        return str(value)
    return value


def _split_assignment(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def _set_dotted(data: dict, key: str, value) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise ValueError(f"unknown config section {p!r} in {key!r}{_did_you_mean(data, key)}")
        node = node[p]
    if parts[-1] not in node:
        raise ValueError(f"unknown config key {key!r}{_did_you_mean(data, key)}; known here: {sorted(node)}")
    node[parts[-1]] = value


def _did_you_mean(data: dict, key: str) -> str:
    """``"; did you mean train.epochs?"``: the fields named like the key's last part, else close spellings."""
    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    known = list(leaves(data))
    close = [k for k in known if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]] or \
        difflib.get_close_matches(key, known, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    return data


def dump_yaml(data: dict, path: str | Path) -> None:
    """Write YAML atomically (temp file + rename)."""
    from detect.util import atomic

    atomic.write_text(path, yaml.safe_dump(data, sort_keys=False))


def _config_keys() -> dict[str, str]:
    """Leaf name -> dotted config key (every leaf name is unique across sections)."""
    from detect.config import DetectConfig

    def walk(obj, prefix=""):
        for f in dataclasses.fields(obj):
            if not f.metadata.get("plain", True):
                continue
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name

    return {k.rsplit(".", 1)[-1]: k for k in walk(DetectConfig())}


def config_overrides(overrides: dict) -> dict:
    """``{"epochs": 3, "train__learning_rate": 0.01}`` -> ``{"train.epochs": 3, "train.learning_rate": 0.01}``.

    A bare name is the config field of that name (each is unique); ``__``
    spells a dotted path. An unknown name is an error with suggestions.
    """
    keys = _config_keys()
    out = {}
    for name, value in overrides.items():
        dotted = name.replace("__", ".") if "__" in name else keys.get(name)
        if dotted is None or dotted not in keys.values():
            close = difflib.get_close_matches(name.replace("__", "."), list(keys) + list(keys.values()), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TypeError(f"unknown option {name!r}: neither an argument of detect.train nor a config "
                            f"field{hint}")
        out[dotted] = list(value) if isinstance(value, tuple) else value
    return out
