"""The ``--help`` text of a study's config fields, in sections: flag, type or choices, help,
default; ``--print-config``, the resolved config as a TOML preset (:func:`study_toml`); and
``--dry-run``, the table of the planned runs (:func:`plan_table`).

``plasticollapse <study> --help`` and ``--fields`` print :func:`describe_fields` of the
study's config class (:mod:`plasticollapse.runs.config`). Fields are grouped into the
sections a researcher looks for (:data:`SECTIONS`: data, model, training, remedies and
their parameters, measuring, execution), and each choice list and each default is said
once: a help text that already cites the default (``(Ash & Adams: 0.6)``) has it turned
into the default clause instead of repeated after it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

from plasticollapse.runs.config import ALIAS_HELP, ALIASES, EXECUTION_FIELDS, Study, field_types

#: Width of the ``--name TYPE`` column of :func:`describe_fields`; longer flags put their
#: help on the next line, as argparse does.
FLAG_COLUMN = 34
HELP_WIDTH = 100

#: The sections of ``--help``, in order, with the fields of the shipped studies each holds.
#: A field of another study names its section with ``field(..., section="model")``; one in
#: neither lands in ``other``.
SECTIONS: dict[str, tuple[str, ...]] = {
    "data": (
        *("dataset", "data_root", "download", "train_samples", "test_samples"),
        *("task_samples", "subset_size", "inputs", "permutation"),
        *("initial_classes", "classes_per_task", "class_order"),
        *("flipping_bits", "flip_after", "flip", "target_hidden", "beta", "outputs"),
    ),
    "model": ("model", "width", "maxpool", "hidden", "layer_norm", "crelu", "init"),
    "training": (
        *("lr", "momentum", "batch_size", "augment", "amp", "tasks", "first_task_epochs"),
        *("epochs_per_task", "nc1_threshold", "threshold_metric", "sample_order"),
        *("warmup_fraction", "warmup_epochs", "seed"),
    ),
    "remedies and their parameters": (
        *("remedies", "scheme", "shrink", "perturb", "nc1_lambda", "nc1_clip"),
        *("weight_decay", "l2_init_lambda", "redo_tau", "shrink_perturb_every", "redo_every"),
        *("cbp_replacement_rate", "cbp_decay_rate", "cbp_maturity", "cbp_utility"),
        "etf_scale",
    ),
    "measuring": (
        *("measure_every", "measure_samples", "eval_samples", "checkpoint_every"),
        *("task_accuracy", "layer_collapse", "plasticity_probe", "probe_samples"),
        *("probe_steps", "probe_lr", "finetune_target_acc", "finetune_max_epochs"),
        *("retrained_baseline", "retrained", "forgetting"),
    ),
    "execution": (
        *("out", "device", "threads", "engine", "progress", "loggers"),
        *("wandb_project", "wandb_group"),
    ),
}
OTHER = "other"
_SECTION_OF = {name: section for section, names in SECTIONS.items() for name in names}
_POSITION = {name: i for i, name in enumerate(n for names in SECTIONS.values() for n in names)}

#: ``(flag, help)`` rows that :func:`describe_fields` lists beside a section's fields (the
#: command line's own ``--backend``, ``--workers``, ``--wait`` under ``execution``).
Rows = Mapping[str, Sequence[tuple[str, str]]]


def section_of(f: dataclasses.Field) -> str:
    """The ``--help`` section of a config field: its ``section`` metadata, else the table."""
    return f.metadata.get("section") or _SECTION_OF.get(f.name, OTHER)


def ordered_fields(config_class: type) -> list[dataclasses.Field]:
    """The fields in :data:`SECTIONS`' order (fields it does not list after, as declared),
    so that every study lists the fields it shares in one order."""
    fields = dataclasses.fields(config_class)
    return sorted(fields, key=lambda f: _POSITION.get(f.name, len(_POSITION)))


def describe_fields(
    config_class: type, heading: str | None = None, extra: Rows | None = None
) -> str:
    """Every field as ``--help`` lists it, section by section::

        model:
          --hidden INT [INT ...]          the MLP's hidden layer widths (default: 100 100 100)
        execution:
          --engine {auto, fast, reference}  online engine: fast (Numba) ... (default: auto)

    The choices come from ``Literal`` types (a choice list shown before is referred to, not
    repeated), the help from :func:`field` (a field without help shows its default only);
    ``extra`` adds ready-made ``(flag, help)`` rows at the end of their section.
    """
    kinds = field_types(config_class)
    by_section: dict[str, list[tuple[str, str]]] = {}
    shown: dict[tuple, str] = {}
    for f in ordered_fields(config_class):
        flag_name = PLURALS.get(f.name, f.name)
        # A field whose values a registry holds (remedies) names its metavar itself.
        kind_text = f.metadata.get("metavar") or type_text(kinds[f.name], flag_name, shown)
        if flag_name != f.name:  # the plural spelling takes several values: --seeds 0 1 2
            kind_text = f"{kind_text} [{kind_text} ...]"
        help_text = f.metadata.get("help", "") + ALIAS_HELP.get(f.name, "")
        text = with_default(help_text, _default(f))
        listed = "metavar" not in f.metadata
        if (
            listed
            and kind_text.startswith("NAME [")
            and not names_every_choice(help_text, kinds[f.name])
        ):
            text = f"{text}; NAME: {', '.join(map(str, choices_of(kinds[f.name])))}"
        by_section.setdefault(section_of(f), []).append((f"--{flag_name} {kind_text}", text))
    for section, rows in (extra or {}).items():
        by_section.setdefault(section, []).extend(rows)
    lines = [heading or f"fields of {config_class.__name__}:"]
    for section in [*SECTIONS, OTHER]:
        if section in by_section:
            lines += ["", f"{section}:"]
            lines += [line for row in by_section[section] for line in entry_lines(*row)]
    return "\n".join(lines)


#: The name ``--help`` gives a field that has a plural spelling: ``--seeds``.
PLURALS = {field_name: alias for alias, field_name in ALIASES.items()}


def entry_lines(flag: str, text: str) -> list[str]:
    """One entry: the flag in its column, the help wrapped beside it (or under it)."""
    flag, indent = f"  {flag}", " " * FLAG_COLUMN
    lines = []
    if len(flag) <= FLAG_COLUMN - 2:
        first = flag.ljust(FLAG_COLUMN)
    else:
        lines.append(flag)
        first = indent
    lines += textwrap.wrap(text, HELP_WIDTH, initial_indent=first, subsequent_indent=indent)
    return lines or [flag]


def with_default(help_text: str, default: str) -> str:
    """``help (default: X)``, saying the default once.

    A help that names its default already keeps its own words: one ending in ``(V)`` or
    ``(source: V)`` with V the default becomes ``(default: V, source)``; one with a clause of
    its own (``dataset folder (default: $PLASTICOLLAPSE_DATA ...)``) gets no other.
    """
    if "(default:" in help_text:
        return help_text
    cited = re.search(r"\s*\((?:([^():]*):\s*)?([^():]*)\)$", help_text)
    if cited and same_value(cited.group(2), default):
        source = f", {cited.group(1)}" if cited.group(1) else ""
        return f"{help_text[: cited.start()]} (default: {default}{source})"
    return " ".join(filter(None, [help_text, f"(default: {default})"]))


def same_value(text: str, default: str) -> bool:
    """``"1,200"`` is 1200 and ``"1e-6"`` is ``1e-06``; other text must be equal."""
    try:
        return float(text.replace(",", "")) == float(default)
    except ValueError:
        return text.strip() == default


def choices_of(kind: Any) -> tuple:
    """The allowed values of a ``Literal`` (or a tuple of one), else ()."""
    if get_origin(kind) is tuple:
        kind = get_args(kind)[0]
    return get_args(kind) if get_origin(kind) is Literal else ()


def names_every_choice(help_text: str, kind: Any) -> bool:
    return all(re.search(rf"\b{re.escape(str(c))}\b", help_text) for c in choices_of(kind))


def type_text(kind: Any, flag_name: str = "", shown: dict[tuple, str] | None = None) -> str:
    """``INT``, ``FLOAT|none``, ``{auto, fast, reference}``, ``INT [INT ...]`` ...

    A list of choices (``remedies``) is ``NAME [NAME ...]`` with the names in its help;
    ``shown`` remembers each choice list printed, so a later field with the same choices
    (``scheme``) refers to the first (``{as --remedies}``) instead of repeating them.
    """
    shown = {} if shown is None else shown
    origin = get_origin(kind)
    if origin is Literal:
        choices = get_args(kind)
        if choices in shown:
            return f"{{as --{shown[choices]}}}"
        shown[choices] = flag_name
        return "{" + ", ".join(map(str, choices)) + "}"
    if origin in (typing.Union, types.UnionType):
        options = [type_text(a, flag_name, shown) for a in get_args(kind) if a is not type(None)]
        return "|".join([*options, "none"])
    if origin is tuple:
        item = get_args(kind)[0]
        if get_origin(item) is Literal:
            shown.setdefault(get_args(item), flag_name)
            return "NAME [NAME ...]"
        text = type_text(item, flag_name, shown)
        return f"{text} [{text} ...]"
    if kind is bool:
        return "{true, false}"
    return getattr(kind, "__name__", str(kind)).upper()


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    return value_text(value)


def value_text(value: Any) -> str:
    """A default as the command line would write it: ``none``, ``true``, ``100 100 100``."""
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


# --------------------------------------------------------------------------- --print-config


def study_toml(experiment: str, study: Study, command: str = "") -> str:
    """The resolved config of a study as a TOML preset (``--print-config``).

    The axes first, as lists in their order (``lr = [0.1, 0.01]``, the seeds as ``seeds``),
    then every other field, section by section: the value the preset and the command line
    gave it, else its default.
    ``--config`` of the saved text plans the same runs (same folders) as the command that
    printed it. TOML has no null: a field left at a default of none is a comment, and one
    set to none over another default is ``"none"``. ``command`` (the command line that
    resolved it) becomes the first comment line, the description ``presets`` shows.
    """
    config_class = study.config_class
    lines = [f"# The {experiment} study as `{command or experiment}` resolves it."]
    lines += ["", f"experiment = {toml_value(experiment)}"]
    fields = {f.name: f for f in ordered_fields(config_class)}
    if study.axes:  # first, and in their order: it is the order of the runs
        lines += ["", "# one run per combination of these values"]
        lines += [toml_line(fields[name], study) for name in study.axes]
    by_section: dict[str, list[str]] = {}
    for f in fields.values():
        if f.name not in study.axes:
            by_section.setdefault(section_of(f), []).append(toml_line(f, study))
    for section in [*SECTIONS, OTHER]:
        if section in by_section:
            lines += ["", f"# {section}", *by_section[section]]
    return "\n".join(lines) + "\n"


def toml_line(f: dataclasses.Field, study: Study) -> str:
    """``name = value`` of one field of ``study`` (see :func:`study_toml`)."""
    name = PLURALS.get(f.name, f.name)
    if f.name in study.axes:
        return f"{name} = [{', '.join(toml_value(v) for v in study.axes[f.name])}]"
    has_default = f.default is not dataclasses.MISSING
    value = study.base.get(f.name, f.default if has_default else None)
    if f.name in PLURALS:
        return f"{name} = [{toml_value(value)}]"
    if value is None:
        return f"# {name} = none" if f.default is None else f'{name} = "none"'
    return f"{name} = {toml_value(value)}"


def toml_value(value: Any) -> str:
    """A TOML literal: ``true``, ``0.01``, ``inf``, ``"text"``, ``[100, 100]``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)  # round-trips every float; TOML spells inf and nan as Python does
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    raise TypeError(f"no TOML form for {value!r}")


