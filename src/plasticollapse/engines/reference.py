"""The reference engine: online training with PyTorch autograd and ``torch.optim.SGD``.

This is the authors' loop (forward, cross-entropy, backward, SGD step per mini-batch) and
works for any model, batch size and device. With batch size 1 it is dominated by per-step
overhead; :mod:`plasticollapse.engines.fast` is the fused alternative for ReLU MLPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plasticollapse.engines.stats import OnlineStats


class ReferenceEngine:
    """Prequential SGD: every mini-batch is scored *before* the update it causes."""

    name = "reference"

    def __init__(self, model: nn.Module, lr: float, batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def train(self, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor) -> OnlineStats:
        """One pass over ``x[order]``; returns online accuracy and mean loss over the pass."""
        self.model.train()
        device = next(self.model.parameters()).device
        correct = torch.zeros((), dtype=torch.long, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
            logits = self.model(xb)
            loss = F.cross_entropy(logits, yb)
            correct += (logits.argmax(1) == yb).sum()
            loss_sum += loss.detach().double() * len(idx)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return OnlineStats(correct=int(correct), count=len(order), loss_sum=float(loss_sum))
