"""Config machinery: frozen dataclasses filled from YAML plus CLI overrides.

Each stage (and each component with tunable parameters, e.g. TV-L1) has one frozen dataclass.
`build_config` merges defaults <- YAML file <- overrides, rejects unknown keys by name, coerces
types from the annotations, and `save_config` writes the result next to every output. A field
declared with `arg(default, "help")` is also a command-line option: cli.py makes the option from
the field (flag, type, help, and the default shown from the dataclass), so a field means the same
from the API, the CLI and YAML.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.errors import ConfigError

C = TypeVar("C")

# help of fields that several configs share
DEVICE = "auto, cpu, cuda or cuda:N."
RAY_ADDRESS = "auto or HOST:PORT to join a Ray cluster (default: embedded local Ray)."
STORAGE_OPTIONS = "JSON object passed to fsspec for the store URL."
SKIP_DAMAGED = "Leave out videos with a damaged chunk (checked first), with a note; by default one stops the run."


def arg(default: Any = dataclasses.MISSING, help: str = "", *, flag: str = "", short: str = "",
        factory: Callable[[], Any] | None = None, negatable: bool = True, positional: bool = False,
        required: bool = False, repeat: bool = False) -> Any:
    """A config field that is also a command-line option. flag: its long flag (default `--field-name`);
    short: e.g. "-o"; negatable: a bool shows as `--x/--no-x` (else a plain flag that sets True);
    positional: an argument (a tuple field takes any number); required: click asks for it; repeat: a
    tuple field's flag is given once per value (else it takes comma-separated values)."""
    meta = dict(help=help, flag=flag, short=short, negatable=negatable, positional=positional, required=required,
                repeat=repeat)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML-safe dict of a (possibly nested) config dataclass."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(cfg)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
    return data


def build_config(
    cls: type[C],
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    source: str = "",
) -> C:
    """defaults <- YAML `file` <- `overrides` (None values in overrides mean "not given")."""
    values: dict[str, Any] = {}
    if file is not None:
        values.update(_check_keys(cls, read_yaml(file), str(file)))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(_check_keys(cls, given, source or "options"))
    return from_dict(cls, values, source=str(file or source or "config"))


def from_dict(cls: type[C], data: Mapping[str, Any], *, source: str = "config") -> C:
    """Build `cls` from a mapping, coercing each value to its field's annotated type (the class's own
    construction does the rest, e.g. TrainHeadConfig resolving its recipe)."""
    _check_keys(cls, data, source)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], f"{source}: {f.name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


_SECRET = re.compile(r"(key|secret|token|password|passwd|credential)", re.IGNORECASE)


def redact_secrets(value: Any) -> Any:
    """Credentials (e.g. in storage_options) never reach a file on disk; pass them again on resume."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET.search(str(k)) and isinstance(v, str) else redact_secrets(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write `cfg` as YAML (secrets redacted), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(redact_secrets(config_to_dict(cfg)), sort_keys=False), encoding="utf-8")
    tmp.replace(path)
    return path


def _check_keys(cls: type, data: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key {key!r} for {cls.__name__}; known: {', '.join(sorted(known))}"
            )
    return data


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, where) for v, a in zip(value, args))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, where) for v in value]
        return tuple(out) if origin is tuple else out
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {hint.__name__}")
        return from_dict(hint, value, source=where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return str(value)
    if hint is Path:
        return Path(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        return dict(value)
    return value
