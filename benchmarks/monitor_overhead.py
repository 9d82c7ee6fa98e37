"""What the Monitor adds to a training epoch when it measures every epoch, same run.

The workload is the one a new user writes (issue 23): a small CNN (Conv2d, BatchNorm2d,
GELU, Dropout) trained on sklearn's 8x8 digits in a plain PyTorch loop, one SGD epoch over
the training split (DataLoader, batch size 32, shuffled). Each round times ``--epochs``
epochs without the monitor, then ``--epochs`` epochs each followed by ``monitor.step()``
(``every=1``: measuring the training and held-out splits, every activation module by name,
with drift and gradient norm), from the same weights. Rounds alternate the two so load
on a shared machine hits both alike; the ratio is of the medians over ``--rounds``, of the
wall time and of the process's CPU time (less moved by other processes on a loaded machine;
with ``--threads 1`` the two agree on an idle one).

Three ways of handing the monitor the data are timed: the training split as tensors
(``(x, y)``, cut into batches of 1024), as the training DataLoader itself (45 batches of 32,
joined into batches of 1024), and tensors with ``samples=256`` (the first 256 rows of each
split: a fixed probe set).

Beside them, the floor of any measurement of every sample: one eval-mode forward pass of
the model alone over both splits (batches of 1024 under ``torch.inference_mode``, no hook,
no metric), timed in the same rounds, as a share of the epoch. A training epoch does about
3 forward passes' work (forward, and a backward of about twice its multiply-adds) over the
1,437 training images; measuring passes once over 1,437 + 360, so by arithmetic alone
that pass is about 1,797 / (3 x 1,437) = 42 % of an epoch's multiply-adds, whatever the
metrics cost (small eval batches and large training ones would shift it; DataLoader and
optimizer overheads in the epoch lower it).

Example::

    python benchmarks/monitor_overhead.py                 # 5 rounds of 3 epochs
    python benchmarks/monitor_overhead.py --rounds 9 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from plasticollapse import Monitor


def digits_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.GELU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.GELU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.GELU(),
        nn.Dropout(0.25),
        nn.Linear(64, 10),
    )


def train_epoch(model: nn.Module, loader: DataLoader, optimizer) -> None:
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def timed_epochs(model, loader, epochs: int, monitor: Monitor | None) -> tuple[float, float]:
    """(wall, CPU) seconds per epoch (with ``monitor.step()`` after each, when given)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        train_epoch(model, loader, optimizer)
        if monitor is not None:
            monitor.step()
    return (time.perf_counter() - start) / epochs, (time.process_time() - cpu) / epochs


def forward_pass(model: nn.Module, splits, batch_size: int = 1024) -> tuple[float, float]:
    """(wall, CPU) seconds of the model's forward pass alone over every split's inputs."""
    was_training = model.training
    model.eval()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for x, _ in splits:
            for first in range(0, len(x), batch_size):
                model(x[first : first + batch_size])
    model.train(was_training)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(y)
    train, test = (x[:1437], y[:1437]), (x[1437:], y[1437:])
    loader = DataLoader(TensorDataset(*train), batch_size=32, shuffle=True)
    torch.manual_seed(0)
    initial = digits_cnn()
    full = {"train": train, "test": test}
    variants = {  # (data, samples)
        "train as tensors": (full, None),
        "train as the DataLoader": ({"train": loader, "test": test}, None),
        "tensors, samples=256 per split": (full, 256),
    }
    plain: list[tuple[float, float]] = []
    monitored: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    spent: dict[str, list[float]] = {name: [] for name in variants}
    forward: list[tuple[float, float]] = []
    timed_epochs(copy.deepcopy(initial), loader, 1, None)  # warm-up: allocator, first calls
    for _ in range(args.rounds):
        plain.append(timed_epochs(copy.deepcopy(initial), loader, args.epochs, None))
        forward.append(forward_pass(initial, (train, test)))
        for name, (data, samples) in variants.items():
            model = copy.deepcopy(initial)
            monitor = Monitor(model, num_classes=10, data=data, every=1, samples=samples)
            monitored[name].append(timed_epochs(model, loader, args.epochs, monitor))
            spent[name].append(monitor.seconds / args.epochs)
    base = [statistics.median(times) for times in zip(*plain, strict=True)]
    print(f"torch threads {torch.get_num_threads()}, {args.rounds} rounds x {args.epochs} epochs")
    print(f"epoch without the monitor: {base[0] * 1e3:.1f} ms wall, {base[1] * 1e3:.1f} ms CPU")
    floor = [statistics.median(times) for times in zip(*forward, strict=True)]
    print(
        f"the forward pass alone over both splits: {floor[0] * 1e3:.1f} ms wall "
        f"({floor[0] / base[0]:.3f} of the epoch), {floor[1] * 1e3:.1f} ms CPU "
        f"({floor[1] / base[1]:.3f}): the least any measurement of every sample adds"
    )
    for name in variants:
        wall, cpu = (statistics.median(times) for times in zip(*monitored[name], strict=True))
        print(
            f"epoch + monitor.step(), {name}: {wall * 1e3:.1f} ms, "
            f"ratio {wall / base[0]:.3f} wall, {cpu / base[1]:.3f} CPU (target <= 1.10); "
            f"measuring itself {statistics.median(spent[name]) * 1e3:.1f} ms per epoch"
        )


if __name__ == "__main__":
    main()
