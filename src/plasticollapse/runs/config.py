"""Configuration: frozen dataclasses, TOML presets and ``--field value`` overrides.

One mechanism serves single runs, studies and sweeps. A *study* is a base config plus
*axes*: any scalar field given several values (a TOML list, several values after
``--field`` on the command line, or ``--grid field=v1,v2``) becomes an axis, and the study
expands into the Cartesian product of single-run configs. ``seeds`` is accepted as the
plural of the ``seed`` field, so ``--seeds 0 1 2`` makes three runs.

Tuple-typed fields (``hidden = [100, 100, 100]``) take a list as their single value.

Example::

    study = parse_study(PermutedConfig, "configs/quick/permuted_digits.toml", ["--lr", "0.1"])
    for config in study.expand():
        ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

C = TypeVar("C")

#: Plural spellings accepted for a field, so that ``--seeds 0 1 2`` reads naturally.
ALIASES = {"seeds": "seed"}

#: Fields that say where or how a run executes, not what it computes: they are left out of
#: the run's identity (its folder name), so moving a study to a GPU or another data folder
#: resumes the same runs instead of starting new ones.
EXECUTION_FIELDS = frozenset({"out", "device", "threads", "data_root", "download", "progress"})


class ConfigError(ValueError):
    """A config value or field name is wrong; the message says which and what is allowed."""


def field(default: Any = dataclasses.MISSING, *, help: str, **kwargs: Any) -> Any:
    """A config field with its one-line ``help`` (shown by ``--help`` and ``--fields``).

    ``default`` may be mutable-free only (configs are frozen; tuples, not lists). The
    allowed values of a ``Literal`` field are read from its type, so they are never listed
    twice. Example::

        lr: float = field(0.01, help="SGD learning rate")
    """
    metadata = {**kwargs.pop("metadata", {}), "help": help}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def field_help(config_class: type, name: str) -> str:
    """The help text of a field ("" when it has none)."""
    for f in dataclasses.fields(config_class):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


@dataclasses.dataclass(frozen=True)
class Study:
    """A base config plus axes (field -> several values) that expand into single runs."""

    config_class: type
    base: dict[str, Any]
    axes: dict[str, list[Any]]

    def expand(self) -> list[Any]:
        """All single-run configs: the Cartesian product of the axes, in axis order."""
        names = list(self.axes)
        configs = []
        for values in itertools.product(*(self.axes[n] for n in names)):
            fields = {**self.base, **dict(zip(names, values, strict=True))}
            configs.append(build_config(self.config_class, fields))
        return configs


# --------------------------------------------------------------------------- parsing


def parse_study(
    config_class: type[C], config_file: str | Path | None = None, argv: list[str] | tuple = ()
) -> Study:
    """Read a TOML preset (optional) and ``--field v [v ...]`` / ``--grid f=a,b`` overrides."""
    raw: dict[str, Any] = {}
    if config_file is not None:
        preset = load_toml(config_file)
        preset.pop("experiment", None)
        # Canonical names first, so that `--seeds 0` on the command line replaces a
        # preset's `seeds = [0, 1]` instead of competing with it under another spelling.
        raw.update({canonical_name(config_class, k): v for k, v in preset.items()})
    raw.update(parse_overrides(config_class, argv))

    fields = field_types(config_class)
    base: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    for key, value in raw.items():
        name = canonical_name(config_class, key)
        kind = fields[name]
        if isinstance(value, list) and not is_tuple_type(kind):
            values = [coerce(config_class, name, v) for v in value]
            if len(values) == 1:
                base[name] = values[0]
            else:
                axes[name] = values
        else:
            base[name] = coerce(config_class, name, value)
    for name in axes:
        base.pop(name, None)
    study = Study(config_class, base, axes)
    study.expand()  # validate every combination now, before any run starts
    return study


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with path.open("rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e


def parse_overrides(config_class: type, argv: list[str] | tuple) -> dict[str, Any]:
    """``--lr 0.1 --seeds 0 1 --grid lr=0.1,0.01`` -> {"lr": "0.1", "seed": ["0", "1"], ...}.

    Values stay strings here; :func:`coerce` converts them with the field's type.
    """
    out: dict[str, Any] = {}
    argv = list(argv)
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ConfigError(f"expected --field, got {token!r}; write --name value [value ...]")
        key, _, inline = token[2:].partition("=")
        values = [inline] if inline else []
        i += 1
        while i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
        if key == "grid":
            for spec in values:
                name, sep, choices = spec.partition("=")
                if not sep:
                    raise ConfigError(f"--grid expects field=v1,v2,..., got {spec!r}")
                out[canonical_name(config_class, name)] = choices.split(",")
            continue
        name = canonical_name(config_class, key)
        if not values:
            raise ConfigError(f"--{key} needs a value")
        kind = field_types(config_class)[name]
        out[name] = values if (len(values) > 1 or is_tuple_type(kind)) else values[0]
    return out


def canonical_name(config_class: type, key: str) -> str:
    name = key.replace("-", "_")
    name = ALIASES.get(name, name)
    fields = field_types(config_class)
    if name not in fields:
        allowed = ", ".join(sorted(fields))
        raise ConfigError(f"unknown field {key!r} for {config_class.__name__}; fields: {allowed}")
    return name


# --------------------------------------------------------------------------- types


def field_types(config_class: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class)}


def is_tuple_type(kind: Any) -> bool:
    return get_origin(kind) is tuple


def coerce(config_class: type, name: str, value: Any) -> Any:
    """Convert ``value`` (a string from the command line, or a TOML value) to the field's type."""
    kind = field_types(config_class)[name]
    try:
        return _coerce(kind, value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"field {name!r}: {e}") from None