# --------------------------------------------------------------------------- --dry-run


def plan_table(specs: Sequence) -> str:
    """One line per planned run: its state (new, partial, complete, running elsewhere), the
    settings that vary between the runs (and the seed), and its folder; then the counts."""
    from collections import Counter

    from plasticollapse.runs.lock import RunLock
    from plasticollapse.runs.naming import value_text
    from plasticollapse.runs.spec import run_status
    from plasticollapse.runs.sweep import complete_note

    keys = [
        k
        for k in (specs[0].config if specs else {})
        if k not in EXECUTION_FIELDS
        and k != "seed"
        and len({repr(s.config.get(k)) for s in specs}) > 1
    ] + ["seed"]
    states = []
    for spec in specs:
        state = run_status(spec)
        if state == "complete":
            state = complete_note(spec)
        elif RunLock(spec.folder).is_live():
            state = "running elsewhere"
        states.append(state)
    rows = [["state", *keys, "folder"]]
    rows += [
        [state, *(value_text(s.config.get(k)) for k in keys), s.folder]
        for state, s in zip(states, specs, strict=True)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]
    counts = Counter(states)
    totals = ", ".join(f"{n} {state}" for state, n in counts.items())
    lines.append(f"{len(specs)} runs" + (f": {totals}" if specs else ""))
    return "\n".join(lines)
