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

Background mode, ``Monitor(..., background=True)``: a measurement takes a snapshot at once
in your thread (a copy of the model's parameters, buffers and modes into the monitor's own
copy, which shares no tensor and no hook with it, :mod:`~plasticollapse.metrics.snapshot`;
``drift`` and ``grad_norm`` from the model itself, since ``.grad`` changes at the next
backward; a DataLoader or other batch iterable read into tensors, since its iteration draws
from the global RNG both threads share) and measures the snapshot on one worker thread
while your loop goes on. ``step()`` and ``measure()`` return a ``concurrent.futures.Future``
of the row they return otherwise (``.result()`` waits for it; ``{}`` at once on steps
that do not measure): the row is the one measured synchronously from the same weights,
the same numbers. Rows reach the loggers in step order, from your thread, at the next
``step()``, ``measure()``, :meth:`Monitor.wait` or :meth:`Monitor.close` (``with`` closes
too) after they finish. One measurement is in flight at most: when the next is due before
the last finished, the monitor waits for it (:attr:`Monitor.waits`), so memory (one copy of
the model, the read batches) and lag stay bounded. An error raised while measuring is
raised again at the next ``step()``, ``measure()``, ``wait()`` or ``close()``.

The mode needs ``torch.set_num_threads(1)`` in your process (else a RuntimeError says
so; the monitor sets nothing): torch's thread count is process-wide, and the metrics set it
to 1 while they run, which would change your loop's threads mid-epoch. Each thread then
runs its own operations on one core: the mode helps when a core is free (a one-thread
training loop on a machine with two or more cores) and gives nothing when training already
uses every core. While a measurement runs, do not change the data handed to the monitor in
place, nor call the library's metrics from your thread (their thread switches are
process-wide): ``wait()`` first.
"""

from __future__ import annotations

import csv
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plasticollapse.metrics.batches import labelled_batches
from plasticollapse.metrics.layers import LayerSpec
from plasticollapse.metrics.measure import measure_model
from plasticollapse.metrics.plasticity import DORMANT_TAU, drift, grad_norm
from plasticollapse.metrics.snapshot import ModelSnapshot


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

    ``background=True`` measures on one worker thread while your loop goes on (see the
    module's docstring): :meth:`step` and :meth:`measure` then return a
    ``concurrent.futures.Future`` of the row instead of the row.

    :attr:`steps` counts :meth:`step` calls; :attr:`seconds` sums the wall time spent
    measuring (on the worker, in the background mode, where :attr:`blocked_seconds` is the
    training thread's time in the monitor and :attr:`waits` / :attr:`wait_seconds` count
    the measurements that had to wait for the one before).
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
        background: bool = False,
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
        self.background = bool(background)
        self.snapshot = ModelSnapshot(model)  # the copy the worker measures (background)
        self._worker: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Future, int, bool]] = deque()  # in step order
        self.waits = 0  # measurements that had to wait for the previous one
        self.wait_seconds = 0.0
        self.blocked_seconds = 0.0  # the training thread's time in the background mode

    def step(self):
        """Count one step; every ``every``-th, measure each data set of ``data`` (the row
        :meth:`measure` returns, logged), else ``{}``. In the background mode: a
        ``Future`` of that row (or of ``{}``), and the rows finished meanwhile are logged."""
        self.steps += 1
        if self.steps % self.every:
            if self.background:
                self._log_finished()
                return _done({})
            return {}
        return self.measure()

    def measure(self, data=None, labels=None, split: str = "train", log: bool = True):
        """Measure now. With ``data`` (tensor inputs with ``labels``, or batches): one data
        set, keys prefixed ``{split}_``. Without: every data set of ``data=`` given to the
        monitor, with ``drift``, ``grad_norm``, ``measure_seconds`` and ``step``.
        ``log=False`` returns the row without handing it to the loggers. In the background
        mode: a ``Future`` of that row, measured on the worker thread."""
        if data is None and not self.data:
            raise ValueError("nothing to measure: pass data, or Monitor(..., data={...})")
        if data is not None:
            jobs = [(split, *self._first_rows(data, labels))]
        else:
            jobs = [(name, *self._first_rows(d, None)) for name, d in self.data.items()]
        if self.background:
            return self._measure_in_background(jobs, data is None, log)
        start = time.perf_counter()
        row = {}
        for name, split_data, split_labels in jobs:
            first = name not in self.warned
            row.update(self._split_row(self.model, name, split_data, split_labels, first, {}))
            self.warned.add(name)
        if data is None:
            row.update(self.parameter_metrics())
        seconds = time.perf_counter() - start
        self.seconds += seconds
        if data is None:
            row.update(measure_seconds=seconds, step=self.steps)
        if log:
            self._log(row, self.steps)
        return row

    def _first_rows(self, data, labels):
        """(data, labels) of one data set: a tensor pair split, cut to ``samples`` rows."""
        if labels is None and _is_tensor_pair(data):
            data, labels = data
        if self.samples is not None:
            data, labels = _first_rows(data, labels, self.samples)
        return data, labels

    def _split_row(self, model, split: str, data, labels, warn: bool, options) -> dict:
        """measure_model's metrics, keys prefixed by the split. ``warn``: at a split's first
        measurement only, watch for activations no hook sees (F.relu; the watch routes a
        batch's every torch call through Python). ``options`` override the monitor's."""
        metrics = measure_model(
            model, data, labels, self.num_classes, warn_unseen=warn, **{**self.options, **options}
        )
        return {f"{split}_{key}": value for key, value in metrics.items()}

    def _log(self, row: Mapping[str, Any], step: int) -> None:
        for logger in self.loggers:
            logger.log(row, step)

    def _measure_in_background(self, jobs, with_parameters: bool, log: bool) -> Future:
        """Snapshot the model (and read batch iterables) here, measure on the worker. An
        earlier measurement's error is raised first (and this call measures nothing)."""
        start = time.perf_counter()
        if torch.get_num_threads() != 1:
            raise RuntimeError(
                f"Monitor(background=True) needs torch.set_num_threads(1) in the training "
                f"process (it has {torch.get_num_threads()}): torch's thread count is "
                "process-wide and the metrics set it to 1 while they run, which would change "
                "the training thread's threads (and its reductions' rounding) mid-epoch"
            )
        self._make_room()
        model = self.snapshot.take()
        # a batch iterable is read here, under fork_rng as measure_model reads it: a
        # DataLoader draws from the global RNG, which both threads share; on the worker,
        # fork_rng's restore would rewind the draws the training thread made meanwhile
        tasks = [
            (name, *(_read_batches(d, self.options) if y is None else (d, y, {})))
            for name, d, y in jobs
        ]
        # the split's first-measurement flag is taken here too: the worker shares no state
        warn = {name: name not in self.warned for name, _, _, _ in tasks}
        self.warned.update(warn)
        parameters = self.parameter_metrics() if with_parameters else None
        step = self.steps
        future = self._executor().submit(self._measure_copy, model, tasks, warn, parameters, step)
        self._pending.append((future, step, log))
        self.blocked_seconds += time.perf_counter() - start
        return future

    def _measure_copy(self, model, tasks, warn, parameters, step) -> dict[str, float]:
        """On the worker thread: the snapshot's row, as :meth:`measure` makes it."""
        start = time.perf_counter()
        row = {}
        for name, data, labels, options in tasks:
            row.update(self._split_row(model, name, data, labels, warn[name], options))
        seconds = time.perf_counter() - start
        self.seconds += seconds  # only this thread adds to it in the background mode
        if parameters is not None:
            row.update(parameters)
            row.update(measure_seconds=seconds, step=step)
        return row

    def _executor(self) -> ThreadPoolExecutor:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="plasticollapse-monitor")
        return self._worker

    def _make_room(self) -> None:
        """Wait for the measurement still running, if any (one in flight at most: one
        snapshot's memory, a lag of one measurement), then log what finished."""
        running = [future for future, _, _ in self._pending if not future.done()]
        if running:
            start = time.perf_counter()
            wait_for(running)
            self.waits += 1
            self.wait_seconds += time.perf_counter() - start
        self._log_finished()

    def _log_finished(self, block: bool = False) -> None:
        """Hand finished rows to the loggers in step order, stopping at the first
        unfinished one (or waiting for it, ``block``); a measurement's error is raised here."""
        while self._pending:
            future, step, log = self._pending[0]
            if not (block or future.done()):
                return
            self._pending.popleft()
            row = future.result()
            if log:
                self._log(row, step)

    def wait(self) -> None:
        """Background mode: wait for every measurement made and log its row (re-raising a
        measurement's error); at once otherwise."""
        self._log_finished(block=True)

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
        """Wait for the background measurements and log them (:meth:`wait`), stop the
        worker thread, close every logger (flushes TensorBoard, finishes the W&B run)."""
        try:
            self.wait()
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True)
                self._worker = None
            for logger in self.loggers:
                close = getattr(logger, "close", None)
                if callable(close):
                    close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _read_batches(batches, options: Mapping[str, Any]):
    """A batch iterable's rows as two tensors, and the batch size that cuts them into the
    batches :func:`measure_model` would make of the iterable itself (in eval mode it joins
    uniform batches of b rows k = ceil(batch_size / b) at a time; with ``batchnorm="batch"``
    each stays as it is), so the worker measures the same batches. Unequal batches before
    the last: cut at ``batch_size`` (the same metrics up to float rounding). Read under
    ``fork_rng``, as :func:`measure_model` reads it, so the caller's RNG does not move."""
    with torch.random.fork_rng(devices=[]):
        held = [(x, y) for _, x, y in labelled_batches(batches, None, 1, by_index=False)]
    sizes = [len(y) for _, y in held]
    size = options["batch_size"]
    if all(n == sizes[0] for n in sizes[:-1]) and sizes[-1] <= sizes[0]:
        size = sizes[0]
        if options["batchnorm"] == "eval":
            size *= math.ceil(options["batch_size"] / sizes[0])
    x = torch.cat([x for x, _ in held])
    y = torch.cat([y for _, y in held])
    return x, y, {"batch_size": size}


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
