"""The one place that chooses the engine of an online run.

``choose_engine(requested, facts)`` answers for a run described by its :class:`RunFacts`
(what its config says: batch size, loss, masked head, the MLP's options, the remedies it
applies). It is called twice with the same rules: by each study's config validation
(without a model, so that ``--engine fast`` on a run the fast engine cannot do is refused
before anything trains) and by :func:`plasticollapse.engines.make_engine` (with the model,
whose own checks, such as the device, come on top).

- ``reference`` runs anything.
- ``fast`` runs what :func:`fast_reason` allows, or raises a :class:`ConfigError` saying why
  not and what to use.
- ``auto`` takes ``fast`` when it can, else ``reference``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from plasticollapse.runs.config import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from plasticollapse.engines import Engine
    from plasticollapse.remedies.base import Remedy

ENGINES = ("auto", "fast", "reference")
Loss = Literal["cross_entropy", "squared_error"]


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What the engine choice needs to know of a run, read from its config."""

    batch_size: int = 1
    #: the training loss: the classifiers' cross-entropy, or bitflip regression's
    loss: Loss = "cross_entropy"
    #: whether the head is masked to the classes seen so far (class-incremental streams)
    masked_head: bool = False
    #: options of the package's MLP that change its arithmetic (``layer_norm``, ``crelu``)
    mlp_options: tuple[str, ...] = ()
    remedies: Sequence[Remedy] = ()


def facts_of(config: Any, masked_head: bool = False) -> RunFacts:
    """The :class:`RunFacts` of an online study's config (its remedies built from it)."""
    from plasticollapse.remedies import build_remedies

    return RunFacts(
        batch_size=getattr(config, "batch_size", 1),
        loss=getattr(type(config), "LOSS", "cross_entropy"),
        masked_head=masked_head or getattr(type(config), "MASKED_HEAD", False),
        mlp_options=tuple(n for n in ("layer_norm", "crelu") if getattr(config, n, False)),
        remedies=build_remedies(config),
    )


def fast_reason(facts: RunFacts, model: nn.Module | None = None) -> str | None:
    """Why the compiled engine cannot run this, every reason joined by "; " (None: it can).
    With ``model``, the model's own checks too
    (:func:`plasticollapse.engines.fast.unsupported_reason`: its layers, dtype, device)."""
    from plasticollapse.engines.fast_plan import merge_terms

    reasons = []
    if facts.loss != "cross_entropy":
        loss = facts.loss.replace("_", " ")
        reasons.append(f"the fast engine trains on the cross-entropy, not the {loss}")
    if facts.masked_head:
        reasons.append("the fast engine computes a plain linear head, not a masked one")
    if facts.batch_size != 1:
        reasons.append(
            f"batch size is {facts.batch_size} (the fast engine trains one sample per step)"
        )
    if facts.mlp_options:
        reasons.append(f"it runs the plain ReLU MLP, not {' or '.join(facts.mlp_options)}")
    merged = merge_terms(facts.remedies)
    if isinstance(merged, str):
        reasons.append(merged)
    if model is not None and not reasons:
        from plasticollapse.engines import fast

        reasons.append(fast.unsupported_reason(model, facts.batch_size) or "")
    return "; ".join(r for r in reasons if r) or None


def choose_engine(requested: str, facts: RunFacts, model: nn.Module | None = None) -> str:
    """``"fast"`` or ``"reference"``: the engine that runs a run asking for ``requested``.

    Raises a :class:`ConfigError` for an unknown name, or for ``fast`` where it does not
    apply (the message says why and to use ``auto`` or ``reference``).
    """
    if requested not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}; got {requested!r}")
    if requested == "reference":
        return "reference"
    reason = fast_reason(facts, model)
    if reason is None:
        return "fast"
    if requested == "fast":
        raise ConfigError(f"engine 'fast' cannot run this: {reason}; use engine auto or reference")
    # Said where the fast engine would have been expected: batch 1 of a classifier on a CPU.
    expected = facts.loss == "cross_entropy" and not facts.masked_head and facts.batch_size == 1
    if model is not None and expected and not next(model.parameters()).is_cuda:
        say_once(f"engine auto: the reference engine (autograd) runs this, since {reason}")
    return "reference"


def make_engine(
    name: str,
    model: nn.Module,
    lr: float,
    batch_size: int,
    remedies: Sequence[Remedy] = (),
    *,
    loss: Loss = "cross_entropy",
    masked_head: bool = False,
) -> Engine:
    """The engine :func:`choose_engine` picks for this model, built: a
    :class:`~plasticollapse.engines.fast.FastEngine` or a
    :class:`~plasticollapse.engines.reference.ReferenceEngine` (with ``loss``)."""
    facts = RunFacts(batch_size, loss, masked_head, (), tuple(remedies))
    if choose_engine(name, facts, model) == "fast":
        from plasticollapse.engines.fast import FastEngine

        return FastEngine(model, lr, remedies)
    from plasticollapse.engines.reference import ReferenceEngine

    return ReferenceEngine(model, lr, batch_size, remedies, loss=loss)


def check_engine(config: Any, masked_head: bool = False) -> None:
    """Config validation: raise a :class:`ConfigError` if ``config.engine`` cannot run it.

    Only ``fast`` can be refused; ``auto`` and ``reference`` are decided when the model
    exists (so that validating a config imports neither torch nor the compiled kernels).
    """
    if config.engine == "fast":
        choose_engine(config.engine, facts_of(config, masked_head))
    elif config.engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}; got {config.engine!r}")


_SAID: set[str] = set()


def say_once(message: str) -> None:
    """Print ``message`` to stderr the first time this process asks (a sweep of many runs
    in one process says it once)."""
    import sys

    if message not in _SAID:
        _SAID.add(message)
        print(message, file=sys.stderr)
