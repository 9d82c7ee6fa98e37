"""Plain training: no remedy (the baseline every remedy is compared against)."""

from __future__ import annotations

import dataclasses

from plasticollapse.remedies.base import Remedy


@dataclasses.dataclass
class Plain(Remedy):
    """Cross-entropy and SGD, nothing else: every hook is the base class's no-op.

    Listed so that ``plain`` is a valid name (``scheme = "plain"``, the warm start's
    default); a run's remedies leave it out.
    """

    name = "plain"
