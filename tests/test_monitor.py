"""Monitor in a plain PyTorch loop: a small CNN (Conv2d, BatchNorm2d, Dropout, GELU) on
sklearn's 8x8 digits, measured every k steps on training and held-out data, logged."""

import copy
import csv
import sys
import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from plasticollapse import (
    CsvLogger,
    Monitor,
    TensorBoardLogger,
    WandbLogger,
    drift,
    measure_model,
)


def digits(n_train=300, n_test=150):
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(y)
    test = slice(n_train, n_train + n_test)
    return (x[:n_train], y[:n_train]), (x[test], y[test])


def digits_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
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


def train_epoch(model, loader, optimizer):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_step_measures_every_k_steps_on_each_split_and_logs_every_row(tmp_path):
    (x, y), test = digits()
    model = digits_cnn()
    start = copy.deepcopy(model)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    monitor = Monitor(
        model,
        num_classes=10,
        data={"train": DataLoader(TensorDataset(x, y), batch_size=100), "test": test},
        every=2,
        loggers=[lambda row, step: seen.append((row, step)), tmp_path / "m.csv"],
    )
    rows = []
    for _ in range(4):
        train_epoch(model, loader, optimizer)
        rng = torch.get_rng_state()
        state = copy.deepcopy(model.state_dict())
        rows.append(monitor.step())
        assert torch.equal(torch.get_rng_state(), rng)  # the loop's randomness is untouched
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        assert model.training  # and so is its mode
    assert [bool(r) for r in rows] == [False, True, False, True]
    assert [step for _, step in seen] == [2, 4] and seen[1][0] == rows[3]
    last = rows[3]
    want = measure_model(model, x, y, 10, layers="activations")
    for key in ("nc1", "accuracy", "dormant_fraction", "feature_norm", "srank_2", "nc1_pinv"):
        assert last[f"train_{key}"] == pytest.approx(want[key], rel=1e-6), key
    held_out = measure_model(model, *test, 10, layers="activations")
    assert last["test_accuracy"] == held_out["accuracy"]
    assert {"train_dormant_fraction_2", "test_dormant_fraction_7", "test_nc1"} <= last.keys()
    assert last["drift"] == pytest.approx(drift(model, start), rel=1e-9)
    assert last["drift"] > rows[1]["drift"] > 0  # SGD keeps moving the weights
    assert last["grad_norm"] > 0 and last["step"] == 4 and last["measure_seconds"] > 0
    assert monitor.seconds >= last["measure_seconds"] + rows[1]["measure_seconds"] - 1e-9
    with (tmp_path / "m.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert [line["step"] for line in lines] == ["2", "4"]
    assert float(lines[1]["test_nc1"]) == pytest.approx(last["test_nc1"])


def test_measure_on_demand_prefixes_every_key_by_its_split_and_logs_it():
    (x, y), _ = digits()
    model = digits_cnn()
    seen = []
    monitor = Monitor(model, num_classes=10, loggers=[lambda row, step: seen.append(step)])
    row = monitor.measure(x, y, split="val")
    assert row and all(key.startswith("val_") for key in row)
    assert row["val_nc1"] == measure_model(model, x, y, 10, layers="activations")["nc1"]
    assert seen == [0]  # logged at the monitor's step
    assert monitor.measure(x, y, split="val", log=False) == row and seen == [0]
    batch_stats = Monitor(model, num_classes=10, batchnorm="batch").measure((x, y))
    assert batch_stats["train_nc1"] != pytest.approx(row["val_nc1"], rel=1e-3)
    probe = Monitor(model, num_classes=10, samples=70)  # the first 70 rows, either way
    want = measure_model(model, x[:70], y[:70], 10, layers="activations")
    for data in ((x, y), DataLoader(TensorDataset(x, y), batch_size=32)):
        assert probe.measure(data)["train_nc1"] == pytest.approx(want["nc1"], rel=1e-6)


def test_csv_logger_widens_its_header_for_new_keys_and_continues_a_file(tmp_path):
    path = tmp_path / "rows.csv"
    logger = CsvLogger(path)
    logger.log({"a": 1.0, "label": "text is left out"}, 0)
    logger.log({"a": 2.0, "b": 3.0}, 1)
    CsvLogger(path).log({"b": 4.0}, 2)  # a new logger on the same file appends
    with path.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["step", "a", "b"]
        assert [(r["step"], r["a"], r["b"]) for r in reader] == [
            ("0", "1.0", ""),
            ("1", "2.0", "3.0"),
            ("2", "", "4.0"),
        ]


def test_tensorboard_and_wandb_loggers_work_without_a_run_folder(tmp_path, monkeypatch):
    scalars, inits = [], []

    class SummaryWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, key, value, global_step):
            scalars.append((key, value, global_step))

        def flush(self):
            pass

        def close(self):
            scalars.append("closed")

    tensorboard = types.ModuleType("torch.utils.tensorboard")
    tensorboard.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", tensorboard)
    wandb = types.ModuleType("wandb")
    wandb.Settings = lambda **options: options
    wandb.init = lambda **options: (
        inits.append(options)
        or types.SimpleNamespace(
            log=lambda row, step: inits.append((row, step)), finish=lambda: None
        )
    )
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    for name in ("WANDB_PROJECT", "WANDB_RUN_GROUP", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    (x, y), _ = digits(n_train=60)
    board = TensorBoardLogger(tmp_path)
    with Monitor(digits_cnn(), 10, data={"train": (x, y)}, loggers=[board, WandbLogger()]) as m:
        row = m.step()
    assert board.writer.log_dir == str(tmp_path / "tensorboard")
    assert ("train_nc1", row["train_nc1"], 1) in scalars and scalars[-1] == "closed"
    options, (logged, step) = inits
    assert options["project"] == "plasticollapse" and options["name"] is None
    assert options["group"] is None and options["dir"] is None and options["mode"] == "offline"
    assert logged["train_nc1"] == row["train_nc1"] and step == 1


def test_bad_monitor_arguments_say_what_to_pass(tmp_path):
    model = digits_cnn()
    with pytest.raises(ValueError, match="must end in .csv"):
        Monitor(model, 10, loggers=[tmp_path / "m.txt"])
    with pytest.raises(ValueError, match="a logger is a callable"):
        Monitor(model, 10, loggers=[3])
    with pytest.raises(ValueError, match="every must be >= 1"):
        Monitor(model, 10, every=0)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        Monitor(model, 10, samples=0)
    with pytest.raises(ValueError, match="nothing to measure"):
        Monitor(model, 10).measure()


class FunctionalRelu(nn.Module):
    """A hidden F.relu: no module for the monitor's hooks."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 16), nn.Linear(16, 10)

    def forward(self, x):
        return self.b(F.relu(self.a(x.flatten(1))))


def test_a_split_is_watched_for_unhooked_activations_at_its_first_measurement_only():
    (x, y), test = digits(n_train=60, n_test=30)
    model = FunctionalRelu()
    monitor = Monitor(model, num_classes=10, data={"train": (x, y), "test": test})
    with pytest.warns(UserWarning, match="relu in the model itself") as first:
        row = monitor.step()
    assert len(first) == 2  # one per split
    with torch.no_grad():
        model.a.weight.mul_(0.5)  # a different network: later numbers must follow it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second step warns no more
        later = monitor.step()
    with pytest.warns(UserWarning, match="relu in the model itself"):
        monitor.measure(x, y, split="val", log=False)  # a new split is watched once too
    want = measure_model(model, x, y, 10, layers="activations", warn_unseen=False)
    assert later["train_nc1"] == want["nc1"] != row["train_nc1"]
