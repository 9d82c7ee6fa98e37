"""Mini-batch training speed: the compiled mini-batch engine vs the reference engine, and
the projected cost of ``full/matrix``.

Measures in one run, one thread (``torch.set_num_threads(1)``), on Fashion-MNIST (the
synthetic MNIST-like stand-in when it is not found; Fashion-MNIST is ~50% nonzero, the
slower case for the sparse first layer; the studies feed the pixels in [0, 1] unnormalised,
so the zeros reach the engine):

1. the roof: one-thread SGEMM GFLOP/s of ``torch.mm`` at the step's shapes (B x 784 times
   784 x 100 and the weight gradient's 100 x B times B x 784);
2. random_labels' full preset (``presets/full/random_labels.toml``: the MLP 784-100-100-10,
   PyTorch init, batch 16, 1,200 images) and class_incremental's (784-100-100-100-10 with
   the head masked to the present classes, batch 90; a task of 12,000 images of 4
   classes): samples/s of the reference engine (autograd + ``torch.optim.SGD``) and of the
   compiled engine, plain and with each remedy whose per-step work differs (weight decay,
   L2 Init, the fixed ETF head, Continual Backprop), best of ``--repeats`` in thread CPU
   time (wall time beside it), and their ratio;
3. the arithmetic (:func:`flops_per_sample`): each engine's GFLOP/s (both compute the
   dense products: the compiled engine's are SGEMMs too) and the ceiling of the ratio if
   the compiled engine ran at the SGEMM roof, ``ceiling = roof / flops / rate_reference``,
   on the dense FLOPs and on those over the first layer's nonzero inputs only;
   and the tighter bound of the step's own SGEMMs: the step's products alone, at its
   exact shapes and through the engine's own :func:`~plasticollapse.engines.blas.gemm`
   (forward, input gradients, weight gradients folded into the weights), timed in one
   compiled loop: the rate the engine would reach if its elementwise work (gathering the
   batch, biases, ReLUs, softmax) cost nothing, and its ratio to the reference;
4. the projected CPU-hours of these two studies in ``full/matrix`` (9 settings x 5 seeds)
   from the engine's training throughput alone::

       hours(study) = seeds * sum_settings samples_per_run(study) / rate(setting) / 3600
       samples_per_run(random_labels)     = tasks * epochs_per_task * subset_size
       samples_per_run(class_incremental) = epochs_per_task * sum_t classes_at(t) * 6,000
                                            * (2 with retrained_baseline: the baseline
                                               trains a fresh network on every task)

   ``rate(setting)``: the compiled engine's measured rate for its remedy (plain's for
   Shrink & Perturb, ReDo and the resets, which act at task boundaries only). The whole
   matrix, every study with its measuring, probes and start-up, end to end:
   ``benchmarks/matrix_cost.py``.

Timings on a shared machine are inflated and noisy: ``uptime`` is printed with them.

Usage: ``python benchmarks/minibatch_speed.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import tomllib

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per process; set before torch/numba load

import numpy as np  # noqa: E402
import torch  # noqa: E402
from numba import njit  # noqa: E402
from numba.typed import List  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from online_speed import fashion_mnist  # noqa: E402
from synthetic import mnist_like  # noqa: E402

from plasticollapse.engines.blas import gemm, gemm_work  # noqa: E402
from plasticollapse.engines.minibatch import MiniBatchEngine  # noqa: E402
from plasticollapse.engines.reference import ReferenceEngine  # noqa: E402
from plasticollapse.remedies import RemedyContext, build_remedies  # noqa: E402
from plasticollapse.studies.streams.model import MaskedLinear  # noqa: E402

#: The matrix's settings (presets/full/matrix.toml).
SETTINGS = ("plain", "shrink_perturb", "l2_init", "redo", "weight_decay", "cbp",
            "reset_head", "reset_all", "etf_head")  # fmt: skip
AS_PLAIN = ("plain", "shrink_perturb", "redo", "reset_head", "reset_all")
COMPILED = ("plain", "weight_decay", "l2_init", "etf_head", "cbp")


def flops_per_sample(widths, batch: int, density: float = 1.0) -> float:
    """Floating-point operations per sample of one SGD step on an MLP of ``widths`` (n_in,
    hidden..., n_cls), a multiply-add counted as 2::

        forward          sum_l 2 n_{l-1} n_l
        input gradients  sum_{l >= 2} 2 n_{l-1} n_l     (the first layer needs none)
        weight gradients sum_l 2 n_{l-1} n_l
        update           2 P / B                         (P parameters, once per batch)

    with the first layer's forward and weight gradient scaled by ``density``, the fraction
    of nonzero inputs, for an engine that visits only those (the softmax, ReLUs and
    biases' sums are left out: < 1%)."""
    products = [a * b for a, b in zip(widths[:-1], widths[1:], strict=False)]
    first, deeper = products[0], sum(products[1:])
    params = sum(products) + sum(widths[1:])
    return 4 * density * first + 6 * deeper + 2 * params / batch


def sgemm_roof(batch: int, repeats: int = 20) -> dict[str, float]:
    """One-thread SGEMM GFLOP/s of ``torch.mm`` at a step's largest shapes (best of
    ``repeats`` x 200 products, thread CPU time)."""
    shapes = {
        f"({batch}x784)(784x100)": (torch.rand(batch, 784), torch.rand(784, 100)),
        f"(100x{batch})({batch}x784)": (torch.rand(100, batch), torch.rand(batch, 784)),
        f"({batch}x100)(100x100)": (torch.rand(batch, 100), torch.rand(100, 100)),
    }
    out = {}
    for name, (a, b) in shapes.items():
        flops = 2 * a.shape[0] * a.shape[1] * b.shape[1] * 200
        best = float("inf")
        for _ in range(repeats):
            c0 = time.thread_time()
            for _ in range(200):
                torch.mm(a, b)
            best = min(best, time.thread_time() - c0)
        out[name] = flops / best / 1e9
    return out


@njit(cache=False, nogil=True)
def _step_products(n, xb, w1t, ws, acts, deltas):
    """``n`` times the SGEMMs of one plain step (``ws[0]`` unused: W_1 is ``w1t``)."""
    work = gemm_work()
    one, zero, nlr = np.float32(1.0), np.float32(0.0), np.float32(-1e-12)
    last = len(acts) - 1
    for _ in range(n):
        gemm(xb, False, w1t, False, acts[0], one, zero, work)
        for l in range(1, last + 1):
            gemm(acts[l - 1], False, ws[l], True, acts[l], one, zero, work)
        for l in range(last, 0, -1):
            gemm(deltas[l], False, ws[l], False, deltas[l - 1], one, zero, work)
        for l in range(last, 0, -1):
            gemm(deltas[l], True, acts[l - 1], False, ws[l], nlr, one, work)
        gemm(xb, True, deltas[0], False, w1t, nlr, one, work)


def products_rate(widths, batch: int, repeats: int = 5, steps: int = 2000) -> float:
    """Samples/s of the step's SGEMMs alone (:func:`_step_products`; thread CPU time, best
    of ``repeats``) for an MLP of ``widths`` at ``batch``."""
    rng = np.random.default_rng(0)

    def rand(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    w1t = rand(widths[0], widths[1])
    ws, acts, deltas = List(), List(), List()
    ws.append(w1t)
    for l in range(1, len(widths) - 1):
        ws.append(rand(widths[l + 1], widths[l]))
    for width in widths[1:]:
        acts.append(rand(batch, width))
        deltas.append(rand(batch, width))
    xb = rand(batch, widths[0])
    _step_products(2, xb, w1t, ws, acts, deltas)  # compile
    best = float("inf")
    for _ in range(repeats):
        c0 = time.thread_time()
        _step_products(steps, xb, w1t, ws, acts, deltas)
        best = min(best, time.thread_time() - c0)
    return steps * batch / best


def preset(name: str) -> dict:
    path = resources.files("plasticollapse") / "presets" / "full" / f"{name}.toml"
    return tomllib.loads(path.read_text())


def model_of(cfg: dict, masked_classes=None):
    from plasticollapse.models import MLP

    torch.manual_seed(0)
    model = MLP(784, tuple(cfg["hidden"]), 10)
    if masked_classes is not None:
        head = MaskedLinear(model.classifier.in_features, 10)
        head.load_state_dict(model.classifier.state_dict(), strict=False)
        model.classifier = head
        head.set_classes(torch.as_tensor(masked_classes))
    if cfg.get("init") == "pytorch":
        for linear in model.linears:
            linear.reset_parameters()
    return model


def remedies_of(study: str, name: str, model, cfg: dict) -> list:
    """The remedy ``name`` as the study's config builds it from its full preset ``cfg``
    (the remedies' parameters the preset sets, as Continual Backprop's in class_incremental;
    the config's defaults for the rest), bound to ``model``."""
    from plasticollapse.remedies.fields import REMEDY_FIELDS
    from plasticollapse.studies.class_incremental.config import Config as ClassIncremental
    from plasticollapse.studies.random_labels.config import Config as RandomLabels

    fields = {k: v for k, v in cfg.items() if k in REMEDY_FIELDS and k != "remedies"}
    config = (RandomLabels if study == "random_labels" else ClassIncremental)(
        remedies=(name,), **fields
    )
    remedies = build_remedies(config)
    for remedy in remedies:
        remedy.bind(model, RemedyContext(seed=0, num_classes=10))
    return remedies


def rate(make, x, y, order, repeats: int) -> tuple[float, float]:
    """Best samples/s over ``repeats`` passes (thread CPU time, wall time) of a fresh
    engine per measurement, after one warm-up pass."""
    engine = make()
    engine.train(x, y, order)
    cpu = wall = float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        engine.train(x, y, order)
        cpu = min(cpu, time.thread_time() - c0)
        wall = min(wall, time.perf_counter() - w0)
    return len(order) / cpu, len(order) / wall


def measure(study, cfg, x, y, order, masked, repeats) -> dict[str, tuple[float, float]]:
    lr, batch = cfg["lr"], cfg["batch_size"]
    classes = torch.unique(y).tolist() if masked else None
    out = {}
    for engine, names in (
        ("reference", ("plain", "cbp")),
        ("compiled", COMPILED),
    ):
        for name in names:

            def make(name=name, engine=engine):
                model = model_of(cfg, classes)
                rem = remedies_of(study, name, model, cfg)
                if engine == "reference":
                    return ReferenceEngine(model, lr, batch, rem)
                return MiniBatchEngine(model, lr, batch, rem)

            reps = max(1, repeats // 2) if engine == "reference" else repeats
            out[(engine, name)] = rate(make, x, y, order, reps)
            cpu, wall = out[(engine, name)]
            print(
                f"  {study:17s} {engine:9s} {name:12s} {cpu:9.0f} samples/s CPU ({wall:.0f} wall)"
            )
    ratio = out[("compiled", "plain")][0] / out[("reference", "plain")][0]
    print(f"  {study}: compiled / reference (plain, CPU time) = {ratio:.1f}x")
    ratio = out[("compiled", "cbp")][0] / out[("reference", "cbp")][0]
    print(f"  {study}: compiled / reference (cbp, CPU time) = {ratio:.1f}x")
    return out


def arithmetic(study, cfg, rates, density: float, roof: float) -> None:
    """Each engine's achieved GFLOP/s (plain; both compute the dense products) and the
    ratio's ceilings: the compiled engine at the SGEMM roof on the dense products, and on
    the first layer's nonzero inputs only (an engine that skipped the zeros at full speed)."""
    widths = (784, *cfg["hidden"], 10)
    dense = flops_per_sample(widths, cfg["batch_size"])
    sparse = flops_per_sample(widths, cfg["batch_size"], density)
    ref, comp = rates[("reference", "plain")][0], rates[("compiled", "plain")][0]
    print(
        f"  {study}: {dense / 1e3:.0f}k FLOP/sample ({sparse / 1e3:.0f}k over the nonzero "
        f"inputs); reference {ref * dense / 1e9:.1f} GFLOP/s, compiled {comp * dense / 1e9:.1f}"
        f" ({comp * dense / 1e9 / roof:.0%} of the {roof:.0f} GFLOP/s roof); ratio ceiling at "
        f"the roof: {roof * 1e9 / dense / ref:.1f}x dense, {roof * 1e9 / sparse / ref:.1f}x "
        "over the nonzeros"
    )
    alone = products_rate(widths, cfg["batch_size"])
    print(
        f"  {study}: the step's SGEMMs alone {alone:,.0f} samples/s (compiled plain "
        f"{comp / alone:.0%} of it): ratio ceiling {alone / ref:.1f}x if the rest were free"
    )


def projected_hours(study: str, cfg: dict, rates: dict) -> float:
    if study == "random_labels":
        per_run = cfg["tasks"] * cfg["epochs_per_task"] * cfg["subset_size"]
    else:
        images = sum(
            (cfg["initial_classes"] + t * cfg["classes_per_task"]) * 6000
            for t in range(cfg["tasks"])
        )
        per_run = cfg["epochs_per_task"] * images * (2 if cfg.get("retrained_baseline") else 1)
    seconds = 0.0
    for setting in SETTINGS:
        seconds += per_run / rates[("compiled", "plain" if setting in AS_PLAIN else setting)][0]
    hours = len(cfg["seeds"]) * seconds / 3600
    plain_ref = len(cfg["seeds"]) * len(SETTINGS) * per_run / rates[("reference", "plain")][0]
    print(
        f"  {study}: {per_run / 1e6:.1f}M samples per run; 9 settings x {len(cfg['seeds'])} "
        f"seeds: {hours:.1f} CPU-hours (all on the reference engine: {plain_ref / 3600:.1f})"
    )
    return hours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    data = fashion_mnist()
    if data is None:
        print("Fashion-MNIST not found: the synthetic MNIST-like data (sparser: faster)")
        data = mnist_like(60_000, seed=0)
    x, y = data
    density = float((x != 0).float().mean())
    print(f"inputs nonzero: {density:.2f}")
    roofs = {b: sgemm_roof(b) for b in (16, 90)}
    for shapes in roofs.values():
        print("  SGEMM, one thread: " + ", ".join(f"{k} {v:.0f}" for k, v in shapes.items()))
    g = torch.Generator().manual_seed(0)
    total = 0.0
    for study in ("random_labels", "class_incremental"):
        cfg = preset(study)
        if study == "random_labels":
            idx = torch.randperm(len(x), generator=g)[: cfg["subset_size"]]
            xs, ys = x[idx].contiguous(), torch.randint(0, 10, (len(idx),), generator=g)
            masked = False
        else:
            idx = torch.nonzero(y < 4).flatten()[:12_000]
            xs, ys = x[idx].contiguous(), y[idx].contiguous()
            masked = True
        order = torch.randperm(len(xs), generator=g)
        print(f"{study}: hidden {cfg['hidden']}, batch {cfg['batch_size']}, {len(xs)} images")
        rates = measure(study, cfg, xs, ys, order, masked, args.repeats)
        nonzero = float((xs != 0).float().mean())
        arithmetic(study, cfg, rates, nonzero, max(roofs[cfg["batch_size"]].values()))
        total += projected_hours(study, copy.deepcopy(cfg), rates)
    print(
        f"full/matrix's two mini-batch studies: {total:.1f} CPU-hours of training "
        "(the whole matrix end to end: benchmarks/matrix_cost.py)"
    )
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
