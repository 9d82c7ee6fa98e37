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
- ``auto`` takes the compiled batch-1 engine when it can for a classifier, else
  ``reference``; the compiled mini-batch engine (:mod:`plasticollapse.engines.minibatch`)
  and the batch-1 engine's squared error (bitflip regression) run when ``fast`` asks for
  them, so that runs made before they existed keep their numbers under ``auto``.
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


def facts_of(config: Any) -> RunFacts:
    """The :class:`RunFacts` of an online study's config (its remedies built from it; the
    loss and a masked head from the config class's ``LOSS`` and ``MASKED_HEAD``)."""
    from plasticollapse.remedies import build_remedies

    return RunFacts(
        batch_size=getattr(config, "batch_size", 1),
        loss=getattr(type(config), "LOSS", "cross_entropy"),
        masked_head=getattr(type(config), "MASKED_HEAD", False),
        mlp_options=tuple(n for n in ("layer_norm", "crelu") if getattr(config, n, False)),
        remedies=build_remedies(config),
    )


def minibatch_family(facts: RunFacts, model: nn.Module | None = None) -> bool:
    """Whether ``fast`` means the compiled mini-batch engine here (batch size > 1, or a head
    masked to the classes seen so far, which the batch-1 kernels do not compute) rather
    than the batch-1 one."""
    if facts.batch_size > 1 or facts.masked_head:
        return True
    if model is None:
        return False
    from plasticollapse.engines import minibatch

    return minibatch.routes_here(model, facts.batch_size)


def fast_reason(facts: RunFacts, model: nn.Module | None = None) -> str | None:
    """Why the compiled engine cannot run this, every reason joined by "; " (None: it can).
    With ``model``, the model's own checks too (its layers, dtype, device:
    :func:`plasticollapse.engines.fast.unsupported_reason`,
    :func:`plasticollapse.engines.minibatch.minibatch_supports`)."""
    from plasticollapse.engines import fast, minibatch

    reasons = []
    if facts.loss != "cross_entropy" and minibatch_family(facts, model):
        loss = facts.loss.replace("_", " ")
        reasons.append(
            f"the compiled mini-batch engine trains on the cross-entropy, not the {loss} "
            "(the batch-1 engine trains on both)"
        )
    if facts.mlp_options:
        reasons.append(f"it runs the plain ReLU MLP, not {' or '.join(facts.mlp_options)}")
    # the remedies' compiled forms (Continual Backprop's at every batch size)
    reasons.append(minibatch.remedies_supported(facts.remedies, facts.batch_size) or "")
    if model is not None and not any(reasons):
        if minibatch_family(facts, model):
            reasons.append(
                minibatch.minibatch_supports(model, facts.batch_size, facts.remedies) or ""
            )
        else:
            reasons.append(fast.unsupported_reason(model, facts.batch_size) or "")
    return "; ".join(r for r in reasons if r) or None


def choose_engine(requested: str, facts: RunFacts, model: nn.Module | None = None) -> str:
    """``"fast"`` or ``"reference"``: the engine that runs a run asking for ``requested``.

    ``auto`` takes the compiled batch-1 engine wherever it applies to a classifier, and
    the reference engine otherwise; the compiled mini-batch engine (batch size > 1, masked
    heads) and the batch-1 engine's squared error run only when asked for by ``fast``, so
    that runs made before they existed keep their numbers when rerun or resumed (they sum
    in float32 in another order than autograd). Raises a
    :class:`ConfigError` for an unknown name, or for ``fast`` where it does not apply (the
    message gives every reason and says to use ``auto`` or ``reference``).
    """
    if requested not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}; got {requested!r}")
    if requested == "reference":
        return "reference"
    if requested == "auto" and (minibatch_family(facts, model) or facts.loss != "cross_entropy"):
        return "reference"
    reason = fast_reason(facts, model)
    if reason is None:
        return "fast"
    if requested == "fast":
        raise ConfigError(f"engine 'fast' cannot run this: {reason}; use engine auto or reference")
    # Said where the fast engine would have been expected: batch 1 of a classifier on a CPU.
    expected = facts.loss == "cross_entropy"
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
    """The engine :func:`choose_engine` picks for this model, built: the compiled batch-1
    :class:`~plasticollapse.engines.fast.FastEngine`, the compiled
    :class:`~plasticollapse.engines.minibatch.MiniBatchEngine`, or the
    :class:`~plasticollapse.engines.reference.ReferenceEngine` (with ``loss``)."""
    facts = RunFacts(batch_size, loss, masked_head, (), tuple(remedies))
    if choose_engine(name, facts, model) == "fast":
        if minibatch_family(facts, model):
            from plasticollapse.engines.minibatch import MiniBatchEngine

            return MiniBatchEngine(model, lr, batch_size, remedies)
        from plasticollapse.engines.fast import FastEngine

        return FastEngine(model, lr, remedies, loss=loss)
    from plasticollapse.engines.reference import ReferenceEngine

    return ReferenceEngine(model, lr, batch_size, remedies, loss=loss)


def check_engine(config: Any) -> None:
    """Config validation: raise a :class:`ConfigError` if ``config.engine`` cannot run it.

    Only ``fast`` can be refused; ``auto`` and ``reference`` are decided when the model
    exists (so that validating a config imports neither torch nor the compiled kernels).
    """
    if config.engine == "fast":
        choose_engine(config.engine, facts_of(config))
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
