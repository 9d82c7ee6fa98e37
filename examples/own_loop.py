"""Your own training loop, measured by plasticollapse: a small CNN on the 8x8 digits.

A plain PyTorch loop (Conv2d, BatchNorm2d, GELU, Dropout; a DataLoader; SGD) with a
``plasticollapse.Monitor`` that measures neural collapse and plasticity on the training and
held-out splits after every epoch, per named layer, into a CSV file and the terminal.
Halfway, the labels of the training set are shuffled (a new task for the same network), the
usual way to see plasticity go. Runs in seconds on a CPU; no download (sklearn ships the
digits)::

    python examples/own_loop.py                      # 6 epochs, rows into own_loop.csv
    python examples/own_loop.py --epochs 2 --csv /tmp/rows.csv
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from plasticollapse import Monitor, plasticity_score


def digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train, test) splits of sklearn's digits as (N, 1, 8, 8) images in [0, 1]."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(y)
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.GELU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 64),
        nn.GELU(),
        nn.Dropout(0.25),
        nn.Linear(64, 10),
    )


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> None:
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def show(row: dict, step: int) -> None:
    """A logger is any function of (row, step)."""
    keys = ("train_accuracy", "test_accuracy", "train_nc1", "train_dormant_fraction_2", "drift")
    print(f"epoch {step}: " + ", ".join(f"{k} {row[k]:.3f}" for k in keys if k in row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--csv", default="own_loop.csv", help="where the rows go")
    args = parser.parse_args()
    torch.manual_seed(0)
    (x, y), test = digits()
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train = TensorDataset(x, y)
    monitor = Monitor(
        model,
        num_classes=10,
        data={"train": DataLoader(train, batch_size=256), "test": test},
        loggers=[show, args.csv],  # a function and a CSV file (TensorBoardLogger, WandbLogger too)
    )
    for epoch in range(args.epochs):
        if epoch == args.epochs // 2:  # a new task: the same images, shuffled labels
            train.tensors = (x, y[torch.randperm(len(y))])
        train_epoch(model, DataLoader(train, batch_size=32, shuffle=True), optimizer)
        monitor.step()  # measures every epoch (every=1), logs the row
    probe = plasticity_score(model, x[:256], y[:256], steps=20, lr=0.05)
    print(f"plasticity score after training: {probe['plasticity_score']:.3f}")
    print(f"rows in {args.csv}; measuring took {monitor.seconds:.2f} s in all")
    monitor.close()


if __name__ == "__main__":
    main()
