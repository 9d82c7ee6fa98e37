"""The remedies' config fields, shared by every study's config (``class Config(RemedyFields)``).

Parameters stay flat fields (``--shrink 0.5``, ``shrink = 0.5`` in a preset) rather than a
nested table per remedy, so that existing presets, command lines and run folders keep
working; each remedy reads the fields named as its parameters
(:meth:`~plasticollapse.remedies.base.Remedy.from_config`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from plasticollapse.remedies import REMEDIES, remedy_names
from plasticollapse.remedies.events import ONLINE_EVENTS, Event, check_events
from plasticollapse.runs.config import ConfigError, field

#: Fields added with the online remedies (Continual Backprop, every-k-steps options, the
#: ETF head). With :data:`REMEDY_FIELDS`, only the legacy folder hash uses them
#: (``LEGACY_IDENTITY_OMITS``: finding run folders named before the identity counted
#: a remedy's parameters only where the remedy applies).
ONLINE_REMEDY_FIELDS = frozenset(
    {"shrink_perturb_every", "redo_every", "etf_scale"}
    | {"cbp_replacement_rate", "cbp_decay_rate", "cbp_maturity", "cbp_utility"}
)

#: Fields of :class:`RemedyFields` (for the legacy folder hash, see above).
REMEDY_FIELDS = (
    frozenset(
        {"remedies", "shrink", "perturb", "nc1_lambda", "nc1_clip", "weight_decay"}
        | {"l2_init_lambda", "redo_tau"}
    )
    | ONLINE_REMEDY_FIELDS
)


@dataclasses.dataclass(frozen=True)
class RemedyFields:
    """Which remedies a run applies, and their parameters (defaults: the papers' values).

    Validated here (names) and by each remedy (its parameters, for every remedy, so a bad
    value is an error even while unused; and its requirements on the run, for the
    remedies applied). A study config's ``__post_init__`` calls ``super().__post_init__()``.
    """

    #: The study's name, for messages (set by each study's config class).
    STUDY: ClassVar[str] = "this"
    #: The events of the study's protocol where remedies can act (remedies/events.py).
    EVENTS: ClassVar[frozenset[Event]] = ONLINE_EVENTS

    # Names are checked against the registry when a config is built (not by a Literal type
    # fixed at import), so that a remedy registered later is one registry line.
    remedies: tuple[str, ...] = field(
        (),
        help="remedies applied together, in order: " + ", ".join(REMEDIES),
        metadata={"metavar": "NAME [NAME ...]"},
    )
    shrink: float = field(
        0.6,
        help="shrink_perturb: factor on the weights (Ash & Adams: 0.6)",
        remedy="shrink_perturb",
    )
    perturb: float = field(
        0.01, help="shrink_perturb: factor on the fresh weights (0.01)", remedy="shrink_perturb"
    )
    nc1_lambda: float = field(
        0.05, help="nc1_reg: weight of the NC1 reward (the paper: 0.05)", remedy="nc1_reg"
    )
    nc1_clip: float = field(
        200.0, help="nc1_reg: NC1 above this earns no more reward (200)", remedy="nc1_reg"
    )
    weight_decay: float | None = field(
        None,
        help="SGD weight decay of training, whatever the remedies; "
        "unset: 0.01 under the weight_decay remedy, else none",
        remedy="weight_decay",
    )
    l2_init_lambda: float = field(
        0.01, help="l2_init: strength of the pull to theta_0", remedy="l2_init"
    )
    redo_tau: float = field(
        0.1, help="redo: units scoring <= tau are dormant and recycled", remedy="redo"
    )
    shrink_perturb_every: int = field(
        0,
        help="shrink_perturb: every k steps of a pass instead of at each task (0: per task)",
        remedy="shrink_perturb",
    )
    redo_every: int = field(
        0,
        help="redo: every k steps of a pass instead of at each task (0: per task)",
        remedy="redo",
    )
    cbp_replacement_rate: float = field(
        1e-6,
        help="cbp: units replaced per eligible unit and step (Dohare et al.: 1e-6)",
        remedy="cbp",
    )
    cbp_decay_rate: float = field(
        0.99, help="cbp: decay of the running utility (0.99)", remedy="cbp"
    )
    cbp_maturity: int = field(
        100, help="cbp: steps before a unit may be replaced (100)", remedy="cbp"
    )
    cbp_utility: Literal["contribution", "adaptable_contribution"] = field(
        "adaptable_contribution",
        help="cbp: utility measure (adaptable_contribution)",
        remedy="cbp",
    )
    etf_scale: float = field(
        1.0, help="etf_head: norm of each class's fixed weight row (1)", remedy="etf_head"
    )

    def __post_init__(self):
        # A string would otherwise become a tuple of its characters; lists (JSON, TOML)
        # become the tuple the dataclass declares (it is frozen).
        names = (self.remedies,) if isinstance(self.remedies, str) else tuple(self.remedies)
        object.__setattr__(self, "remedies", names)
        for name in names:
            if name not in REMEDIES:
                raise ConfigError(f"remedies: {name!r} is not one of {', '.join(REMEDIES)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"remedies lists a remedy twice: {list(names)}")
        for remedy in REMEDIES.values():
            remedy.from_config(self)  # each validates its parameters
        applied = [REMEDIES[name].from_config(self) for name in remedy_names(self)]
        for remedy in applied:
            remedy.check(self)
        # One generic rule for every study x remedy pair: the study has the events the
        # remedy acts at (remedies/events.py).
        check_events(type(self).STUDY, type(self).EVENTS, applied)

    def applied_remedies(self) -> tuple[str, ...]:
        """The remedies the run applies (:func:`~plasticollapse.remedies.remedy_names`): a
        remedy's parameter fields count in the run's identity only when it is one of them."""
        return remedy_names(self)

    def requested_remedies(self) -> tuple[str, ...]:
        """The remedies the config asks for (a study may add other spellings: ``scheme``)."""
        return self.remedies
