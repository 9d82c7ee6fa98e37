"""A monitor for any training loop: collapse and plasticity per named layer, every k steps.

Plug it into your own loop (it changes nothing in the model, its modes or its RNG)::

    from plasticollapse import Monitor

    monitor = Monitor(model, num_classes=10, data={"train": train_loader, "test": test_loader},
                      loggers=["metrics.csv", print])
    for epoch in range(epochs):
        train_one_epoch(model, train_loader)          # your loop
        row = monitor.step()                          # measures every `every`-th call

    monitor.measure(x_val, y_val, split="val")        # or on demand, any data

Each measurement is :func:`~plasticollapse.metrics.measure.measure_model` on one data set
(a ``DataLoader``, any iterable of ``(inputs, labels)`` batches, or tensors), its keys
prefixed by the split's name (``train_nc1``, ``test_accuracy``,
``train_dormant_fraction_body.2``), for the layers ``layers`` picks (default: every
activation module, by name; the classifier's input is always measured). A step's row adds
``drift`` (||theta - theta_0||_2 from the parameters when the monitor was made), ``grad_norm``
(when the parameters hold gradients), ``measure_seconds`` (the wall time the measurement
took: its cost, next to your epoch's) and ``step``.

Loggers get every row with its step: any callable ``f(row, step)``, an object with
``log(row, step)`` (:class:`~plasticollapse.runs.loggers.TensorBoardLogger` and
:class:`~plasticollapse.runs.loggers.WandbLogger` work without a run folder), or a path
ending in ``.csv`` (:class:`CsvLogger`).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plasticollapse.metrics.layers import LayerSpec
from plasticollapse.metrics.measure import measure_model
from plasticollapse.metrics.plasticity import DORMANT_TAU, drift, grad_norm


class CsvLogger:
    """Rows into a CSV file, one line per row, ``step`` first, a column per number.

    A row with a key no earlier row had rewrites the file with the wider header (earlier
    rows get empty cells), so the columns are always the union of the keys logged. An
    existing file is continued, with its own columns.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.columns: list[str] = []
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                self.columns = next(csv.reader(f), [])

    def log(self, row: Mapping[str, Any], step: int) -> None:
        values: dict[str, int | float] = {"step": step}
        values.update((k, v) for k, v in _numbers(row).items() if k != "step")
        new = [key for key in values if key not in self.columns]
        if new:
            self._widen(self.columns + new)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(values)

    def _widen(self, columns: list[str]) -> None:
        rows = []
        if self.columns:
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        self.columns = columns
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)

    def close(self) -> None:
        """Nothing to do: each row is written and closed as it is logged."""


def _numbers(row: Mapping[str, Any]) -> dict[str, int | float]:
    """The row's numbers (bools as 0/1); text and missing values are left out."""
    return {k: int(v) if isinstance(v, bool) else v for k, v in row.items() if _is_number(v)}


def _is_number(value) -> bool:
    return isinstance(value, (int, float))


class _CallableLogger:
    def __init__(self, function: Callable[[dict, int], Any]):
        self.function = function

    def log(self, row: Mapping[str, Any], step: int) -> None:
        self.function(dict(row), step)

    def close(self) -> None:
        """A function has nothing to close."""


def as_logger(logger):
    """An object with ``log(row, step)`` and ``close()`` for what ``loggers=`` accepts."""
    if isinstance(logger, (str, Path)):
        if Path(logger).suffix != ".csv":
            raise ValueError(
                f"logger {str(logger)!r}: a path must end in .csv; for TensorBoard or W&B pass "
                "plasticollapse.TensorBoardLogger('logs') or plasticollapse.WandbLogger()"
            )
        return CsvLogger(logger)
    if callable(getattr(logger, "log", None)):
        return logger
    if callable(logger):
        return _CallableLogger(logger)
    raise ValueError(
        f"a logger is a callable f(row, step), an object with .log(row, step) or a .csv path; "
        f"got {type(logger).__name__}"
    )


