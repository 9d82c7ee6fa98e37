"""Which layers of a model to measure, by name, and which activations hooks cannot see.

A layer is a module whose output is measured: by default every activation *module*
(:data:`ACTIVATION_TYPES`: ReLU, GELU, LeakyReLU, tanh, ...), else the modules or module types
a user names. Metrics hook modules, so an activation applied as a function
(``F.relu(x)``, ``torch.tanh(x)``, ``x.relu()``) inside a ``forward`` is invisible to them:
:class:`FunctionalActivationSpy` watches one forward pass for such calls, so the caller can
say which ones were missed, where, and what to do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from torch import nn
from torch.overrides import TorchFunctionMode

#: The activation modules measured by default (their subclasses too, e.g. the package's CReLU).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Tanh,
    nn.Sigmoid,
    nn.LogSigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Softshrink,
    nn.Hardshrink,
    nn.Threshold,
    nn.GLU,
)

#: Names of the torch functions (``F.relu``, ``torch.tanh``, ``Tensor.relu_``, ...) that
#: apply an activation: what :class:`FunctionalActivationSpy` looks for.
FUNCTIONAL_ACTIVATIONS = frozenset(
    {
        "relu",
        "relu_",
        "relu6",
        "leaky_relu",
        "leaky_relu_",
        "prelu",
        "rrelu",
        "rrelu_",
        "elu",
        "elu_",
        "selu",
        "selu_",
        "celu",
        "celu_",
        "gelu",
        "silu",
        "mish",
        "hardswish",
        "hardsigmoid",
        "hardtanh",
        "hardtanh_",
        "tanh",
        "tanh_",
        "sigmoid",
        "sigmoid_",
        "logsigmoid",
        "softplus",
        "softsign",
        "glu",
    }
)

#: What ``layers=`` accepts: "activations" (every activation module), or a sequence of
#: module names (``named_modules()``), module types (all modules of that type) and modules.
LayerSpec = str | Sequence[str | type | nn.Module]


def resolve_layers(model: nn.Module, layers: LayerSpec) -> list[tuple[str, nn.Module]]:
    """(name, module) of each layer ``layers`` picks, in ``named_modules()`` order, once each."""
    named = [(name, m) for name, m in model.named_modules() if name]  # the root is no layer
    if isinstance(layers, str):
        if layers != "activations":
            raise ValueError(
                f"layers={layers!r}: pass 'activations' (every activation module) or a list "
                "of module names or types, e.g. layers=['body.2', nn.GELU]"
            )
        return [(name, m) for name, m in named if isinstance(m, ACTIVATION_TYPES)]
    picked: set[int] = set()
    by_name = dict(named)
    for spec in layers:
        picked |= {id(m) for m in _modules_of(spec, by_name, named)}
    return [(name, m) for name, m in named if id(m) in picked]


def _modules_of(spec, by_name: dict[str, nn.Module], named) -> list[nn.Module]:
    if isinstance(spec, str):
        if spec not in by_name:
            raise ValueError(f"model has no module named {spec!r}; choose from {list(by_name)}")
        return [by_name[spec]]
    if isinstance(spec, type) and issubclass(spec, nn.Module):
        found = [m for _, m in named if isinstance(m, spec)]
        if not found:
            raise ValueError(f"model has no module of type {spec.__name__}; name the layers")
        return found
    if isinstance(spec, nn.Module):
        if all(m is not spec for _, m in named):
            raise ValueError(f"layers names a {type(spec).__name__} that is not in the model")
        return [spec]
    raise ValueError(
        f"layers entries are module names, module types or modules, got {type(spec).__name__}"
    )


class FunctionalActivationSpy(TorchFunctionMode):
    """Inside, counts activation functions applied outside any activation module.

    A forward pre/post hook on every module keeps the stack of modules running; each call
    of a function in :data:`FUNCTIONAL_ACTIVATIONS` (seen through torch's
    ``__torch_function__`` mode) made while the innermost running module is not an
    activation module (nor a watched layer) is counted under that module's name.
    :attr:`unseen` maps (module name, function name) to the number of calls. Meant for one
    forward pass: every torch call pays a Python round trip meanwhile.
    """

    def __init__(self, model: nn.Module, watched: Iterable[nn.Module] = ()):
        super().__init__()
        self.model = model
        self.watched = {id(m) for m in watched}
        self.stack: list[tuple[str, nn.Module]] = []
        self.unseen: Counter[tuple[str, str]] = Counter()
        self.handles: list = []

    def __enter__(self):
        for name, module in self.model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter_module(name)))
            self.handles.append(module.register_forward_hook(self._leave_module))
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        return super().__exit__(*exc)

    def _enter_module(self, name: str):
        def hook(module, _args):
            self.stack.append((name, module))

        return hook

    def _leave_module(self, _module, _args, _output):
        if self.stack:
            self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in FUNCTIONAL_ACTIVATIONS and self.stack:
            where, module = self.stack[-1]
            if not isinstance(module, ACTIVATION_TYPES) and id(module) not in self.watched:
                self.unseen[(where, name)] += 1
        return func(*args, **(kwargs or {}))


def unseen_activations_message(
    unseen: Counter[tuple[str, str]], measured: Sequence[str], hint: str
) -> str:
    """One warning that names each activation the hooks missed, the layers measured, and
    ``hint`` (what to do)."""
    calls = ", ".join(
        f"{func} in {repr(where) if where else 'the model itself'} ({count}x)"
        for (where, func), count in sorted(unseen.items())
    )
    seen = ", ".join(measured) if measured else "none"
    return (
        f"activations applied as functions are not measured per layer: {calls}; {hint} "
        f"(layers measured: {seen})"
    )
