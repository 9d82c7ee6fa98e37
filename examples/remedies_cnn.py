"""Remedies on a CNN: ReDo and Continual Backprop in a plain PyTorch loop, on the 8x8 digits.

A small CNN (Conv2d -> BatchNorm2d -> ReLU -> pool, Conv2d -> ReLU -> pool -> flatten ->
Linear -> ReLU -> Linear) trains on a sequence of tasks: the same images with the ten classes
renamed by a new random permutation at every task (label-permuted digits, after the
label-permuted streams of Elsayed & Mahmood 2024), a sequence that wears plasticity down.
Three runs from one initialisation and one data order:

- plain: the loop as it is;
- redo: ``redo_reset_pairs`` at every task start, scored on the task's training images
  (Sokar et al. 2023);
- cbp: ``ContinualBackpropPairs.step(optimizer)`` after every ``optimizer.step()``
  (Dohare et al. 2024).

The layer pairs are found from the ``nn.Sequential`` (``find_layer_pairs``); the dormant
fraction of each pair's units (tau 0.1) and the training accuracy are printed after every
task. Seconds on a CPU; no download (sklearn ships the digits)::

    python examples/remedies_cnn.py                       # 6 tasks of 2 epochs, Adam
    python examples/remedies_cnn.py --tasks 2 --epochs 1 --samples 300
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from plasticollapse import ContinualBackpropPairs, find_layer_pairs, redo_reset_pairs
from plasticollapse.metrics.plasticity import capture_activations, dormant_units

TAU = 0.1


def digits(samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's digits as (N, 1, 8, 8) images in [0, 1] and their labels."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:samples], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    return x, torch.tensor(y[:samples])


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 4x4
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 2x2
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def dormant_fractions(model: nn.Module, pairs, x: torch.Tensor) -> list[float]:
    """Fraction of tau-dormant units of each pair, read where the pair reads them."""
    acts = capture_activations(model, x, modules=[p.activation for p in pairs])
    units = [model.get_submodule(p.producer).weight.shape[0] for p in pairs]
    return [
        float(dormant_units(a.reshape(len(a), c, -1), TAU).double().mean())
        for a, c in zip(acts, units, strict=True)
    ]


def run(remedy: str, args, x: torch.Tensor, y: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = small_cnn()
    pairs = find_layer_pairs(model)
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    cbp = None
    if remedy == "cbp":
        cbp = ContinualBackpropPairs(
            model, pairs, replacement_rate=1e-3, decay_rate=0.99, maturity_threshold=50
        )
    data = torch.Generator().manual_seed(1)
    for task in range(args.tasks):
        labels = torch.randperm(10, generator=data)[y] if task else y
        if remedy == "redo" and task:
            counts = redo_reset_pairs(
                model,
                pairs,
                x,
                tau=TAU,
                generator=torch.Generator().manual_seed(task),
                optimizer=optimizer,
            )
            print(f"  {remedy} task {task}: recycled {counts} units per pair")
        model.train()
        for _ in range(args.epochs):
            for batch in torch.randperm(len(x), generator=data).split(32):
                optimizer.zero_grad()
                F.cross_entropy(model(x[batch]), labels[batch]).backward()
                optimizer.step()
                if cbp is not None:
                    cbp.step(optimizer)  # after the update; reads this step's activations
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x).argmax(1) == labels).float().mean())
        fractions = ", ".join(f"{f:.2f}" for f in dormant_fractions(model, pairs, x))
        print(f"{remedy} task {task}: train accuracy {accuracy:.3f}, dormant [{fractions}]")
    if cbp is not None:
        print(f"  cbp replaced {cbp.replaced.tolist()} units per pair in all")
        cbp.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per task")
    parser.add_argument("--samples", type=int, default=1000, help="training images")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = digits(args.samples)
    print(f"layer pairs: {find_layer_pairs(small_cnn())}")
    for remedy in ("plain", "redo", "cbp"):
        run(remedy, args, x, y)


if __name__ == "__main__":
    main()
