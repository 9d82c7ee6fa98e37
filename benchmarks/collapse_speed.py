"""How fast are all the collapse metrics? 60,000 x 512 float32 features, 10 classes, a classifier.

Prints the time of :func:`plasticollapse.metrics.collapse.collapse_metrics` (every key, NC4 from the
classifier) and two ratios:

* against one float64 matmul H^T H of the same features (the floor for any exact float64
  Sigma_W; the target is at most 2x);
* against a per-sample loop in the style of older NC code (Papyan et al.'s notebook: a first
  pass for the class means, a second pass adding one outer product (h - mu_y)(h - mu_y)^T
  per sample, then the pseudo-inverse). The loop is timed on a subset and extrapolated
  linearly to all samples, which is exact for its O(N D^2) work.

Threads: one run times every ``--threads`` setting (default: torch's default, then 1): at
each, ``torch.set_num_threads(t)`` and the BLAS pools on t threads, as a user's script
would have them; both sides of each ratio run at that setting. Besides the library's
``collapse_metrics`` (which streams on one thread, see plasticollapse.metrics.threads), it
times the same streaming at the caller's threads (the function undecorated, as it was
before), to show what the switch saves. Times are the best of ``--repeats`` interleaved
runs, in wall and in process CPU seconds (on a machine shared with other jobs, CPU time is
the steadier figure; wall is what a user waits).

    .venv/bin/python benchmarks/collapse_speed.py [--threads default,1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from plasticollapse.metrics.collapse import collapse_metrics


def best_time(fn, repeats: int) -> float:
    return best_times(fn, repeats)[0]


def best_times(fn, repeats: int) -> tuple[float, float]:
    """Best wall and best process-CPU seconds of ``fn()`` over ``repeats`` runs."""
    wall = cpu = math.inf
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def set_threads(n: int) -> None:
    """torch's pool and every BLAS pool on ``n`` threads (what a script's setting gives)."""
    from plasticollapse.metrics.threads import blas_pools

    torch.set_num_threads(n)
    for pool in blas_pools():
        pool.set_num_threads(n)


def timed_at(threads: int, features, labels, weight, bias, classes: int, repeats: int) -> dict:
    """collapse_metrics, the same streaming at the caller's threads, and one float64 H^T H,
    interleaved (so a busy neighbour slows all alike), at ``threads`` threads."""
    set_threads(threads)
    h64 = features.to(torch.float64)
    cases = {
        "ours": lambda: collapse_metrics(features, labels, classes, weight=weight, bias=bias),
        "callers_threads": lambda: collapse_metrics.__wrapped__(
            features, labels, classes, weight=weight, bias=bias
        ),
        "gram": lambda: h64.T @ h64,
    }
    best = {k: (math.inf, math.inf) for k in cases}
    for _ in range(repeats):
        for key, fn in cases.items():
            wall, cpu = best_times(fn, 1)
            best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
    return best


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
    parser.add_argument("--threads", default="default,1", help="comma list; default: torch's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-samples", type=int, default=2_000)
    args = parser.parse_args()
    default = torch.get_num_threads()
    settings = [default if t == "default" else int(t) for t in args.threads.split(",")]

    features, labels, weight, bias = make_features(args.n, args.dim, args.classes)
    print(
        f"features {args.n} x {args.dim} float32, {args.classes} classes, classifier given; "
        f"torch {torch.__version__} (default {default} threads), {os.cpu_count()} cores, "
        f"best of {args.repeats}; seconds wall | process CPU"
    )
    for threads in settings:
        best = timed_at(threads, features, labels, weight, bias, args.classes, args.repeats)
        (ours, ours_cpu), (gram, gram_cpu) = best["ours"], best["gram"]
        old, old_cpu = best["callers_threads"]
        label = f"{threads} thread(s)" + (" (torch's default)" if threads == default else "")
        print(f"at {label}:")
        print(f"  all collapse metrics:                 {ours:.3f} | {ours_cpu:.3f}")
        print(f"  streamed at the caller's threads:     {old:.3f} | {old_cpu:.3f}")
        print(f"  one float64 matmul H^T H:             {gram:.3f} | {gram_cpu:.3f}")
        verdict = "met" if ours / gram <= 2 else "NOT met"
        print(
            f"  ratio ours / H^T H: {ours / gram:.2f}x wall, {ours_cpu / gram_cpu:.2f}x CPU "
            f"(target <= 2x: {verdict}); the caller's threads: {old / gram:.2f}x wall"
        )
    set_threads(1)

    subset = slice(0, args.loop_samples)
    t_loop_subset = best_time(
        lambda: per_sample_loop_nc1(features[subset], labels[subset], args.classes), 1
    )
    t_loop = t_loop_subset * args.n / args.loop_samples
    # sanity: the loop and the fast path agree on the subset
    loop_nc1 = per_sample_loop_nc1(features[subset], labels[subset], args.classes)
    fast_nc1 = collapse_metrics(features[subset], labels[subset], args.classes)["nc1"]
    assert np.isclose(loop_nc1, fast_nc1, rtol=1e-8), (loop_nc1, fast_nc1)
    metrics = collapse_metrics(features, labels, args.classes, weight=weight, bias=bias)
    print(
        f"per-sample loop (old NC code style), 1 thread: {t_loop:.1f} s, extrapolated from "
        f"{args.loop_samples} samples ({t_loop_subset:.2f} s); {t_loop / ours:.0f}x ours "
        f"at {settings[-1]} thread(s)"
    )
    print(f"nc1 = {metrics['nc1']:.6g}, nc4_agreement = {metrics['nc4_agreement']:.4f}")


if __name__ == "__main__":
    main()
