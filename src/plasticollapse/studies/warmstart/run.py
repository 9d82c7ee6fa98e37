"""Setup B: warm-starting, with neural collapse and a plasticity probe at every checkpoint.

The protocol (the authors' warm-start code, with measurements in eval mode)::

    D      = the training set (CIFAR-10: 50k images, normalised with CIFAR10_MEAN/STD)
    W      = a seeded random warmup_fraction of D (the paper: 50%, 25k images)
    theta  = a fresh network (the seed fixes it)
    fresh probe: a copy of theta trained on D                -> fresh_full_test_acc (summary)
    for warm-up epoch e = 1 .. warmup_epochs:
        one SGD epoch over W in a fresh random order: CE + the remedies' loss terms, SGD
            with their weight decay, their after_step hooks after every update
        every checkpoint_every epochs (e = 5, 10, ..., as the authors; no epoch-0 row, the
        fresh probe is its baseline):
            remedies' at_checkpoint (ReDo: recycle the tau-dormant units of theta; part of
                the warm-up)
            measure theta on W in eval mode: NC1..NC4, accuracy, feature ranks, dormancy,
                weight magnitude; and its test accuracy
            with BatchNorm: measure theta on W again with batch statistics (keys + _bn_batch)
            Shrink & Perturb: NC1 of the shrunk and perturbed copy (nc1_after_sp, ...)
            probe: a copy of theta (after the remedies' at_probe_start; Shrink & Perturb:
                shrunk and perturbed) trained on D with plain SGD (same lr and momentum,
                no weight decay, no regulariser) until an epoch's online training accuracy
                reaches finetune_target_acc, at most finetune_max_epochs; record its test
                accuracy
            append one row to metrics.jsonl

The probe's stopping rule is the authors': the accuracy counted online during the epoch
(each batch scored by the network before its update, in train mode), not a separate pass.

Remedies (:mod:`plasticollapse.remedies`; ``remedies = [...]``, or one named by the older
``scheme``) change the warm-up only; probes are always plain SGD:

- ``plain``: cross-entropy.
- ``shrink_perturb``: the warm-up is plain; each probe starts from
  ``shrink * theta + perturb * theta_fresh`` (Ash & Adams 2020; 0.6 and 0.01).
- ``nc1_reg``: L = CE - nc1_lambda * min(NC1_batch, nc1_clip) (the paper's regulariser).
- ``weight_decay``: SGD weight decay during warm-up; ``weight_decay`` unset means 0.01
  (the paper studies 0.001, 0.01 and 0.1). Without this remedy an unset weight_decay
  means 0, and a value given explicitly applies to the warm-up too.
- ``l2_init``: L = CE + l2_init_lambda / 2 * ||theta - theta_0||^2 (Kumar et al. 2023).
- ``redo``: ReDo resets (Sokar et al. 2023) of units with dormancy score <= redo_tau at
  every checkpoint; the MLP's hidden layers, or the ResNet-18's blocks' inner channels.
- ``cbp``: Continual Backprop (Dohare et al. 2024) after every warm-up step, on the same
  units (:class:`~plasticollapse.remedies.pair_remedies.LayerPairContinualBackprop`: the
  step's activations read by forward hooks; a BatchNorm between is reset with the unit);
  rows count ``cbp_units_replaced`` since the previous row.

Rows describe the warm-up network at that epoch (for ``redo``, after the checkpoint's
reset, which belongs to its warm-up; for ``shrink_perturb``, before shrinking, which belongs
to the probe only; ``nc1_after_sp`` and ``nc1_pinv_after_sp`` are NC1 of the probe's shrunk
and perturbed start, as the authors also recorded).

BatchNorm when measuring (docs/paper.md, "Collapse metrics"): the authors measured the plain
and Shrink & Perturb networks in train mode (each batch of 128 normalised by its own
statistics) and the regularised and weight-decay ones in eval mode (running statistics).
A network with BatchNorm is measured both ways: every key of ``measure_model`` in eval mode
(``nc1``, ...), and again with batch statistics under the same name plus ``_bn_batch``
(``nc1_bn_batch``, ``nc1_pinv_bn_batch``, ``warmup_train_acc_bn_batch``, ...): the warm-up
set in a seeded random order (``generator_for(seed, "bn_batch", epoch)``), in batches of
``batch_size``, each normalised by its own mean and variance; the running statistics are
neither used nor changed (``measure_model(..., batchnorm="batch")``). A network without
BatchNorm gets no ``_bn_batch`` keys (they would equal the eval-mode ones).

Data: CIFAR-10 is normalised once on the device; MNIST, Fashion-MNIST and digits stay in
[0, 1], as Setup A. With ``augment``, warm-up and probe batches (never measurements) get a
random crop of the 4-pixel zero-padded image and a horizontal flip with probability 1/2,
drawn per sample on the device. ``train_samples`` (0 = all) keeps a fixed seeded subset of
the training set as D, for tests and quick runs.

Randomness: ``seed_everything(seed)`` fixes the initialisation; every other draw (the
warm-up subset, each epoch's order and augmentation, each probe epoch, S&P's and ReDo's
fresh weights) comes from a generator seeded by a hash of ``(seed, purpose, epoch, ...)``.
So checkpoints store no generator state and a resumed run draws exactly what an
uninterrupted one would.

Checkpoints: after every checkpoint's measurements, after each probe epoch (the probe's own
model and optimizer nested under ``probe``), and after every row. A kill therefore loses at
most ``checkpoint_every`` warm-up epochs or one probe epoch, and the resumed run writes the
rows an uninterrupted run would (exactly, on CPU).

Divergence: a warm-up epoch whose mean loss is non-finite or above 1e4 in magnitude, or a
non-finite NC1, appends a row ``{"epoch", "diverged": true, "diverged_metric",
"diverged_value"}`` and ends the run with summary status ``diverged``.

Speed: whole datasets live on the device as tensors, batches are slices through a
permutation (no DataLoader); on CUDA the ResNet runs channels_last, and with ``amp`` in
bf16 autocast for training and test accuracy (the authors trained in float32, and so does
the paper preset, ``amp = false``; bf16 is an option for speed, which moved NC1 by about 1%
where it was measured, docs/metrics.md). Collapse is always measured in float32: bf16 rounding
of the features (about 0.4% of their size) would swamp the small within-class spread of a
collapsed network.

User metrics plug in as callbacks: ``run(config, folder, callbacks=[f])`` calls
``f(epoch, model, row)`` after each checkpoint's measurements (before the probe); it may add
keys to ``row`` or return a dict of them.

Example::

    plasticollapse warmstart --config paper/warmstart_cifar10
    plasticollapse warmstart --config quick/warmstart_digits --seeds 0 1
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from plasticollapse.metrics.plasticity import has_batchnorm
from plasticollapse.remedies import RemedyContext, build_remedies, weight_decay_of
from plasticollapse.remedies.base import Remedy
from plasticollapse.remedies.pair_remedies import on_layer_pairs
from plasticollapse.runs.folder import DivergenceError, RunFolder, check_finite, progress_bar
from plasticollapse.runs.runtime import (
    check_classes,
    generator_for,
    resolve_device,
    seed_everything,
    set_threads,
)
from plasticollapse.studies.base import Callback
from plasticollapse.studies.warmstart.config import EVAL_BATCH, LOSS_LIMIT, Config
from plasticollapse.studies.warmstart.summary import summarise_run
from plasticollapse.studies.warmstart.training import (
    Tensors,
    build_model,
    finetune,
    load_tensors,
    probe_start,
    sgd,
    test_accuracy,
    train_epoch,
)

if TYPE_CHECKING:
    from plasticollapse.studies.warmstart.training import Network

# --------------------------------------------------------------------------- measuring


#: measure_model's accuracy and loss on the warm-up set, as a row names them.
RENAMED = {"accuracy": "warmup_train_acc", "loss": "warmup_train_loss"}
#: Suffix of the keys measured with BatchNorm's batch statistics.
BN_BATCH = "_bn_batch"
#: Keys that do not depend on the BatchNorm mode (not repeated with the suffix).
MODE_FREE = frozenset({"weight_magnitude"})


def measure_features(
    model: nn.Module, tensors: Tensors, config: Config, epoch: int
) -> dict[str, float]:
    """``measure_model`` on the warm-up set in eval mode and float32 (``accuracy``/``loss``
    renamed :data:`RENAMED`); with BatchNorm, again with batch statistics (keys + ``_bn_batch``,
    see the module doc)."""
    from plasticollapse.metrics.measure import measure_model

    x, y, c = tensors.warmup_x, tensors.warmup_y, tensors.num_classes
    metrics = measure_model(model, x, y, c, batch_size=EVAL_BATCH)
    row = {RENAMED.get(k, k): float(v) for k, v in metrics.items()}
    if has_batchnorm(model):
        order = torch.randperm(len(y), generator=generator_for(config.seed, "bn_batch", epoch))
        order = order.to(y.device)
        batch = measure_model(
            model, x[order], y[order], c, batch_size=config.batch_size, batchnorm="batch"
        )
        row.update(
            {RENAMED.get(k, k) + BN_BATCH: float(v) for k, v in batch.items() if k not in MODE_FREE}
        )
    return row


def measure(model: nn.Module, tensors: Tensors, config: Config, epoch: int = 0) -> dict[str, Any]:
    """Collapse and plasticity of the warm-up network on the warm-up set
    (:func:`measure_features`), with the warm-up set's accuracy from the same forward pass,
    and test accuracy (eval mode)."""
    row: dict[str, Any] = measure_features(model, tensors, config, epoch)
    row["warmup_test_acc"] = test_accuracy(model, tensors.test_x, tensors.test_y, config)
    return row


def changes_probe_start(remedies: Sequence[Remedy]) -> bool:
    """Whether a remedy changes the probe's start (Shrink & Perturb)."""
    return any(type(r).at_probe_start is not Remedy.at_probe_start for r in remedies)


