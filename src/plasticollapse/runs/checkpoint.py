"""Checkpoint files hold plain data, so that reading a run folder never runs its code.

Run folders are shared with collaborators and on cluster file systems, and a pickle can
name any function to call when it loads (an object whose ``__reduce__`` returns
``(os.system, ...)``). So a checkpoint is written only when it is *plain data*: tensors,
``bool``/``int``/``float``/``str``/``None``, and lists, tuples and dicts of them (keys
``str`` or ``int``; a module's ``state_dict()`` is an ``OrderedDict`` of tensors, an
optimizer's a dict with int keys), and it is read with
``torch.load(path, map_location="cpu", weights_only=True)``, whose unpickler rebuilds
those types and refuses every other global. Nothing is allow-listed beyond torch's
defaults: every study's state (weights, optimizer and remedy states, counters, the
per-epoch statistics, the warm start's probe) is plain data already. A type that must be
stored some day would go through ``torch.serialization.add_safe_globals`` here, with the
reason beside it.

Subclasses of the plain types are refused when saving (a NumPy ``float64`` is a ``float``,
an ``IntEnum`` an ``int``, but their pickles name their class, which ``weights_only``
refuses): convert them (``float(x)``, ``torch.from_numpy(a)``, ``enum.value``) where the
state is built.
"""

from __future__ import annotations

import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

#: The leaf types a checkpoint may hold besides tensors (exact types, not subclasses).
PLAIN_LEAVES = (bool, int, float, str, type(None))

#: What the error messages call plain data.
PLAIN_DATA = "tensors, numbers, strings, lists and dicts"


class NotPlainDataError(TypeError):
    """A checkpoint state holds something other than plain data (a bug in the study that
    built it: the message names the entry and its type)."""


def check_plain_data(value: Any, where: str = "state") -> None:
    """Raise :class:`NotPlainDataError` naming the first entry of ``value`` (``where`` is
    its name, e.g. ``state['remedies'][0]['util']``) that is not plain data."""
    import torch

    kind = type(value)
    if kind in PLAIN_LEAVES or kind in (torch.Tensor, torch.nn.Parameter):
        return
    if kind in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise NotPlainDataError(
                    f"checkpoint {where} has a key {key!r} of type {type(key).__name__}: "
                    "use str or int keys"
                )
            check_plain_data(item, f"{where}[{key!r}]")
        return
    if kind in (list, tuple):
        for index, item in enumerate(value):
            check_plain_data(item, f"{where}[{index}]")
        return
    raise NotPlainDataError(
        f"checkpoint {where} is a {kind.__module__}.{kind.__qualname__}: a checkpoint holds "
        f"only {PLAIN_DATA} (it is read with weights_only=True); convert it where the state "
        "is built"
    )


def write_state(file: IO[bytes], state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to the open ``file`` after checking it is plain data."""
    import torch

    check_plain_data(state)
    torch.save(state, file)


def read_state(path: Path) -> tuple[Any, str]:
    """``(state, "")`` when the checkpoint at ``path`` loads as plain data, else
    ``(None, why not)``: truncated, garbled, unreadable, or holding a pickled object (which
    is never called: ``weights_only=True`` refuses it before anything runs)."""
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True), ""
    except Exception as e:  # truncated zip, bad pickle, a refused global, I/O error
        return None, _why_unusable(e)


def _why_unusable(error: Exception) -> str:
    text = str(error)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:
        return (
            f"holds a pickled object ({refused.group(1)}), not plain data ({PLAIN_DATA}); "
            "it was not loaded"
        )
    detail = next((line for line in text.splitlines() if _is_detail(line)), "")
    detail = detail or (text.splitlines() or [""])[0]
    return f"is unreadable ({type(error).__name__}: {detail.strip()[:120]})"


def _is_detail(line: str) -> bool:
    """Whether ``line`` of torch's weights-only error says what failed (its first lines
    are general advice, the same for every file)."""
    return line.startswith(("Unsupported", "Trying to load"))
