"""Where :func:`~plasticollapse.metrics.measure.measure_model`'s batches come from:
slices of tensors, or the (inputs, labels) batches of any iterable such as a DataLoader."""

from __future__ import annotations

import torch


def as_labels(labels) -> torch.Tensor:
    """Integer class indices as int64 (floating labels are refused)."""
    y = torch.as_tensor(labels)
    if y.is_floating_point():
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    return y.to(torch.int64)


def labelled_batches(inputs, labels, batch_size: int, by_index: bool):
    """(first row, inputs, labels) of each batch: slices of tensors, or the batches of an
    iterable of (inputs, labels). Checked here, before the first batch is asked for."""
    if labels is None:
        if isinstance(inputs, torch.Tensor):
            raise ValueError(
                "labels is None: pass the labels of a tensor of inputs, or pass an iterable "
                "of (inputs, labels) batches such as a DataLoader"
            )
        if by_index:
            raise ValueError("forward= reads rows by index: pass tensors inputs and labels")
        return _streamed_batches(inputs)
    try:
        x_all = torch.as_tensor(inputs)
    except (TypeError, RuntimeError, ValueError) as error:
        raise ValueError(
            f"inputs must be a tensor when labels are given, got {type(inputs).__name__}; "
            "for a DataLoader or an iterable of (inputs, labels) batches pass labels=None"
        ) from error
    y_all = as_labels(labels)
    if len(x_all) != len(y_all) or len(x_all) == 0:
        raise ValueError(f"need as many labels as inputs (> 0), got {len(y_all)} and {len(x_all)}")
    return (
        (start, x_all[start : start + batch_size], y_all[start : start + batch_size])
        for start in range(0, len(y_all), batch_size)
    )


def _streamed_batches(batches):
    start = 0
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(
                "each batch must be (inputs, labels), e.g. from a DataLoader over "
                f"TensorDataset(x, y); got {type(batch).__name__}"
            )
        x, y = torch.as_tensor(batch[0]), as_labels(batch[1])
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"a batch has {len(x)} inputs and {len(y)} labels; need as many, > 0")
        yield start, x, y
        start += len(y)
    if start == 0:
        raise ValueError("the data yielded no batches: measure needs at least one sample")


def rebatched(batches, batch_size: int):
    """The stream's small batches joined into batches of about ``batch_size`` rows (fewer,
    larger batches: the model and the metrics pay a per-batch cost); at most one batch of
    inputs more than ``batch_size`` rows is held at a time."""
    held: list[tuple[torch.Tensor, torch.Tensor]] = []
    start = rows = 0
    for _, x, y in batches:
        held.append((x, y))
        rows += len(y)
        if rows >= batch_size:
            yield start, *_joined(held)
            start, rows, held = start + rows, 0, []
    if held:
        yield start, *_joined(held)


def _joined(held):
    if len(held) == 1:
        return held[0]
    return torch.cat([x for x, _ in held]), torch.cat([y for _, y in held])