def measure_probe_start(
    start: nn.Module, tensors: Tensors, config: Config, epoch: int
) -> dict[str, float]:
    """NC1 of the network the probe starts from, for Shrink & Perturb rows (the authors'
    ``NC1_SP``): ``nc1_after_sp``, ``nc1_pinv_after_sp`` and, with BatchNorm, their
    ``_bn_batch`` twins."""
    metrics = measure_features(start, tensors, config, epoch)
    out = {}
    for key in ("nc1", "nc1_pinv"):
        out[f"{key}_after_sp"] = metrics[key]
        if key + BN_BATCH in metrics:
            out[f"{key}_after_sp{BN_BATCH}"] = metrics[key + BN_BATCH]
    return out


# --------------------------------------------------------------------------- the run


def run(config: Config, folder: RunFolder, callbacks: Iterable[Callback] = ()) -> dict[str, Any]:
    """Warm up, measure and probe every ``checkpoint_every`` epochs, resuming from ``folder``.

    Each checkpoint appends one row::

        epoch, warmup_loss (mean training objective of the epoch), warmup_train_acc,
        warmup_train_loss, warmup_test_acc, every collapse and plasticity key of
        measure_model (nc1, nc1_pinv, nc1_quotient, cdnv, sigma_b_condition, nc2_*, nc3_*,
        nc4_*, dormant_fraction, effective_rank, srank, stable_rank, weight_magnitude, ...),
        with BatchNorm the same keys + _bn_batch, for Shrink & Perturb nc1_after_sp and
        nc1_pinv_after_sp (+ _bn_batch), the remedies' keys (redo_units_reset,
        cbp_units_replaced), callbacks' keys, full_test_acc, finetune_epochs,
        finetune_train_acc, seconds

    ``seconds`` is the run's wall time so far (summed over resumes). Returns the summary
    (:func:`summarise_run`).
    """
    set_threads(config.threads)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    tensors = load_tensors(config, device)
    check_classes(
        tensors.warmup_y, tensors.num_classes, "the warm-up set (train_samples x warmup_fraction)"
    )
    seed_everything(config.seed)  # fixes the initialisation below
    model = build_model(config, tensors).to(device)
    if device.type == "cuda" and config.model == "resnet18":
        # Module.to accepts memory_format at run time; torch's overloads of it leave it out.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    initial = copy.deepcopy(model)  # theta_0: the fresh probe's start
    # Continual Backprop on the network's layer pairs: the ResNet's too (its own step
    # knows only the MLP's layers)
    remedies = on_layer_pairs(build_remedies(config))
    for remedy in remedies:  # before the checkpoint: L2 Init's theta_0 is the initialisation
        remedy.bind(model, RemedyContext(seed=config.seed, num_classes=tensors.num_classes))
    optimizer = sgd(model, config, weight_decay_of(remedies))
    callbacks = list(callbacks)

    state: dict[str, Any] = folder.load_checkpoint() or {
        "epoch": 0,  # warm-up epochs trained
        "fresh": None,  # the fresh-initialisation probe's result
        "probe": None,  # the probe in progress: tag, pending row, its own training state
        "seconds": 0.0,
    }
    if "model" in state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    for remedy, remedy_state in zip(remedies, state.get("remedies", ()), strict=False):
        remedy.load_state_dict(remedy_state)
    clock = time.perf_counter()
    seconds_before = state["seconds"]

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - clock

    def checkpoint(probe: dict[str, Any] | None = None) -> None:
        state.update(probe=probe, seconds=elapsed())
        folder.save_checkpoint(
            {
                **state,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "remedies": [r.state_dict() for r in remedies],
            }
        )

    def run_probe(start: Network, tag: int | str, row: dict | None) -> dict[str, Any]:
        pending = state["probe"] if state["probe"] and state["probe"]["tag"] == tag else None

        def save(probe_state: dict[str, Any]) -> None:
            checkpoint({"tag": tag, "row": row, **probe_state})

        return finetune(start, tensors, config, tag, resume=pending, save=save)

    # The fresh-initialisation probe: the warm-start gap's baseline (the authors had none).
    if state["fresh"] is None:
        state["fresh"] = run_probe(initial, "fresh", None)
        checkpoint()
    del initial

    bar = (
        progress_bar(total=config.warmup_epochs, initial=state["epoch"], desc=folder.path.name)
        if config.progress
        else None
    )
    divergence: DivergenceError | None = None
    try:
        while True:
            pending = state["probe"]
            if pending is not None and pending["tag"] == state["epoch"]:
                # Resumed inside a checkpoint's probe: its row is measured, the warm-up
                # network is the one at that epoch.
                epoch, row = state["epoch"], pending["row"]
            elif state["epoch"] >= config.warmup_epochs:
                break
            else:
                epoch = state["epoch"] + 1
                generator = generator_for(config.seed, "warmup", epoch)
                loss, _ = train_epoch(
                    model,
                    optimizer,
                    tensors.warmup_x,
                    tensors.warmup_y,
                    generator,
                    config,
                    remedies,
                )
                state["epoch"] = epoch
                check_finite(epoch, limit=LOSS_LIMIT, loss=loss)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3g}")
                if epoch % config.checkpoint_every != 0:
                    continue
                row = {"epoch": epoch, "warmup_loss": loss}
                for remedy in remedies:
                    row.update(remedy.pass_summary())  # counts since the last row (CBP's)
                    row.update(remedy.at_checkpoint(model, optimizer, epoch, tensors.warmup_x))
                row.update(measure(model, tensors, config, epoch))
                if changes_probe_start(remedies):
                    start = probe_start(model, remedies, epoch)
                    row.update(measure_probe_start(start, tensors, config, epoch))
                    del start
                check_finite(epoch, nc1=row["nc1"])
                for callback in callbacks:
                    extra = callback(epoch, model, row)
                    if extra:
                        row.update(extra)
                checkpoint({"tag": epoch, "row": row})

            row = {**row, **run_probe(probe_start(model, remedies, epoch), epoch, row)}
            row["seconds"] = elapsed()
            folder.append_metrics(row)
            checkpoint()
            if bar is not None:
                bar.set_postfix(nc1=f"{row['nc1']:.3g}", full_test=f"{row['full_test_acc']:.3f}")
    except DivergenceError as e:
        divergence = e
        folder.append_metrics(
            {
                "epoch": e.step,
                "diverged": True,
                "diverged_metric": e.metric,
                "diverged_value": e.value,
                "seconds": elapsed(),
            }
        )
    finally:
        if bar is not None:
            bar.close()
    return summarise_run(folder.read_metrics(), state["fresh"], elapsed(), divergence)
