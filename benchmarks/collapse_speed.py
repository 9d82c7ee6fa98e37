"""How fast are all the collapse metrics? 60,000 x 512 float32 features, 10 classes, a classifier.

Prints the time of :func:`plasticollapse.metrics.collapse.collapse_metrics` (every key, NC4 from the
classifier) and two ratios:

* against one float64 matmul H^T H of the same features (the floor for any exact float64
  Sigma_W; the target is at most 2x);
* against a per-sample loop in the style of older NC code (Papyan et al.'s notebook: a first
  pass for the class means, a second pass adding one outer product (h - mu_y)(h - mu_y)^T
  per sample, then the pseudo-inverse). The loop is timed on a subset and extrapolated
  linearly to all samples, which is exact for its O(N D^2) work.

Threads: ``torch.set_num_threads(--threads)`` (default 1, so the numbers are reproducible on
a shared machine; both sides of each ratio use the same setting). Times are the best of
``--repeats`` interleaved runs.

    .venv/bin/python benchmarks/collapse_speed.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from plasticollapse.metrics.collapse import collapse_metrics


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_features(n: int, dim: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centres = 3 * torch.randn(classes, dim, generator=g)
    features = (centres[labels] + torch.randn(n, dim, generator=g)).to(torch.float32)
    weight = torch.randn(classes, dim, generator=g)
    bias = torch.randn(classes, generator=g)
    return features, labels, weight, bias


def per_sample_loop_nc1(features: torch.Tensor, labels: torch.Tensor, classes: int) -> float:
    """Older NC code: per-sample outer products accumulated in Python (float64)."""
    h = features.to(torch.float64)
    dim = h.shape[1]
    means = torch.zeros(classes, dim, dtype=torch.float64)
    counts = torch.zeros(classes, dtype=torch.float64)
    for x, y in zip(h, labels.tolist(), strict=True):
        means[y] += x
        counts[y] += 1
    means /= counts[:, None]
    within = torch.zeros(dim, dim, dtype=torch.float64)
    for x, y in zip(h, labels.tolist(), strict=True):
        d = x - means[y]
        within += torch.outer(d, d)
    within /= len(h)
    centred = means - h.mean(0)
    between = centred.T @ centred / classes
    evals, evecs = torch.linalg.eigh(between)
    evals, evecs = evals[-(classes - 1) :], evecs[:, -(classes - 1) :]
    pinv = evecs @ torch.diag(1 / evals) @ evecs.T
    return float(torch.trace(within @ pinv) / classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-samples", type=int, default=2_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    features, labels, weight, bias = make_features(args.n, args.dim, args.classes)
    print(
        f"features {args.n} x {args.dim} float32, {args.classes} classes, classifier given; "
        f"torch {torch.__version__}, torch.set_num_threads({args.threads}), "
        f"best of {args.repeats}"
    )

    metrics = {}

    def ours():
        metrics.update(collapse_metrics(features, labels, args.classes, weight=weight, bias=bias))

    h64 = features.to(torch.float64)
    # interleaved, so a busy neighbour on a shared machine slows both sides alike
    t_ours, t_gram = math.inf, math.inf
    for _ in range(args.repeats):
        t_ours = min(t_ours, best_time(ours, 1))
        t_gram = min(t_gram, best_time(lambda: h64.T @ h64, 1))

    subset = slice(0, args.loop_samples)
    t_loop_subset = best_time(
        lambda: per_sample_loop_nc1(features[subset], labels[subset], args.classes), 1
    )
    t_loop = t_loop_subset * args.n / args.loop_samples
    # sanity: the loop and the fast path agree on the subset
    loop_nc1 = per_sample_loop_nc1(features[subset], labels[subset], args.classes)
    fast_nc1 = collapse_metrics(features[subset], labels[subset], args.classes)["nc1"]
    assert np.isclose(loop_nc1, fast_nc1, rtol=1e-8), (loop_nc1, fast_nc1)

    print(f"all collapse metrics ({len(metrics)} keys): {t_ours:.3f} s")
    print(f"one float64 matmul H^T H:            {t_gram:.3f} s")
    print(f"  ratio ours / H^T H:                {t_ours / t_gram:.2f}x (target <= 2x)")
    print(
        f"per-sample loop (old NC code style):  {t_loop:.1f} s, extrapolated from "
        f"{args.loop_samples} samples ({t_loop_subset:.2f} s)"
    )
    print(f"  speed-up over the loop:            {t_loop / t_ours:.0f}x")
    print(f"nc1 = {metrics['nc1']:.6g}, nc4_agreement = {metrics['nc4_agreement']:.4f}")


if __name__ == "__main__":
    main()
