"""Configuration: frozen dataclasses, TOML presets and ``--field value`` overrides.

One mechanism serves single runs, studies and sweeps, in three steps that each happen once:

1. *parse*: a TOML preset and the command line's ``--field v [v ...]`` / ``--grid f=a,b``
   give raw values (TOML values, or strings);
2. *coerce*: each raw value is converted to its field's type (:func:`coerce`), so that a
   wrong value is reported with the field's name before anything runs;
3. *construct*: the dataclass is built from already typed values, and its own
   ``__post_init__`` checks the relations between fields.

A *study* is a base config plus *axes*: any scalar field given several values (a TOML list,
several values after ``--field``, or ``--grid field=v1,v2``) becomes an axis, and the study
expands into the Cartesian product of single-run configs. ``seeds`` is accepted as the
plural of the ``seed`` field and takes ranges everywhere (:func:`parse_seeds`), so
``--seeds 0 1 2``, ``--seeds 0-2`` and ``--seeds 0,1,2`` all make three runs. Tuple-typed
fields (``hidden = [100, 100, 100]``) take a list as their single value.

Presets ship inside the package (``plasticollapse/presets/{paper,quick}/*.toml``), so
``--config quick/permuted_digits`` works from an installed wheel as from a checkout.

Example::

    study = parse_study(PermutedConfig, "quick/permuted_digits", ["--lr", "0.1"])
    for config in study.expand():
        ...
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import re
import sys
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

C = TypeVar("C")

#: Plural spellings accepted for a field, so that ``--seeds 0 1 2`` reads naturally.
ALIASES = {"seeds": "seed"}
#: What ``--help`` adds to a field that has an alias.
ALIAS_HELP = {"seed": "; one run per seed: 0 1 2, a range 0-4 or a list 0,2,5"}

#: Fields that say where or how a run executes, not what it computes: they are left out of
#: the run's identity (its folder name), so moving a study to a GPU or another data folder
#: resumes the same runs instead of starting new ones.
EXECUTION_FIELDS = frozenset(
    {"out", "device", "threads", "data_root", "download", "progress", "loggers"}
    | {"wandb_project", "wandb_group"}
)

#: Device types a ``device`` field may name (with an index: ``cuda:1``).
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")

#: The TOML presets shipped as package data: ``<group>/<name>.toml``.
PRESETS = Path(__file__).resolve().parents[1] / "presets"


class ConfigError(ValueError):
    """A config value or field name is wrong; the message says which and what is allowed."""


def field(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    section: str | None = None,
    added_later: bool = False,
    remedy: str | None = None,
    **kwargs: Any,
) -> Any:
    """A config field with its one-line ``help`` (shown by ``--help`` and ``--fields``).

    ``default`` may be mutable-free only (configs are frozen; tuples, not lists). The
    allowed values of a ``Literal`` field are read from its type, so they are never listed
    twice. ``section`` places the field in ``--help`` (``"model"``; the fields of the
    shipped studies are placed by :data:`plasticollapse.runs.describe.SECTIONS`).

    Two marks say how the field enters a run's identity (:func:`run_identity`):
    ``added_later=True`` for a field a study gains after runs exist (left out while it
    holds its default, so those runs keep their folders); ``remedy="name"`` for a remedy's
    parameter (counted only in runs that apply that remedy). Example::

        lr: float = field(0.01, help="SGD learning rate")
        cbp_maturity: int = field(100, help="...", remedy="cbp")
    """
    metadata = {**kwargs.pop("metadata", {}), "help": help}
    if section is not None:
        metadata["section"] = section
    if added_later:
        metadata["added_later"] = True
    if remedy is not None:
        metadata["remedy"] = remedy
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def field_help(config_class: type, name: str) -> str:
    """The help text of a field ("" when it has none)."""
    for f in dataclasses.fields(config_class):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


@dataclasses.dataclass(frozen=True)
class Study:
    """A base config plus axes (field -> several values) that expand into single runs.

    ``base`` and ``axes`` hold values already coerced to their fields' types.
    """

    config_class: type
    base: dict[str, Any]
    axes: dict[str, list[Any]]

    def expand(self) -> list[Any]:
        """All single-run configs: the Cartesian product of the axes, in axis order."""
        names = list(self.axes)
        return [
            construct(self.config_class, {**self.base, **dict(zip(names, values, strict=True))})
            for values in itertools.product(*(self.axes[n] for n in names))
        ]


# --------------------------------------------------------------------------- parsing


def parse_study(
    config_class: type[C],
    config_file: str | Path | None = None,
    argv: list[str] | tuple = (),
    *,
    experiment: str | None = None,
) -> Study:
    """Read a preset (a TOML file or a preset name, optional) and ``--field`` overrides.

    ``experiment`` (the study the values are for), when given, must match the preset's
    ``experiment`` key: a warm-start preset handed to the permuted study is an error, not a
    run with half its fields ignored.
    """
    raw: dict[str, Any] = {}
    if config_file is not None:
        preset = load_toml(config_file)
        named = preset.pop("experiment", None)
        if experiment is not None and named is not None and named != experiment:
            raise ConfigError(
                f"{config_file} is a preset of the {named!r} study, not {experiment!r}; "
                f"run it with `plasticollapse {named} --config {config_file}`"
            )
        # Canonical names first, so that `--seeds 0` on the command line replaces a
        # preset's `seeds = [0, 1]` instead of competing with it under another spelling.
        try:
            raw.update({canonical_name(config_class, k): v for k, v in preset.items()})
        except ConfigError as e:
            raise ConfigError(f"{config_file}: {e}") from None
    raw.update(parse_overrides(config_class, argv))

    base: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    for name, value in raw.items():
        values = coerce_values(config_class, name, value)
        if len(values) == 1:
            base[name] = values[0]
        elif name in EXECUTION_FIELDS:
            raise ConfigError(f"{name} takes one value: it says how runs execute, not what")
        else:
            axes[name] = values
    study = Study(config_class, base, axes)
    study.expand()  # validate every combination now, before any run starts
    return study


def coerce_values(config_class: type, name: str, value: Any) -> list[Any]:
    """A raw value (one, or a list making an axis) -> the list of the field's typed values.

    A list is an axis unless the field is a tuple (then the list is its one value). Seeds
    accept ranges (``0-4``); a value listed twice would make two identical runs sharing one
    folder, so it is an error.
    """
    kind = field_types(config_class)[name]
    raws = value if isinstance(value, list) and not is_tuple_type(kind) else [value]
    if name == "seed":
        raws = [s for r in raws for s in (parse_seeds(r) if isinstance(r, str) else [r])]
    values = [coerce(config_class, name, v) for v in raws]
    texts = [json.dumps(v) for v in values]
    repeated = sorted({t for t in texts if texts.count(t) > 1})
    if repeated:
        raise ConfigError(
            f"{name} lists {', '.join(repeated)} more than once; each value makes one run"
        )
    return values


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2,5"`` -> [0, 2, 5]; ``"3"`` -> [3].

    Ranges and lists mix (``"0-2,7"``); ranges are inclusive. Seeds must be non-negative and
    distinct; anything else raises :class:`ConfigError`. The one seed syntax of every
    subcommand (``permuted``, ``warmstart``, ``sweep``) and of TOML's ``seeds = "0-4"``.
    """
    usage = "write seeds as a range 0-4, a list 0,2,5, or one seed 3"
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        low, sep, high = part.partition("-")
        if not (low.isdigit() and (high.isdigit() if sep else True)):
            raise ConfigError(
                f"--seeds {text!r}: {part!r} is not a seed (an integer >= 0) or a range; {usage}"
            )
        if sep:
            if int(high) < int(low):
                raise ConfigError(f"--seeds {text!r}: range {part!r} goes down; {usage}")
            seeds.extend(range(int(low), int(high) + 1))
        else:
            seeds.append(int(low))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds {text!r} repeats {repeated}; each seed is one run")
    return seeds


