"""A float64 gram ``sum_batches A_b^T A_b`` accumulated batch by batch.

On the CPU it goes through BLAS ``dsyrk``, which computes only the upper triangle of the
symmetric product: half the multiply-adds of the matmul ``A^T A``. The lower triangle is
mirrored once, when the gram is read. On other devices (a GPU) it is ``addmm_``. Both
equal ``sum_b a_b.double().T @ a_b.double()`` up to float64 rounding.
"""

from __future__ import annotations

import numpy as np
import torch


class SyrkGram:
    """The float64 gram A^T A (D x D) of row batches a_b (n_b x D) of A.

    ``update(a)`` adds ``a^T a``; ``gram()`` returns the full symmetric float64 matrix on
    the device of the batches. ``start``, a float64 gram of earlier rows computed elsewhere,
    is added to it."""

    def __init__(self, start: torch.Tensor | None = None):
        self.start = start
        self.upper: np.ndarray | None = None  # CPU: dsyrk's upper triangle
        self.full: torch.Tensor | None = None  # other devices

    def update(self, a: torch.Tensor) -> None:
        a = a.detach()
        if a.device.type != "cpu":
            a = a.to(torch.float64)
            if self.full is None:
                self.full = a.T @ a
            else:
                self.full.addmm_(a.T, a)
            return
        from scipy.linalg.blas import dsyrk

        rows = a.to(torch.float64).numpy().T  # (D, n), Fortran order: no copy
        if self.upper is None:
            self.upper = dsyrk(1.0, rows)
        else:
            self.upper = dsyrk(1.0, rows, beta=1.0, c=self.upper, overwrite_c=1)

    def gram(self) -> torch.Tensor:
        if self.full is not None:
            rows = self.full.clone()
        elif self.upper is not None:
            upper = np.triu(self.upper)
            rows = torch.from_numpy(upper + np.triu(upper, 1).T)
        elif self.start is not None:
            return self.start.clone()
        else:
            raise ValueError("no rows: call update() with at least one batch first")
        return rows if self.start is None else self.start + rows.to(self.start.device)
