"""The Avalanche adapter, ``PlasticityMetric``, with the real ``avalanche-lib``.

Skipped with a reason when Avalanche is not installed. The project's own environment cannot
hold it on a CPU-torch machine (Avalanche needs torchvision, and PyPI's torchvision for this
torch is a CUDA build that fails to import beside the CPU torch); ``make test-avalanche``
makes a separate environment with a matching torch/torchvision pair and runs this file there.
"""

import importlib
import sys
import warnings

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn


def test_without_avalanche_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "avalanche.evaluation", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "plasticollapse.integrations.avalanche", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'plasticollapse\[avalanche\]'"):
        importlib.import_module("plasticollapse.integrations.avalanche")
    monkeypatch.delitem(sys.modules, "plasticollapse.integrations.avalanche", raising=False)


pytest.importorskip(
    "avalanche.evaluation",
    reason="Avalanche is not installed (it needs a torchvision matching torch): "
    "run `make test-avalanche`",
)
warnings.filterwarnings("ignore", module="avalanche")

from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark  # noqa: E402
from avalanche.benchmarks.utils.classification_dataset import (  # noqa: E402
    _make_taskaware_tensor_classification_dataset as tensor_dataset,
)
from avalanche.logging import BaseLogger  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from avalanche.training.supervised import Naive  # noqa: E402

from plasticollapse import Monitor  # noqa: E402
from plasticollapse.integrations.avalanche import PlasticityMetric  # noqa: E402


class Collect(BaseLogger):
    """An Avalanche logger that keeps every value it is handed."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, list[tuple[float, int]]] = {}

    def log_single_metric(self, name, value, x_plot):
        self.values.setdefault(name, []).append((value, x_plot))


def digits_benchmark():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16
    y = torch.tensor(y)
    train = tensor_dataset(x[:600], y[:600])
    test = tensor_dataset(x[600:900], y[600:900])
    return nc_benchmark(train, test, n_experiences=2, task_labels=False, seed=0), (x[:600], y[:600])


def mlp():
    torch.manual_seed(0)
    layers = [nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 10)]
    return nn.Sequential(*layers)


def train_two_experiences(model, plugins):
    benchmark, _ = digits_benchmark()
    logger = Collect()
    evaluator = EvaluationPlugin(*plugins, loggers=[logger])
    torch.manual_seed(1)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train_mb_size=32,
        train_epochs=2,
        eval_mb_size=128,
        evaluator=evaluator,
    )
    for experience in benchmark.train_stream:
        strategy.train(experience)
        strategy.eval(benchmark.test_stream)
    return benchmark, logger


def test_values_reach_avalanches_loggers_under_avalanches_names_and_equal_the_monitors():
    metric = PlasticityMetric(num_classes=10)
    model = mlp()
    benchmark, logger = train_two_experiences(model, [metric])

    names = set(logger.values)
    for exp in (0, 1):  # each training experience and each evaluated one
        assert f"Plasticity/nc1/train_phase/train_stream/Exp00{exp}" in names
        assert f"Plasticity/drift/train_phase/train_stream/Exp00{exp}" in names
        assert f"Plasticity/nc1/eval_phase/test_stream/Exp00{exp}" in names
    # per named layer: the ReLU (module "1") and the GELU (module "3") are both seen
    assert "Plasticity/dormant_fraction_1/train_phase/train_stream/Exp000" in names
    assert "Plasticity/dormant_fraction_3/train_phase/train_stream/Exp000" in names

    # the last evaluated experience (test Exp001), measured again by a Monitor now: the same
    # numbers (the metric measured the final model on that experience's own data)
    test_exp = benchmark.test_stream[1].dataset
    x = torch.stack([test_exp[i][0] for i in range(len(test_exp))])
    y = torch.tensor([int(test_exp[i][1]) for i in range(len(test_exp))])
    direct = Monitor(model, num_classes=10).measure(x, y, split="t", log=False)
    logged = logger.values["Plasticity/nc1/eval_phase/test_stream/Exp001"]
    assert logged[-1][0] == pytest.approx(direct["t_nc1"], rel=1e-9)
    assert metric.result()["accuracy"] == pytest.approx(direct["t_accuracy"], rel=1e-12)
    # the x position is the strategy's iteration count: later for the second experience
    x0 = logger.values["Plasticity/nc1/train_phase/train_stream/Exp000"][-1][1]
    x1 = logger.values["Plasticity/nc1/train_phase/train_stream/Exp001"][-1][1]
    assert 0 < x0 < x1


def test_measuring_does_not_change_training():
    """Training with the metric ends at the same weights as without it: the metric leaves
    modes, the RNG and gradients as they were (one that drew from the global RNG would move
    every later shuffle)."""
    with_metric, without = mlp(), mlp()
    train_two_experiences(with_metric, [PlasticityMetric(num_classes=10)])
    train_two_experiences(without, [])
    trained, untouched = with_metric.state_dict(), without.state_dict()
    assert trained.keys() == untouched.keys()
    for name in trained:
        assert torch.equal(trained[name], untouched[name]), name


def test_every_and_the_phases_choose_what_is_measured():
    benchmark_only_train = PlasticityMetric(num_classes=10, eval=False, every=2)
    _, logger = train_two_experiences(mlp(), [benchmark_only_train])
    names = set(logger.values)
    assert not any("eval_phase" in n for n in names)
    assert not any(n.endswith("Exp000") for n in names)  # every=2: only the second experience
    assert "Plasticity/nc1/train_phase/train_stream/Exp001" in names

    with pytest.raises(ValueError, match="measures nothing"):
        PlasticityMetric(num_classes=10, train=False, eval=False)
    with pytest.raises(ValueError, match="every must be >= 1"):
        PlasticityMetric(num_classes=10, every=0)
