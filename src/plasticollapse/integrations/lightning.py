"""A PyTorch Lightning callback that measures collapse and plasticity with the Monitor.

::

    import lightning as L
    from plasticollapse.integrations.lightning import PlasticityCallback

    callback = PlasticityCallback(num_classes=10, train_data=(x_train, y_train),
                                  val_data=val_loader, every_n_epochs=1)
    L.Trainer(max_epochs=10, callbacks=[callback]).fit(module, train_loader, val_loader)

At the end of every ``every_n_epochs``-th training epoch the callback measures ``train_data``
and at the end of that epoch's validation ``val_data``, each with
:meth:`Monitor.measure <plasticollapse.metrics.monitor.Monitor.measure>` (one eval-mode pass
under ``torch.no_grad``; the modules' train/eval modes, BatchNorm running statistics,
``.grad`` tensors and the global RNG are as they were), and logs the metrics through the
LightningModule's ``log_dict``, so they reach every logger of the trainer (CSV, TensorBoard,
W&B, ...) and ``trainer.callback_metrics``. Keys are the Monitor's, prefixed by the split and a
slash: ``train/nc1``, ``val/accuracy``, ``train/dormant_fraction_net.2``; with
``train_data`` the training epoch adds ``train/drift`` (||theta - theta_0||_2 from the
parameters at ``fit`` start) and ``train/grad_norm`` (of the epoch's last step's gradients,
read at its ``on_train_batch_end``, since Lightning frees them before validation; absent
when the number of batches is unknown).
Values are logged as float64 tensors (float32 on Apple's MPS, which has no float64): the
logged number is the Monitor's, not rounded to float32.

The measured model is the LightningModule itself (its ``forward`` must return the logits),
or its submodule named by ``module=`` (``module="net"`` for ``self.net``). The sanity-check
validation before training is not measured. Under multi-device strategies each process
measures the data it is given, with the same weights.

Needs Lightning: ``pip install 'plasticollapse[lightning]'``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from plasticollapse.metrics.layers import LayerSpec
from plasticollapse.metrics.monitor import Monitor
from plasticollapse.metrics.plasticity import DORMANT_TAU

try:
    from lightning.pytorch import Callback
except ModuleNotFoundError as error:  # the extra is optional: say how to get it
    raise ModuleNotFoundError(
        "plasticollapse.integrations.lightning needs PyTorch Lightning (the `lightning` "
        "package): pip install 'plasticollapse[lightning]'",
        name=error.name,
    ) from error


class PlasticityCallback(Callback):
    """Measures ``train_data`` / ``val_data`` at train / validation epoch ends via a Monitor.

    ``num_classes``, ``layers``, ``batchnorm``, ``classifier``, ``layer_collapse``, ``tau``,
    ``batch_size`` and ``samples`` are :class:`~plasticollapse.metrics.monitor.Monitor`'s
    arguments. ``train_data`` and ``val_data``: a ``DataLoader``, any iterable of
    ``(inputs, labels)`` batches or a tuple ``(inputs, labels)`` of tensors (None: that split
    is not measured; at least one is needed). ``every_n_epochs``: measure after epochs
    ``k, 2k, ...`` (1-based). ``module``: the name of the LightningModule's submodule to
    measure (default: the LightningModule). ``prog_bar`` shows the logged keys in the
    progress bar.

    :attr:`monitor` is the Monitor (made at ``setup``); :attr:`history` holds one
    ``(epoch, metrics)`` per measurement, the keys as logged.
    """

    def __init__(
        self,
        num_classes: int,
        train_data: Any = None,
        val_data: Any = None,
        every_n_epochs: int = 1,
        layers: LayerSpec | None = None,
        batchnorm: str = "eval",
        classifier: str | None = None,
        layer_collapse: bool = False,
        tau: float = DORMANT_TAU,
        batch_size: int = 1024,
        samples: int | None = None,
        module: str | None = None,
        prog_bar: bool = False,
    ):
        if train_data is None and val_data is None:
            raise ValueError(
                "PlasticityCallback measures nothing: pass train_data= and/or val_data= "
                "(a DataLoader, batches or a tuple (inputs, labels))"
            )
        if int(every_n_epochs) < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.data = {"train": train_data, "val": val_data}
        self.every_n_epochs = int(every_n_epochs)
        self.module, self.prog_bar = module, prog_bar
        self.options: dict[str, Any] = dict(
            num_classes=num_classes,
            layers=layers,
            batchnorm=batchnorm,
            classifier=classifier,
            layer_collapse=layer_collapse,
            tau=tau,
            batch_size=batch_size,
            samples=samples,
        )
        self.monitor: Monitor | None = None
        self._last_step: dict[str, float] = {}
        self.history: list[tuple[int, dict[str, float]]] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        model = self._measured_model(pl_module)
        if self.monitor is None or self.monitor.model is not model:
            self.monitor = Monitor(model, **self.options)  # theta_0 for drift: now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Lightning frees the gradients before validation, so the last step's are read here
        if batch_idx + 1 == trainer.num_training_batches and self._due(trainer, "train"):
            self._last_step = self._monitor().parameter_metrics()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._due(trainer, "train"):
            metrics = self._measure("train")
            parameters = {**self._last_step, **self._monitor().parameter_metrics()}  # drift: now
            metrics.update({f"train/{key}": value for key, value in parameters.items()})
            self._last_step = {}
            self._log(trainer, pl_module, metrics)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self._due(trainer, "val"):
            self._log(trainer, pl_module, self._measure("val"))

    def _monitor(self) -> Monitor:
        """The Monitor ``setup`` made (Lightning calls ``setup`` before any epoch)."""
        if self.monitor is None:
            raise RuntimeError("PlasticityCallback: setup() has not run; add it to a Trainer")
        return self.monitor

    def _due(self, trainer, split: str) -> bool:
        return (
            self.data[split] is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def _measure(self, split: str) -> dict[str, float]:
        row = self._monitor().measure(self.data[split], split=split, log=False)
        cut = len(split) + 1  # the Monitor's "train_" prefix becomes "train/"
        return {f"{split}/{key[cut:]}": value for key, value in row.items()}

    def _log(self, trainer, pl_module, metrics: dict[str, float]) -> None:
        self.history.append((trainer.current_epoch, dict(metrics)))
        # float64 tensors: Lightning would turn Python floats into float32 ones (Apple's MPS
        # has no float64: float32 there)
        device = pl_module.device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        values = {
            key: torch.tensor(float(value), dtype=dtype, device=device)
            for key, value in metrics.items()
        }
        pl_module.log_dict(
            values, on_step=False, on_epoch=True, prog_bar=self.prog_bar, batch_size=1
        )

    def _measured_model(self, pl_module) -> nn.Module:
        if self.module is None:
            return pl_module
        named = dict(pl_module.named_modules())
        if self.module not in named:
            raise ValueError(
                f"PlasticityCallback(module={self.module!r}): the LightningModule has no such "
                f"submodule; choose from {[n for n in named if n]}"
            )
        return named[self.module]
