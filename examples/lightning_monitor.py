"""PyTorch Lightning with plasticollapse: a small CNN on the 8x8 digits, measured every epoch.

A LightningModule (Conv2d, BatchNorm2d, GELU, Dropout as ``self.net``) trained by a
``Trainer`` with a ``PlasticityCallback``: after each training epoch it measures neural
collapse and plasticity on the training split, after each validation on the held-out one,
and logs them (``train/nc1``, ``val/accuracy``, ``train/dormant_fraction_net.2``, ``train/drift``,
...) through the trainer's loggers: here a CSVLogger. Halfway the training labels are
shuffled (a new task for the same network). Needs ``pip install 'plasticollapse[lightning]'``;
no download (sklearn ships the digits); seconds on a CPU::

    python examples/lightning_monitor.py                     # 4 epochs, logs in lightning_logs/
    python examples/lightning_monitor.py --epochs 2 --logs /tmp/logs
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from plasticollapse.integrations import PlasticityCallback


class DigitsCNN(L.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 64),
            nn.GELU(),
            nn.Dropout(0.25),
            nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _index):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, _index):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class ShuffleLabels(L.Callback):
    """Halfway, a new task: the same images with shuffled labels."""

    def __init__(self, dataset: TensorDataset, at_epoch: int):
        self.dataset, self.at_epoch = dataset, at_epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at_epoch:
            x, y = self.dataset.tensors
            self.dataset.tensors = (x, y[torch.randperm(len(y))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--logs", default="lightning_logs", help="the CSVLogger's folder")
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(y)
    train, val = TensorDataset(x[:1400], y[:1400]), TensorDataset(x[1400:], y[1400:])
    callback = PlasticityCallback(
        num_classes=10,
        train_data=DataLoader(train, batch_size=256),  # unshuffled: the same rows each time
        val_data=val.tensors,
        every_n_epochs=1,
    )
    logger = CSVLogger(args.logs, name="digits")
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=[ShuffleLabels(train, args.epochs // 2), callback],
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=10,
    )
    trainer.fit(
        DigitsCNN(),
        DataLoader(train, batch_size=32, shuffle=True),
        DataLoader(val, batch_size=256),
    )
    shown = ("train/accuracy", "train/nc1", "train/dormant_fraction_net.2", "val/accuracy")
    for epoch, metrics in callback.history:  # one entry per split measured
        values = ", ".join(f"{key} {metrics[key]:.3f}" for key in shown if key in metrics)
        print(f"epoch {epoch}: {values}")
    metrics_csv = Path(logger.log_dir) / "metrics.csv"
    with metrics_csv.open() as f:
        columns = next(csv.reader(f))
    seconds = callback.monitor.seconds
    print(f"{len(columns)} columns in {metrics_csv}; measuring took {seconds:.2f} s in all")


if __name__ == "__main__":
    main()
