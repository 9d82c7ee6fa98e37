"""The remedies' config fields, shared by every study's config (``class Config(RemedyFields)``).

Parameters stay flat fields (``--shrink 0.5``, ``shrink = 0.5`` in a preset) rather than a
nested table per remedy, so that existing presets, command lines and run folders keep
working; each remedy reads the fields named as its parameters
(:meth:`~plasticollapse.remedies.base.Remedy.from_config`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from plasticollapse.remedies import REMEDIES, remedy_names
from plasticollapse.runs.config import ConfigError, field

#: The name of any registered remedy (the choices of ``remedies`` and of the warm start's
#: ``scheme``), read from the registry so that a new remedy is one registry line.
RemedyName = Literal[tuple(REMEDIES)]  # type: ignore[valid-type]

#: Fields added with the online remedies (Continual Backprop, every-k-steps options, the
#: ETF head): every study lists them in its ``IDENTITY_OMITS_DEFAULTS``, so that runs
#: made before them keep their folder names.
ONLINE_REMEDY_FIELDS = frozenset(
    {"shrink_perturb_every", "redo_every", "etf_scale"}
    | {"cbp_replacement_rate", "cbp_decay_rate", "cbp_maturity", "cbp_utility"}
)

#: Fields of :class:`RemedyFields`; a study that adds them to an existing config lists them
#: in its ``IDENTITY_OMITS_DEFAULTS`` so that its old run folders keep their names.
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

    remedies: tuple[RemedyName, ...] = field(
        (), help="remedies applied together, in order: " + ", ".join(REMEDIES)
    )
    shrink: float = field(0.6, help="shrink_perturb: factor on the weights (Ash & Adams: 0.6)")
    perturb: float = field(0.01, help="shrink_perturb: factor on the fresh weights (0.01)")
    nc1_lambda: float = field(0.05, help="nc1_reg: weight of the NC1 reward (the paper: 0.05)")
    nc1_clip: float = field(200.0, help="nc1_reg: NC1 above this earns no more reward (200)")
    weight_decay: float | None = field(
        None,
        help="SGD weight decay of training, whatever the remedies; "
        "unset: 0.01 under the weight_decay remedy, else none",
    )
    l2_init_lambda: float = field(0.01, help="l2_init: strength of the pull to theta_0")
    redo_tau: float = field(0.1, help="redo: units scoring <= tau are dormant and recycled")
    shrink_perturb_every: int = field(
        0, help="shrink_perturb: every k steps of a pass instead of at each task (0: per task)"
    )
    redo_every: int = field(
        0, help="redo: every k steps of a pass instead of at each task (0: per task)"
    )
    cbp_replacement_rate: float = field(
        1e-6, help="cbp: units replaced per eligible unit and step (Dohare et al.: 1e-6)"
    )
    cbp_decay_rate: float = field(0.99, help="cbp: decay of the running utility (0.99)")
    cbp_maturity: int = field(100, help="cbp: steps before a unit may be replaced (100)")
    cbp_utility: Literal["contribution", "adaptable_contribution"] = field(
        "adaptable_contribution", help="cbp: utility measure (adaptable_contribution)"
    )
    etf_scale: float = field(1.0, help="etf_head: norm of each class's fixed weight row (1)")

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
        for name in remedy_names(self):
            REMEDIES[name].check(self)

    def requested_remedies(self) -> tuple[str, ...]:
        """The remedies the config asks for (a study may add other spellings: ``scheme``)."""
        return self.remedies