def parse_overrides(config_class: type, argv: list[str] | tuple) -> dict[str, Any]:
    """``--lr 0.1 --seeds 0 1 --grid lr=0.1,0.01`` -> {"lr": "0.1", "seed": ["0", "1"], ...}.

    Values stay strings here; :func:`coerce_values` converts them with the field's type.
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
    """The field ``key`` names (``--first-task-epochs`` and ``seeds`` are spellings of
    ``first_task_epochs`` and ``seed``); ConfigError naming the closest field otherwise."""
    name = key.replace("-", "_")
    name = ALIASES.get(name, name)
    fields = field_types(config_class)
    if name not in fields:
        raise ConfigError(f"unknown field {key!r}; {closest_field_hint(name, fields)}")
    return name


def closest_field_hint(name: str, fields: Iterable[str]) -> str:
    """``did you mean 'lr'?`` for the field (``seeds`` for the seed) closest to ``name`` by
    :func:`difflib.get_close_matches` (ratio >= 0.6), else the list of fields.

    Written for a person, so it names fields as they are typed and no class."""
    plural = {target: alias for alias, target in ALIASES.items()}
    spellings = [plural.get(f, f) for f in fields]  # `seeds`, the name --help shows
    close = difflib.get_close_matches(name, spellings, n=1)
    if close:
        return f"did you mean {close[0]!r}? (--help lists every field)"
    return f"fields: {', '.join(sorted(spellings))}"


# --------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    """The shipped presets as ``--config`` takes them: ``paper/permuted_mnist``, ..."""
    return sorted(p.relative_to(PRESETS).with_suffix("").as_posix() for p in _preset_files())


def _preset_files() -> list[Path]:
    return sorted(PRESETS.glob("*/*.toml")) if PRESETS.is_dir() else []


def preset_summary(path: Path) -> str:
    """A preset's description: the first sentence of its first comment paragraph, whole
    even where it runs over several lines; "" when the file opens with no comment.

    A sentence ends at ``.``, ``!`` or ``?`` followed by a space and a capital letter or a
    digit, unless the period ends an abbreviation (``Dohare et al. 2024``, ``Sec. 4.2``),
    or at the paragraph's end.
    """
    paragraph: list[str] = []
    for line in path.read_text().splitlines():
        text = line.lstrip("#").strip()
        if not line.startswith("#") or (not text and paragraph):
            break
        if text:
            paragraph.append(text)
    return SENTENCE_END.split(" ".join(paragraph), maxsplit=1)[0]


#: Where a preset's first sentence ends (see :func:`preset_summary`).
SENTENCE_END = re.compile(
    r"(?<=[.!?])(?<!\bal\.)(?<!\bSec\.)(?<!\be\.g\.)(?<!\bi\.e\.)\s+(?=[A-Z0-9`])"
)


def resolve_config_file(ref: str | Path) -> Path:
    """A TOML file path, or a preset name (``quick/permuted_digits``, ``.toml`` optional).

    A file that exists wins; otherwise the name is looked up among the presets. The old
    spelling ``configs/quick/permuted_digits.toml`` (presets lived in the checkout's
    ``configs/`` folder, so also ``/path/to/checkout/configs/...``) maps to its preset, so
    old commands and scripts keep working.
    """
    path = Path(ref)
    if path.is_file():
        return path
    parts = path.with_suffix("").parts if path.suffix == ".toml" else path.parts
    if len(parts) >= 3 and parts[-3] == "configs":  # .../configs/<group>/<name>.toml
        parts = parts[-2:]
    preset = PRESETS.joinpath(*parts).with_suffix(".toml")
    if preset.is_file():
        return preset
    raise ConfigError(
        f"config file {ref} does not exist, and it names no preset; presets: "
        f"{', '.join(preset_names())} (plasticollapse presets lists them)"
    )


def load_toml(ref: str | Path) -> dict[str, Any]:
    """The TOML of a file or preset (see :func:`resolve_config_file`)."""
    path = resolve_config_file(ref)
    with path.open("rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e


def preset_experiment(ref: str | Path) -> str:
    """The study a preset is for (its ``experiment`` key); ConfigError when it has none."""
    experiment = load_toml(ref).get("experiment")
    if not isinstance(experiment, str):
        raise ConfigError(f"{ref} has no `experiment` key naming the study it configures")
    return experiment


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


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))


def _coerce(kind: Any, value: Any) -> Any:
    origin = get_origin(kind)
    if origin is Literal:
        allowed = get_args(kind)
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(kind) if a is not type(None)]
        return None if _is_none(value) else _coerce(options[0], value)
    if origin is tuple:
        (item, *_rest) = get_args(kind)
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(value) == 1 and _is_none(value[0]):
            value = []  # `--loggers none` empties a tuple a preset filled
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


def check_device_name(name: str) -> None:
    """ConfigError unless ``name`` is ``auto`` or one of :data:`DEVICE_TYPES` (``cuda:1``),
    without importing torch; ``runtime.resolve_device`` checks this machine has it."""
    match = re.fullmatch(r"([a-z]+)(?::(\d+))?", name)
    if name != "auto" and not (match and match.group(1) in DEVICE_TYPES):
        raise ConfigError(
            f"device {name!r} is not a device; use auto, {', '.join(DEVICE_TYPES)}, or an "
            "indexed one such as cuda:1"
        )


def construct(config_class: type[C], values: dict[str, Any]) -> C:
    """Build the dataclass from typed values; its ``__post_init__`` validates."""
    try:
        return config_class(**values)
    except TypeError as e:
        raise ConfigError(str(e)) from None


# --------------------------------------------------------------------------- identity


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of the config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(config_class: type[C], data: dict[str, Any]) -> C:
    """The config a :func:`to_dict` dict (a run folder's, a sweep spec's) describes.

    Keys the class does not know (fields a later version removed) are ignored; fields the
    dict lacks (added later) take their defaults.
    """
    dataclass_type: type = config_class  # fields() does not take an unbounded type[C]
    known = {f.name for f in dataclasses.fields(dataclass_type)}
    values = {k: coerce(config_class, k, v) for k, v in data.items() if k in known}
    return construct(config_class, values)
