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


@pytest.fixture
def one_torch_thread():
    """The background mode needs torch at one thread; put the caller's count back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_background_rows_equal_the_loops_own_and_reach_the_loggers_in_step_order(
    tmp_path, one_torch_thread
):
    (x, y), test = digits()
    in_loop, behind = digits_cnn(), digits_cnn()  # the same weights, trained the same way
    calls = []
    behind[2].register_forward_hook(lambda *_: calls.append(1))  # the user's own hook
    seen: dict[str, list] = {"loop": [], "background": []}
    monitors = {}
    for name, model in (("loop", in_loop), ("background", behind)):
        shuffled = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)  # draws RNG
        monitors[name] = Monitor(
            model,
            num_classes=10,
            data={"train": shuffled, "test": test},
            every=2,
            batch_size=100,  # the loader's batches of 32 joined by 4, the tensors cut by 100
            loggers=[lambda row, step, name=name: seen[name].append((row, step))],
            background=name == "background",
        )
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (in_loop, behind)]
    rows, futures = [], []
    for epoch in range(5):
        torch.manual_seed(epoch)
        train_epoch(in_loop, loader, optimizers[0])
        rows.append(monitors["loop"].step())
        torch.manual_seed(epoch)
        train_epoch(behind, loader, optimizers[1])
        trained_calls, rng = len(calls), torch.get_rng_state()
        grads = [p.grad.clone() for p in behind.parameters()]
        futures.append(monitors["background"].step())
        assert torch.equal(torch.get_rng_state(), rng)  # the loop's randomness is untouched
        assert all(torch.equal(p.grad, g) for p, g in zip(behind.parameters(), grads, strict=True))
        assert behind.training and len(calls) == trained_calls  # the copy has no hook
    monitors["background"].close()
    assert all(
        torch.equal(p, q) for p, q in zip(in_loop.parameters(), behind.parameters(), strict=True)
    )
    measured = [False, True, False, True, False]  # every=2
    assert [f.result() != {} for f in futures] == [r != {} for r in rows] == measured
    for row, future in zip(rows, futures, strict=True):
        assert set(row) == set(future.result())
        for key in row.keys() - {"measure_seconds"}:
            assert future.result()[key] == row[key], key  # the same numbers, not just close
    assert [step for _, step in seen["background"]] == [step for _, step in seen["loop"]]
    assert [s for _, s in seen["background"]] == [2, 4]
    assert seen["background"][1][0] == futures[3].result()
    copy_of = monitors["background"].snapshot.copy
    shared = {t.data_ptr() for t in behind.state_dict().values()}
    assert not shared & {t.data_ptr() for t in copy_of.state_dict().values()}


def test_background_close_logs_the_last_rows_and_waits_when_one_is_still_running(
    tmp_path, one_torch_thread
):
    (x, y), test = digits(n_train=120, n_test=60)
    model = digits_cnn()
    seen = []
    monitor = Monitor(
        model,
        10,
        data={"train": (x, y), "test": test},
        loggers=[lambda row, step: seen.append(step), tmp_path / "m.csv"],
        background=True,
    )
    futures = [monitor.step() for _ in range(3)]  # no epoch between: each waits for the last
    assert futures[0].done() and futures[1].done() and 0 <= monitor.waits <= 2
    assert seen == [1, 2]  # the third step waited for the second, then logged both
    assert monitor.measure(x, y, split="val", log=False).result()["val_nc1"] > 0
    monitor.close()  # the rest: logged, in step order, and the worker stopped
    assert seen == [1, 2, 3] and monitor._worker is None
    with (tmp_path / "m.csv").open() as f:
        assert [line["step"] for line in csv.DictReader(f)] == ["1", "2", "3"]
    assert monitor.seconds > 0 and monitor.blocked_seconds > 0


class FailsWhenMeasured(nn.Module):
    """Trains; raises in eval mode, which only the measurement uses."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(64, 10)

    def forward(self, x):
        if not self.training:
            raise RuntimeError("broken on the measuring thread")
        return self.body(x.flatten(1))


def test_an_error_while_measuring_in_the_background_is_raised_at_the_next_step(
    one_torch_thread,
):
    (x, y), _ = digits(n_train=60)
    monitor = Monitor(FailsWhenMeasured(), 10, data={"train": (x, y)}, background=True)
    future = monitor.step()
    with pytest.raises(RuntimeError, match="broken on the measuring thread"):
        future.result()
    with pytest.raises(RuntimeError, match="broken on the measuring thread"):
        monitor.step()  # the loop hears of it without asking the future
    monitor.step()
    with pytest.raises(RuntimeError, match="broken on the measuring thread"):
        monitor.close()
    assert monitor._worker is None  # closed all the same


def test_background_mode_refuses_more_than_one_torch_thread():
    (x, y), _ = digits(n_train=60)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="torch.set_num_threads"):
            Monitor(digits_cnn(), 10, data={"train": (x, y)}, background=True).step()
    finally:
        torch.set_num_threads(threads)


def test_background_batches_are_measured_as_the_loop_measures_them(one_torch_thread):
    (x, y), _ = digits(n_train=200)
    model = digits_cnn()
    uneven = [(x[:50], y[:50]), (x[50:80], y[50:80]), (x[80:], y[80:])]  # 50, 30, 120 rows
    cases = [
        (DataLoader(TensorDataset(x, y), batch_size=32), dict(batchnorm="batch")),
        (DataLoader(TensorDataset(x, y), batch_size=32), dict(samples=70, batch_size=64)),
        (uneven, dict(batch_size=64)),  # cut at 64 rows, not as given: equal up to rounding
    ]
    for batches, options in cases:
        rows = [
            Monitor(model, 10, background=background, **options).measure(batches)
            for background in (False, True)
        ]
        in_loop, behind = rows[0], rows[1].result()
        assert behind.keys() == in_loop.keys()
        exact = batches is not uneven
        for key, value in in_loop.items():
            assert behind[key] == (value if exact else pytest.approx(value, rel=1e-5)), key
