"""What a remedy is: an object with hooks that a training loop calls at fixed points.

A remedy for loss of plasticity acts at one or more of these points, and does nothing at
the others (every hook of :class:`Remedy` is a no-op that a subclass overrides):

=================  ===================================================  =====================
hook               called                                               e.g.
=================  ===================================================  =====================
``bind``           once per run, on the freshly initialised network,    L2 Init keeps theta_0
                   before a checkpoint is loaded
``loss``           every step: an extra term added to the               NC1 regulariser,
                   cross-entropy                                        L2 Init
``weight_decay``   when the optimizer is built: SGD weight decay        weight decay
``after_step``     after every optimizer step (with the step's hidden      Continual Backprop
                   activations when ``needs_activations``)
``at_interval``    an online engine, after every ``interval()`` steps     Shrink & Perturb or
                   of a pass                                            ReDo every k steps
``at_task_start``  an online stream, before training task t >= 1        Shrink & Perturb, ReDo
``at_checkpoint``  the warm start, at each checkpoint before measuring  ReDo
``at_probe_start`` the warm start, on the probe's copy of the network   Shrink & Perturb
=================  ===================================================  =====================

The same object serves both studies: each calls the hooks its protocol has, so Shrink &
Perturb shrinks the network at every new task of Permuted MNIST and at the start of every
plasticity probe of the warm start.

Randomness: a remedy draws from ``generator_for(context.seed, purpose, index)``
(:func:`plasticollapse.runs.runtime.generator_for`) with its own purpose and the task or
epoch as index, never from global state, so a resumed run draws what an uninterrupted one
would. A remedy that keeps state across steps saves it through
:meth:`Remedy.state_dict`; the studies put it in their checkpoints.

Engines: the reference engine (autograd) calls every hook. The compiled fast engine has no
autograd and no optimizer; it runs a remedy's per-step work only in the form the remedy
declares with :meth:`Remedy.step_terms` (a decay folded into the SGD update, a pull
towards theta_0) or in a compiled form the engine itself holds for it (Continual
Backprop's generate-and-test: ``engines/fast_forms.py``, which reads the remedy's
parameters and state; this package's remedies import no engine), and falls back to the
reference engine for a remedy that has neither (the NC1 regulariser).

This module imports no torch (configs are validated without it): tensors appear in
annotations only.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from plasticollapse.runs.config import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Hooks a training loop calls at every step. An engine that cannot call them (the fast
#: online engine) runs a remedy that overrides any of them only through its
#: :meth:`Remedy.step_terms` or a compiled form of its own.
PER_STEP_HOOKS = ("loss", "weight_decay", "after_step")


@dataclasses.dataclass(frozen=True)
class StepTerms:
    """A remedy's per-step work in the form the compiled engines fold into their SGD
    update (all off by default).

    The SGD update of every trainable parameter theta becomes::

        theta <- theta - lr * (g + decay * theta + pull * (theta - anchor))

    (g the cross-entropy's gradient), which is what ``torch.optim.SGD(weight_decay=decay)``
    does with a loss term ``pull / 2 * ||theta - anchor||^2``. ``anchor`` holds one tensor
    per parameter, in ``model.parameters()`` order (empty before the remedy is bound, which
    still says that it has one). Work that is not of this form but has a compiled version
    in an engine (Continual Backprop's generate-and-test) is recognised by the engine
    itself, which reads the remedy's parameters and state.
    """

    decay: float = 0.0
    pull: float = 0.0
    anchor: tuple[Any, ...] | None = None


@dataclasses.dataclass(frozen=True)
class RemedyContext:
    """What a remedy learns about its run when it is bound to the network."""

    seed: int  # the run's seed: every random draw of a remedy derives from it
    num_classes: int


@dataclasses.dataclass
class Remedy:
    """Base class of remedies: every hook does nothing; a subclass overrides what it uses.

    A subclass is a dataclass whose fields are its parameters, named as the config fields
    they come from (``shrink``, ``redo_tau``, ...), so that :meth:`from_config` needs no
    code; its ``__post_init__`` validates them with a :class:`ConfigError` naming the field.
    """

    #: The remedy's name in configs (``remedies = ["shrink_perturb"]``) and labels.
    name: ClassVar[str] = ""
    #: Whether :meth:`after_step` needs the hidden activations of the step's forward pass.
    needs_activations: ClassVar[bool] = False
    #: Whether :meth:`at_interval` reads its ``inputs`` (the engines skip gathering the
    #: recent samples, and pass None, when no remedy due reads them).
    reads_interval_inputs: ClassVar[bool] = True

    # ------------------------------------------------------------------ building

    @classmethod
    def from_config(cls, config: Any) -> Remedy:
        """The remedy with its parameters read from the config fields of the same names."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.init})

    @classmethod
    def check(cls, config: Any) -> None:
        """Raise a :class:`ConfigError` when the run ``config`` describes cannot use this
        remedy (called only for the remedies a run applies)."""

    def bind(self, model: nn.Module, context: RemedyContext) -> None:
        """Once per run, on the freshly initialised network, before a checkpoint is loaded.

        Subclasses that override it call ``super().bind(model, context)`` first.
        """
        self.context = context

    # ------------------------------------------------------------------ every step

    def loss(
        self,
        model: nn.Module,
        logits: torch.Tensor,
        features: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor | None:
        """An extra term of the training objective (added to the cross-entropy), or None.

        ``features`` are the penultimate features whose linear map gave ``logits``.
        """
        return None

    def weight_decay(self) -> float:
        """The SGD weight decay this remedy asks for (several remedies' decays add up)."""
        return 0.0

    def after_step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        step: int,
        activations: list[torch.Tensor] | None = None,
    ) -> None:
        """After every optimizer step; ``step`` counts the steps of the current pass from 0.

        ``activations``: the hidden layers' outputs of the step's forward pass (before the
        update), given by engines when the class sets :attr:`needs_activations`.
        """

    def step_terms(self) -> StepTerms | None:
        """This remedy's per-step work as a decay and a pull that the compiled engines fold
        into their update, or None when it has no such form (then only the reference
        engine runs the remedy, unless an engine holds a compiled form of it). A remedy
        without per-step hooks has none to do: an empty :class:`StepTerms`."""
        return None if self.per_step_hooks() else StepTerms()

    # ------------------------------------------------------------------ every k steps

    def interval(self) -> int:
        """Call :meth:`at_interval` after every this many steps of a pass (0: never)."""
        return 0

    def at_interval(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        inputs: torch.Tensor | None,
    ) -> dict[str, float]:
        """After every :meth:`interval` steps of an online pass; ``inputs`` are the pass's
        most recent samples (at most :data:`INTERVAL_SAMPLES`), as trained on (None when
        no remedy due has :attr:`reads_interval_inputs`). Returns
        counts that the engine sums into the pass's statistics (``OnlineStats.extra``)."""
        return {}

    def pass_summary(self) -> dict[str, float]:
        """At the end of every online pass: counts of what the remedy did during it, which
        the engine sums into ``OnlineStats.extra`` (Continual Backprop: units replaced)."""
        return {}

    # ------------------------------------------------------------------ boundaries

    def at_task_start(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        task: int,
        inputs: torch.Tensor,
    ) -> dict[str, Any]:
        """Before an online stream trains task ``task`` >= 1. ``inputs`` are a sample of the
        new task's inputs; ``optimizer`` is None for an engine without one. Returns keys to
        add to the task's row."""
        return {}

    def at_checkpoint(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        inputs: torch.Tensor,
    ) -> dict[str, Any]:
        """At a warm-start checkpoint, before measuring (part of the warm-up); ``inputs``
        are the warm-up set's. Returns keys to add to the checkpoint's row."""
        return {}

    def at_probe_start(self, model: nn.Module, epoch: int) -> None:
        """On the copy of the warm-up network that the checkpoint's probe then trains."""

    # ------------------------------------------------------------------ resuming

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly (stateless remedies: nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s result."""

    # ------------------------------------------------------------------ introspection

    def per_step_hooks(self) -> list[str]:
        """The per-step hooks (:data:`PER_STEP_HOOKS`) this remedy's class overrides."""
        return [h for h in PER_STEP_HOOKS if getattr(type(self), h) is not getattr(Remedy, h)]


#: How many of the most recent samples an engine passes to :meth:`Remedy.at_interval`.
INTERVAL_SAMPLES = 2048


def require(condition: bool, message: str) -> None:
    """Raise a :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
