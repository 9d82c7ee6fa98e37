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

With ``--threads 1``, the same three again with ``background=True``: the monitor copies the
model (and reads a DataLoader) in the training thread and measures the copy on a worker
thread while the next epoch trains, on the machine's second core. Their wall time is
taken two ways: until the last ``step()`` returns (the steady state: each measurement
overlaps the epoch after it; the last one overlaps nothing that is timed) and until
``monitor.wait()`` returns (the last measurement's remainder in the figure too: with few
epochs, that overstates the steady state). Their CPU time still includes the measuring,
done by the same process on the other core: in the background mode the CPU ratio is what
the measuring costs in compute, the wall ratio what it costs the loop (on a machine with a
free core; on one whose cores are all busy the worker takes its time from the loop, and
the wall ratio is about the CPU one). The training thread's own CPU time
(``time.thread_time``) is printed beside them: what the loop would pay with a core free,
less any wait for the GIL or for the previous measurement. The snapshot itself
is timed as well, three ways: ``copy.deepcopy`` of the model, ``load_state_dict`` into a
second instance, and the monitor's own (``ModelSnapshot.take``: ``copy_`` into a kept copy).

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
from plasticollapse.metrics.snapshot import ModelSnapshot


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


def timed_epochs(model, loader, epochs: int, monitor: Monitor | None) -> tuple[float, ...]:
    """(wall, process CPU, this thread's CPU) seconds per epoch (with ``monitor.step()``
    after each, when given), then (wall, process CPU) per epoch until ``monitor.wait()``
    returns (the same without a monitor or in the synchronous mode: nothing to wait for)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    start, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
    for _ in range(epochs):
        train_epoch(model, loader, optimizer)
        if monitor is not None:
            monitor.step()
    stepped = time.perf_counter() - start, time.process_time() - cpu, time.thread_time() - own
    if monitor is not None:
        monitor.close()
    flushed = time.perf_counter() - start, time.process_time() - cpu
    return tuple(seconds / epochs for seconds in stepped + flushed)


def snapshot_seconds(model: nn.Module, repeats: int = 50) -> dict[str, float]:
    """Median seconds of one copy of ``model``'s state, each of three ways."""
    twin, kept = copy.deepcopy(model), ModelSnapshot(model)
    kept.take()  # its one deep copy, made at the first measurement
    ways = {
        "copy.deepcopy(model)": lambda: copy.deepcopy(model),
        "twin.load_state_dict(model.state_dict())": lambda: twin.load_state_dict(
            model.state_dict()
        ),
        "ModelSnapshot.take() (copy_ into a kept copy)": kept.take,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):  # interleaved: load moves all three alike
        for name, way in ways.items():
            start = time.thread_time()
            way()
            times[name].append(time.thread_time() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


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
    variants = {  # (data, samples, background)
        "train as tensors": (full, None, False),
        "train as the DataLoader": ({"train": loader, "test": test}, None, False),
        "tensors, samples=256 per split": (full, 256, False),
    }
    if torch.get_num_threads() == 1:  # the background mode needs it
        for name, (data, samples, _) in list(variants.items()):
            variants[f"background, {name}"] = (data, samples, True)
    plain: list[tuple[float, ...]] = []
    monitored: dict[str, list[tuple[float, ...]]] = {name: [] for name in variants}
    spent: dict[str, list[float]] = {name: [] for name in variants}
    waits: dict[str, int] = {name: 0 for name in variants}
    blocked: dict[str, list[float]] = {name: [] for name in variants}
    forward: list[tuple[float, float]] = []
    timed_epochs(copy.deepcopy(initial), loader, 1, None)  # warm-up: allocator, first calls
    for _ in range(args.rounds):
        plain.append(timed_epochs(copy.deepcopy(initial), loader, args.epochs, None))
        forward.append(forward_pass(initial, (train, test)))
        for name, (data, samples, background) in variants.items():
            model = copy.deepcopy(initial)
            monitor = Monitor(model, 10, data=data, every=1, samples=samples, background=background)
            monitored[name].append(timed_epochs(model, loader, args.epochs, monitor))
            spent[name].append(monitor.seconds / args.epochs)
            waits[name] += monitor.waits
            blocked[name].append(monitor.blocked_seconds / args.epochs)
    base = [statistics.median(times) for times in zip(*plain, strict=True)][:3]
    print(f"torch threads {torch.get_num_threads()}, {args.rounds} rounds x {args.epochs} epochs")
    print(f"epoch without the monitor: {base[0] * 1e3:.1f} ms wall, {base[1] * 1e3:.1f} ms CPU")
    floor = [statistics.median(times) for times in zip(*forward, strict=True)]
    print(
        f"the forward pass alone over both splits: {floor[0] * 1e3:.1f} ms wall "
        f"({floor[0] / base[0]:.3f} of the epoch), {floor[1] * 1e3:.1f} ms CPU "
        f"({floor[1] / base[1]:.3f}): the least any measurement of every sample adds"
    )
    for name, (_, _, background) in variants.items():
        medians = [statistics.median(times) for times in zip(*monitored[name], strict=True)]
        wall, cpu, own, flushed_wall, flushed_cpu = medians
        flushed = (
            f" (training thread's CPU {own / base[2]:.3f}; until wait() returns: "
            f"{flushed_wall / base[0]:.3f} wall, {flushed_cpu / base[1]:.3f} CPU; "
            f"{waits[name]} waits in {args.rounds * args.epochs} steps; step() itself "
            f"{statistics.median(blocked[name]) * 1e3:.1f} ms)"
            if background
            else ""
        )
        print(
            f"epoch + monitor.step(), {name}: {wall * 1e3:.1f} ms, "
            f"ratio {wall / base[0]:.3f} wall, {cpu / base[1]:.3f} CPU (target <= 1.10)"
            f"{flushed}; measuring itself {statistics.median(spent[name]) * 1e3:.1f} ms "
            "per epoch"
        )
    if torch.get_num_threads() != 1:
        print("background mode not timed: it needs --threads 1")
    for way, seconds in snapshot_seconds(initial).items():
        print(f"snapshot of the model, {way}: {seconds * 1e6:.0f} us (thread CPU)")


if __name__ == "__main__":
    main()
