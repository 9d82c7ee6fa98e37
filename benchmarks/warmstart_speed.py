"""Speed of the warm-start loop against a plain DataLoader loop, same model, same run.

Two workloads, each timed for this package's loop and for a plain PyTorch baseline:

- training: SGD epochs over the images. Ours (:func:`plasticollapse.studies.warmstart.training.
  train_epoch`): the data is a tensor on the device, each epoch indexes it through one
  permutation, counts stay on the device; on CUDA channels_last and bf16 autocast
  (``--amp``). Baseline: ``DataLoader(TensorDataset(x, y), batch_size, shuffle=True)`` over
  CPU tensors, each batch moved to the device, ``loss.item()`` per batch for logging (as the
  authors' loop does), float32.
- measuring: one eval-mode pass over the images that yields the collapse metrics and the
  accuracy. Ours: :func:`plasticollapse.metrics.measure.measure_model` (one pass, streaming
  accumulator). Baseline: a DataLoader eval loop collecting features and logits, then
  :func:`plasticollapse.metrics.collapse.collapse_metrics` on the concatenated features.

Both start from the same initial weights. Images/s are over the timed epochs, after one
untimed warm-up epoch each (cuDNN autotuning, allocator).

Example::

    python benchmarks/warmstart_speed.py                    # CPU: width 16, 512 images
    python benchmarks/warmstart_speed.py --width 64 --samples 25000 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from plasticollapse.metrics.collapse import collapse_metrics
from plasticollapse.metrics.measure import measure_model
from plasticollapse.models import ResNet18
from plasticollapse.runs.runtime import resolve_device
from plasticollapse.studies.warmstart import config as ws_config
from plasticollapse.studies.warmstart import training as ws_training


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int) -> float:
    """Seconds per call of ``fn``, after one untimed call."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=16, help="ResNet-18 stem width (64: paper)")
    parser.add_argument("--samples", type=int, default=512, help="synthetic 32x32 images")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per loop")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="baseline DataLoader workers")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    x_cpu = torch.randn(args.samples, 3, 32, 32)
    y_cpu = torch.randint(0, 10, (args.samples,))
    initial = ResNet18(10, in_channels=3, width=args.width, maxpool=True)
    config = ws_config.Config(
        batch_size=args.batch_size, lr=1e-3, amp=args.amp, device=str(device), progress=False
    )
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    print(
        f"device {device} ({torch.cuda.get_device_name(0) if cuda else 'cpu'}), ResNet-18 "
        f"width {args.width}, {args.samples} images 3x32x32, batch {args.batch_size}, "
        f"amp {args.amp and cuda}, threads {torch.get_num_threads()}"
    )

    # --- ours: tensors on the device, permutation indexing
    ours = copy.deepcopy(initial).to(device, memory_format=memory_format)
    x = x_cpu.to(device).contiguous(memory_format=memory_format)
    y = y_cpu.to(device)
    optimizer = torch.optim.SGD(ours.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(0)
    ours_train = timed(
        lambda: ws_training.train_epoch(ours, optimizer, x, y, generator, config),
        device,
        args.epochs,
    )
    ours_measure = timed(lambda: measure_model(ours, x, y, 10), device, args.epochs)

    # --- baseline: DataLoader over CPU tensors, float32, per-batch .item()
    base = copy.deepcopy(initial).to(device)
    base_optimizer = torch.optim.SGD(base.parameters(), lr=config.lr)
    dataset = TensorDataset(x_cpu, y_cpu)
    train_loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers
    )
    eval_loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)

    def base_epoch() -> None:
        base.train()
        for xb, yb in train_loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(base(xb), yb)
            base_optimizer.zero_grad()
            loss.backward()
            base_optimizer.step()
            loss.item()

    @torch.no_grad()
    def base_measure() -> None:
        base.eval()
        features, logits, labels = [], [], []
        for xb, yb in eval_loader:
            h = base.features(xb.to(device))
            features.append(h)
            logits.append(base.classifier(h))
            labels.append(yb.to(device))
        z, t = torch.cat(logits), torch.cat(labels)
        collapse_metrics(torch.cat(features), t, 10, weight=base.classifier.weight, logits=z)
        (z.argmax(1) == t).float().mean().item()

    base_train = timed(base_epoch, device, args.epochs)
    base_measure_s = timed(base_measure, device, args.epochs)

    n = args.samples
    print(f"{'workload':<10} {'ours img/s':>12} {'DataLoader img/s':>17} {'speed-up':>9}")
    for name, ours_s, base_s in (
        ("training", ours_train, base_train),
        ("measuring", ours_measure, base_measure_s),
    ):
        print(f"{name:<10} {n / ours_s:>12.0f} {n / base_s:>17.0f} {base_s / ours_s:>8.2f}x")


if __name__ == "__main__":
    main()
