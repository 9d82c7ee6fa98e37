"""The integrations with the real frameworks: PyTorch Lightning's ``PlasticityCallback``.

Skipped with a reason when the extra is not installed (CI installs ``dev``, which holds it).
Avalanche's metric is tested in tests/test_integration_avalanche.py (``make test-avalanche``).
"""

import copy
import csv
import importlib
import sys

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from plasticollapse import Monitor, drift, grad_norm


def test_without_lightning_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "plasticollapse.integrations.lightning", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'plasticollapse\[lightning\]'"):
        importlib.import_module("plasticollapse.integrations.lightning")
    monkeypatch.delitem(sys.modules, "plasticollapse.integrations.lightning", raising=False)


L = pytest.importorskip(
    "lightning.pytorch",
    reason="PyTorch Lightning is not installed: pip install 'plasticollapse[lightning]'",
)
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from plasticollapse.integrations import PlasticityCallback  # noqa: E402


def digits(n_train=200, n_val=100):
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(y)
    val = slice(n_train, n_train + n_val)
    return (x[:n_train], y[:n_train]), (x[val], y[val])


class DigitsModule(L.LightningModule):
    """A small CNN with BatchNorm, Dropout and GELU as ``self.net``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 32),
            nn.GELU(),
            nn.Dropout(0.25),
            nn.Linear(32, 10),
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _index):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, _index):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _copy(grad):
    return None if grad is None else grad.clone()


class Snapshot(L.Callback):
    """Before the callback under test: the state it must leave as it found it."""

    def __init__(self):
        self.state = None

    def _take(self, pl_module):
        self.state = (
            [m.training for m in pl_module.modules()],
            {n: _copy(p.grad) for n, p in pl_module.named_parameters()},
            [p.requires_grad for p in pl_module.parameters()],
            torch.is_grad_enabled(),
            {k: v.clone() for k, v in pl_module.state_dict().items()},
        )

    def on_train_epoch_end(self, trainer, pl_module):
        self._take(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module):
        self._take(pl_module)


class Direct(L.Callback):
    """After the callback under test: checks the state is unchanged and measures the same
    model state with a Monitor of its own."""

    def __init__(self, snapshot, data, initial):
        self.snapshot, self.data, self.initial = snapshot, data, initial
        self.measured = {}  # (epoch, split) -> {logged key: value}

    def _check_and_measure(self, trainer, pl_module, split):
        modes, grads, requires, grad_enabled, state = self.snapshot.state
        assert [m.training for m in pl_module.modules()] == modes
        for name, p in pl_module.named_parameters():
            assert (p.grad is None) == (grads[name] is None)
            assert p.grad is None or torch.equal(p.grad, grads[name])
        assert [p.requires_grad for p in pl_module.parameters()] == requires
        assert torch.is_grad_enabled() == grad_enabled
        assert all(torch.equal(v, state[k]) for k, v in pl_module.state_dict().items())
        monitor = Monitor(pl_module.net, num_classes=10)
        row = monitor.measure(self.data[split], split=split, log=False)
        out = {f"{split}/{key[len(split) + 1 :]}": value for key, value in row.items()}
        if split == "train":
            out["train/drift"] = drift(pl_module.net, self.initial)
        self.measured[(trainer.current_epoch, split)] = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 == trainer.num_training_batches:  # the last step's gradients
            self.grad_norm = grad_norm(pl_module.net)

    def on_train_epoch_end(self, trainer, pl_module):
        self._check_and_measure(trainer, pl_module, "train")
        self.measured[(trainer.current_epoch, "train")]["train/grad_norm"] = self.grad_norm

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._check_and_measure(trainer, pl_module, "val")


def trainer(tmp_path, callbacks, epochs=2, logger=False):
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )


def logged_by_epoch(path):
    """{epoch: {key: value}} from Lightning's metrics.csv, a row's non-empty cells merged."""
    out = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            cells = {k: float(v) for k, v in row.items() if v != "" and k not in ("epoch", "step")}
            out.setdefault(int(row["epoch"]), {}).update(cells)
    return out


def test_callback_logs_train_and_val_metrics_equal_to_a_direct_measure(tmp_path):
    train, val = digits()
    module = DigitsModule()
    net = module.net
    initial = {n: p.detach().clone() for n, p in net.named_parameters()}
    # the model is the LightningModule's submodule; its data as a DataLoader and as tensors
    callback = PlasticityCallback(
        num_classes=10,
        train_data=DataLoader(TensorDataset(*train), batch_size=64),
        val_data=val,
        module="net",
    )
    snapshot = Snapshot()
    direct = Direct(snapshot, {"train": train, "val": val}, initial)
    logger = CSVLogger(tmp_path, name="logs")
    fit = trainer(tmp_path, [snapshot, callback, direct], logger=logger)
    fit.fit(
        module,
        DataLoader(TensorDataset(*train), batch_size=32, shuffle=True),
        DataLoader(TensorDataset(*val), batch_size=50),
    )
    logged = logged_by_epoch(tmp_path / "logs" / "version_0" / "metrics.csv")
    assert sorted(logged) == [0, 1]
    assert sorted(direct.measured) == [(0, "train"), (0, "val"), (1, "train"), (1, "val")]
    for (epoch, split), expected in direct.measured.items():
        got = {k: v for k, v in logged[epoch].items() if k.startswith(f"{split}/")}
        assert set(got) == set(expected), (epoch, split)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), (epoch, key)
    keys = set(logged[1])
    for key in (
        "train/nc1",
        "val/nc1",
        "val/accuracy",
        "train/dormant_fraction_2",
        "val/srank_7",
        "train/drift",
        "train/grad_norm",
    ):
        assert key in keys, key
    assert logged[1]["train/drift"] > logged[0]["train/drift"] > 0  # the weights moved
    assert [
        (epoch, sorted(m) == sorted(direct.measured[(epoch, "val")]))
        for epoch, m in callback.history
        if "val/nc1" in m
    ] == [(0, True), (1, True)]
    assert fit.callback_metrics["val/accuracy"].dtype == torch.float64


def test_every_n_epochs_measures_epochs_k_2k_and_not_the_sanity_check(tmp_path):
    train, val = digits(n_train=64, n_val=32)
    callback = PlasticityCallback(num_classes=10, train_data=train, val_data=val, every_n_epochs=2)
    module = DigitsModule()
    before = copy.deepcopy(module.state_dict())
    trainer(tmp_path, [callback], epochs=3).fit(
        module, DataLoader(TensorDataset(*train), batch_size=32), DataLoader(TensorDataset(*val))
    )
    assert [(epoch, sorted({k.split("/")[0] for k in m})) for epoch, m in callback.history] == [
        (1, ["val"]),
        (1, ["train"]),
    ]
    assert callback.monitor.model is module
    assert not all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


def test_callback_arguments_that_cannot_work_say_what_to_pass(tmp_path):
    with pytest.raises(ValueError, match="train_data= and/or val_data="):
        PlasticityCallback(num_classes=10)
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1"):
        PlasticityCallback(num_classes=10, train_data=digits()[0], every_n_epochs=0)
    callback = PlasticityCallback(num_classes=10, train_data=digits()[0], module="body")
    with pytest.raises(ValueError, match=r"no such submodule; choose from \['net'"):
        trainer(tmp_path, [callback], epochs=1).fit(
            DigitsModule(), DataLoader(TensorDataset(*digits(32, 1)[0]), batch_size=32)
        )