class Monitor:
    """Collapse and plasticity of ``model`` during your training, per named layer.

    ``num_classes``: the classifier's outputs. ``layers``: what ``measure_model(layers=...)``
    takes (default ``"activations"``: every activation module). ``data``: the data sets
    :meth:`step` measures, by split name, each a ``DataLoader``, an iterable of
    ``(inputs, labels)`` batches or a tuple ``(inputs, labels)`` of tensors. ``every``: the
    measuring period of :meth:`step`. ``batchnorm``: ``"eval"`` (running statistics) or
    ``"batch"`` (each batch's own). ``classifier`` names the module whose input is the
    penultimate feature (default: the last ``nn.Linear``). ``samples`` measures at most that
    many rows of each data set, the first it yields (a fixed probe set for tensors and
    unshuffled loaders): one forward pass over every sample can cost a sizeable part of a
    small network's epoch (benchmarks/monitor_overhead.py: on a digits CNN that pass alone
    is ~30 % of an epoch, so only a probe set or ``every`` > 1 keeps measuring under 10 %).
    Activations applied as functions (``F.relu``), which no hook sees, are looked for and
    warned about at each split's first measurement only.

    :attr:`steps` counts :meth:`step` calls; :attr:`seconds` sums the wall time spent
    measuring.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        layers: LayerSpec | None = None,
        data: Mapping[str, Any] | None = None,
        every: int = 1,
        loggers: Iterable[Any] = (),
        batchnorm: str = "eval",
        classifier: str | None = None,
        layer_collapse: bool = False,
        tau: float = DORMANT_TAU,
        batch_size: int = 1024,
        samples: int | None = None,
    ):
        if int(every) < 1:
            raise ValueError(f"every must be >= 1 (measure every k-th step), got {every}")
        if samples is not None and int(samples) < 1:
            raise ValueError(f"samples must be >= 1 (rows measured per split), got {samples}")
        self.samples = None if samples is None else int(samples)
        self.model, self.num_classes, self.every = model, int(num_classes), int(every)
        self.data = dict(data or {})
        self.loggers = [as_logger(logger) for logger in loggers]
        self.options: dict[str, Any] = dict(
            layers="activations" if layers is None else layers,
            batchnorm=batchnorm,
            layer=classifier,
            layer_collapse=layer_collapse,
            tau=tau,
            batch_size=batch_size,
        )
        self.initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.warned: set[str] = set()  # splits already watched for unhooked activations
        self.steps = 0
        self.seconds = 0.0

    def step(self) -> dict[str, float]:
        """Count one step; every ``every``-th, measure each data set of ``data`` (the row
        :meth:`measure` returns, logged), else ``{}``."""
        self.steps += 1
        if self.steps % self.every:
            return {}
        return self.measure()

    def measure(self, data=None, labels=None, split: str = "train", log: bool = True):
        """Measure now. With ``data`` (tensor inputs with ``labels``, or batches): one data
        set, keys prefixed ``{split}_``. Without: every data set of ``data=`` given to the
        monitor, with ``drift``, ``grad_norm``, ``measure_seconds`` and ``step``.
        ``log=False`` returns the row without handing it to the loggers."""
        start = time.perf_counter()
        if data is None:
            if not self.data:
                raise ValueError("nothing to measure: pass data, or Monitor(..., data={...})")
            row = {}
            for name, split_data in self.data.items():
                row.update(self._measure_split(split_data, None, name))
            row.update(self.parameter_metrics())
        else:
            row = self._measure_split(data, labels, split)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        if data is None:
            row.update(measure_seconds=seconds, step=self.steps)
        if log:
            for logger in self.loggers:
                logger.log(row, self.steps)
        return row

    def _measure_split(self, data, labels, split: str) -> dict[str, float]:
        if labels is None and _is_tensor_pair(data):
            data, labels = data
        if self.samples is not None:
            data, labels = _first_rows(data, labels, self.samples)
        # the first measurement of a split warns about activations no hook sees (F.relu);
        # later ones skip that watch (it routes a batch's every torch call through Python)
        first = split not in self.warned
        metrics = measure_model(
            self.model, data, labels, self.num_classes, warn_unseen=first, **self.options
        )
        self.warned.add(split)
        return {f"{split}_{key}": value for key, value in metrics.items()}

    def parameter_metrics(self) -> dict[str, float]:
        """``drift`` (||theta - theta_0||_2 from the parameters when the monitor was made) and
        ``grad_norm`` (when the parameters hold gradients: the norm of the ``.grad`` your
        loop's last backward left, its last batch's unless it zeroed them): no data, no
        forward or backward pass of its own."""
        out = {"drift": drift(self.model, self.initial)}
        if any(p.grad is not None for p in self.model.parameters()):
            out["grad_norm"] = grad_norm(self.model)
        return out

    def close(self) -> None:
        """Close every logger (flushes TensorBoard, finishes the W&B run)."""
        for logger in self.loggers:
            close = getattr(logger, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_rows(data, labels, samples: int):
    """(data, labels) cut to the first ``samples`` rows: tensors sliced, batches truncated."""
    if labels is not None:
        return data[:samples], labels[:samples]
    return _truncated(data, samples), None


def _truncated(batches, samples: int):
    rows = 0
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            yield batch  # measure_model says what a batch must be
            return
        x, y = batch[0], batch[1]
        take = min(len(y), samples - rows)
        yield x[:take], y[:take]
        rows += take
        if rows >= samples:
            return


def _is_tensor_pair(data) -> bool:
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
        and data[0].ndim > 0
        and len(data[0]) == len(data[1])
    )
