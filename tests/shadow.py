"""Engine comparisons that do not depend on where chaotic trajectories part.

Two float32 implementations of batch-1 SGD on a ReLU MLP (the compiled engine, autograd)
sum their dot products in different orders, so they differ by rounding (~1e-7 relative).
A pre-activation within that distance of zero then takes the other side of the ReLU in one
of them, the unit's incoming row gets (or misses) a whole update, and the two trajectories
part chaotically. *Where* that happens depends on the CPU's code generation (AVX-512 or
not, ``NUMBA_CPU_NAME``), not on the code: a test that compares two long trajectories
passes on one machine and fails on another.

:func:`shadow` makes the comparison well posed by teacher forcing. The candidate engine
trains a run segment by segment; before every segment the twin (by default the reference
engine in float64, the update formula evaluated without float32 rounding) is reset to the
candidate's current parameters and remedy state, trains the same segment, and the two are
compared at its end. Errors cannot compound across segments, so each comparison measures
one segment's rounding (a tolerance derived from float32's eps), and a rounding-level ReLU
flip spoils at most the segment it happens in. Such flips are rare (a pre-activation
within ~1e-7 of zero on one of ~30,000 unit-steps of a segment: about one segment in a
few hundred), and a wrong update formula parts *every* segment, so a test asks that all
but a few segments agree to float32 rounding: a verdict no CPU can flip.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from plasticollapse.engines.fast import FastEngine
from plasticollapse.engines.reference import ReferenceEngine
from plasticollapse.engines.stats import OnlineStats

#: float32's unit roundoff.
EPS32 = float(torch.finfo(torch.float32).eps)
#: A segment's parameters agree when every parameter's relative error (Frobenius and max)
#: is below this: ~170 eps, the rounding of a 100-step segment (measured: 5e-7 to 1.1e-6
#: against the float64 twin) with a margin of about 20. A ReLU flip moves one row by ~1e-3,
#: an update 1% off moves a segment by ~1e-4: far above it.
SEGMENT_RTOL = 2e-5


def relative_errors(a: nn.Module, b: nn.Module) -> list[tuple[str, float, float]]:
    """(name, Frobenius-relative, max-abs-relative) difference of every parameter, with
    ``a`` as the reference: ``||b - a||_F / ||a||_F`` and ``max|b - a| / max|a|``."""
    out = []
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        p, q = p.detach().double(), q.detach().double()
        fro = ((q - p).norm() / p.norm().clamp_min(1e-30)).item()
        mx = ((q - p).abs().max() / p.abs().max().clamp_min(1e-30)).item()
        out.append((name, fro, mx))
    return out


def worst_error(a: nn.Module, b: nn.Module) -> float:
    return max(max(fro, mx) for _, fro, mx in relative_errors(a, b))


@dataclass
class Segment:
    """One segment's comparison: the worst relative parameter error and both engines'
    statistics (and the remedies' state agreement, when they have state)."""

    error: float
    candidate: OnlineStats
    twin: OnlineStats
    state_agrees: bool = True

    @property
    def agrees(self) -> bool:
        c, t = self.candidate, self.twin
        return (
            self.error < SEGMENT_RTOL
            and self.state_agrees
            and c.count == t.count
            and abs(c.correct - t.correct) <= 1  # a near-tie of two logits
            and abs(c.loss_sum - t.loss_sum) <= 1e-4 * max(abs(t.loss_sum), 1.0)
            and c.extra == t.extra  # the same units replaced or reset
        )


@dataclass
class Shadowed:
    """Every segment of a shadowed run, and the candidate's model at its end."""

    segments: list[Segment]
    model: nn.Module
    remedies: list = field(default_factory=list)

    @property
    def parted(self) -> list[int]:
        return [i for i, s in enumerate(self.segments) if not s.agrees]

    @property
    def agreeing_errors(self) -> list[float]:
        return [s.error for s in self.segments if s.agrees]

    def summary(self) -> str:
        errors = sorted(s.error for s in self.segments)
        median = errors[len(errors) // 2]
        return (
            f"{len(self.segments)} segments, {len(self.parted)} parted {self.parted[:5]}; "
            f"error median {median:.1e}, max of agreeing {max(self.agreeing_errors or [0]):.1e}"
        )

    def assert_agrees(self, max_parted: int | None = None) -> None:
        """All but a few segments agree to float32 rounding (a few: 2, plus 2% of them,
        for the rare rounding-level ReLU flip)."""
        n = len(self.segments)
        allowed = 2 + n // 50 if max_parted is None else max_parted
        assert len(self.parted) <= allowed, self.summary()
        assert sum(s.candidate.count for s in self.segments) == sum(
            s.twin.count for s in self.segments
        )


def segments_of(order: torch.Tensor, length: int) -> list[torch.Tensor]:
    return list(order.split(length))


def bind_remedies(model: nn.Module, build: Callable[[], Sequence]) -> list:
    from plasticollapse.remedies import RemedyContext

    remedies = list(build())
    for remedy in remedies:
        remedy.bind(model, RemedyContext(seed=0, num_classes=10))
    return remedies


def _state_of(remedies: Sequence) -> list[dict]:
    return [r.state_dict() for r in remedies]


def same_state(a: Sequence, b: Sequence) -> bool:
    """Whether two remedy lists hold the same discrete state (ages, counts, streams) and
    the same real-valued state to float32 rounding."""

    def same(u, v) -> bool:
        if isinstance(u, dict):
            return u.keys() == v.keys() and all(same(u[k], v[k]) for k in u)
        if isinstance(u, (list, tuple)):
            return len(u) == len(v) and all(same(p, q) for p, q in zip(u, v, strict=True))
        if isinstance(u, torch.Tensor):
            if u.is_floating_point():
                scale = max(u.abs().max().item(), v.abs().max().item(), 1e-30)
                return bool(((u.double() - v.double()).abs().max() / scale) < SEGMENT_RTOL)
            return torch.equal(u, v)
        return u == v

    return same(_state_of(a), _state_of(b))


def shadow(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    segments: Sequence[torch.Tensor],
    *,
    lr: float = 0.01,
    remedies: Callable[[], Sequence] = list,
    columns: torch.Tensor | None = None,
    twin_columns: torch.Tensor | None | str = "same",
    candidate: Callable[[nn.Module, float, list], object] | None = None,
    twin: Callable[[nn.Module, float, list], object] | None = None,
    twin_dtype: torch.dtype = torch.float64,
    twin_inputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Shadowed:
    """Train a copy of ``model`` with ``candidate`` (default: the compiled engine) over
    ``segments`` (each a pass, ``train(x, y, segment, columns)``; a segment may also be a
    tuple ``(x, y, order)`` of its own data), teacher-forcing
    ``twin`` (default: the reference engine on a float64 copy) from the candidate's
    parameters and remedy state before each segment; compare at each segment's end.

    ``remedies`` builds the remedies (called once per engine); each list is bound to its
    engine's network. ``twin_inputs`` maps x to the twin's inputs (default: x in
    ``twin_dtype``); ``twin_columns`` the twin's column permutation (default: the
    candidate's)."""
    candidate = candidate or (lambda m, lr, r: FastEngine(m, lr, r))
    twin = twin or (lambda m, lr, r: ReferenceEngine(m, lr, 1, r))
    cand_model = copy.deepcopy(model)
    twin_model = copy.deepcopy(model).to(twin_dtype)
    cand_remedies = bind_remedies(cand_model, remedies)
    twin_remedies = bind_remedies(twin_model, remedies)
    cand_engine = candidate(cand_model, lr, cand_remedies)
    twin_engine = twin(twin_model, lr, twin_remedies)
    to_twin = twin_inputs or (lambda a: a.to(twin_dtype))
    if isinstance(twin_columns, str):
        twin_columns = columns
    x_twin = to_twin(x)
    out = []
    for segment in segments:
        seg_x, seg_y, seg_x_twin = x, y, x_twin
        if isinstance(segment, tuple):
            seg_x, seg_y, segment = segment
            seg_x_twin = to_twin(seg_x)
        with torch.no_grad():
            for p, q in zip(twin_model.parameters(), cand_model.parameters(), strict=True):
                p.copy_(q)
        for r, s in zip(twin_remedies, _state_of(cand_remedies), strict=True):
            r.load_state_dict(s)
        c = cand_engine.train(seg_x, seg_y, segment, columns=columns)
        t = twin_engine.train(seg_x_twin, seg_y, segment, columns=twin_columns)
        state_agrees = same_state(cand_remedies, twin_remedies)
        out.append(Segment(worst_error(twin_model, cand_model), c, t, state_agrees))
    return Shadowed(out, cand_model, cand_remedies)