def _coerce(kind: Any, value: Any) -> Any:
    origin = get_origin(kind)
    if origin is Literal:
        allowed = get_args(kind)
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(options[0], value)
    if origin is tuple:
        (item, *_rest) = get_args(kind)
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(item, v) for v in value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not a boolean (true/false)")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value!r} is not an integer")
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        return float(value)
    if kind is str:
        return str(value)
    raise TypeError(f"unsupported field type {kind!r}")


def build_config(config_class: type[C], fields: dict[str, Any]) -> C:
    """Instantiate with coerced values; the dataclass's own ``__post_init__`` validates."""
    values = {k: coerce(config_class, k, v) for k, v in fields.items()}
    try:
        return config_class(**values)
    except TypeError as e:
        raise ConfigError(str(e)) from None


# --------------------------------------------------------------------------- identity


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of the config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(config_class: type[C], data: dict[str, Any]) -> C:
    known = {f.name for f in dataclasses.fields(config_class)}
    return build_config(config_class, {k: v for k, v in data.items() if k in known})


def config_hash(config: Any, length: int = 8) -> str:
    """Stable short hash of what a run computes (execution fields excluded).

    Fields a study added after its first release are left out while they hold their
    default, so that adding a field does not rename (and orphan) existing run folders. A
    config class lists them in ``IDENTITY_OMITS_DEFAULTS``.
    """
    late = getattr(type(config), "IDENTITY_OMITS_DEFAULTS", frozenset())
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.name in late}
    data = {
        k: v
        for k, v in to_dict(config).items()
        if k not in EXECUTION_FIELDS and not (k in defaults and _same_json(v, defaults[k]))
    }
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def _same_json(value: Any, default: Any) -> bool:
    return json.dumps(value) == json.dumps(jsonable_default(default))


def jsonable_default(default: Any) -> Any:
    return json.loads(json.dumps(default))


def describe_fields(config_class: type) -> str:
    """One line per field: name, type and default, for ``--help``."""
    lines = []
    for f in dataclasses.fields(config_class):
        kind = field_types(config_class)[f.name]
        kind_text = getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  --{f.name:<22} {kind_text} (default: {default!r})")
    return "\n".join(lines)
