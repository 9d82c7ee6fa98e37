"""An Avalanche metric that measures collapse and plasticity with the Monitor.

Avalanche (the ContinualAI library, ``avalanche-lib``) reports metrics through its
``EvaluationPlugin``; its issue #1510 asks for plasticity metrics. ``PlasticityMetric`` is
one of its ``PluginMetric`` s, so what it measures reaches every Avalanche logger
(``InteractiveLogger``, ``TextLogger``, ``TensorboardLogger``, ``WandBLogger``, ...)::

    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import Naive
    from plasticollapse.integrations.avalanche import PlasticityMetric

    evaluator = EvaluationPlugin(accuracy_metrics(stream=True),
                                 PlasticityMetric(num_classes=10), loggers=[InteractiveLogger()])
    strategy = Naive(model=model, optimizer=optimizer, evaluator=evaluator, ...)
    for experience in benchmark.train_stream:
        strategy.train(experience)
        strategy.eval(benchmark.test_stream)

What is measured, and when:

- after each ``every``-th training experience (``train=True``): that experience's training
  data, with its eval transforms (``experience.dataset.eval()``: no augmentation), plus
  ``drift`` (||theta - theta_0||_2, theta_0 the parameters when training first started) and
  ``grad_norm`` (of the experience's last step's gradients, when the optimizer left them);
- after each evaluated experience (``eval=True``): that experience's data.

Each measurement is :meth:`Monitor.measure <plasticollapse.metrics.monitor.Monitor.measure>`
(:func:`~plasticollapse.metrics.measure.measure_model`: one eval-mode pass under
``torch.no_grad``; the modules' train/eval modes, BatchNorm running statistics, ``.grad``
tensors and the global RNG are as they were, so training goes on as without the metric). A
value is named as Avalanche names its own, with the experience:
``Plasticity/nc1/train_phase/train_stream/Exp000``,
``Plasticity/dormant_fraction_body.2/eval_phase/test_stream/Exp001``; its x position is the
strategy's ``clock.train_iterations``. :attr:`history` keeps ``(name, value, x)`` of every
value emitted; :meth:`result` is the last measurement's ``{key: value}``.

Needs Avalanche: ``pip install 'plasticollapse[avalanche]'``. Avalanche needs torchvision,
which must be the build that matches your torch (a CPU torch beside PyPI's CUDA torchvision
fails to import: 'operator torchvision::nms does not exist'); ``make test-avalanche`` makes
a separate environment with a matching pair and runs this adapter's tests in it.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader

from plasticollapse.metrics.layers import LayerSpec
from plasticollapse.metrics.monitor import Monitor
from plasticollapse.metrics.plasticity import DORMANT_TAU

try:
    from avalanche.evaluation import PluginMetric
    from avalanche.evaluation.metric_results import MetricValue
    from avalanche.evaluation.metric_utils import get_metric_name
except ModuleNotFoundError as error:  # the extra is optional: say how to get it
    raise ModuleNotFoundError(
        "plasticollapse.integrations.avalanche needs Avalanche (the `avalanche-lib` package): "
        "pip install 'plasticollapse[avalanche]' (with the torchvision build that matches "
        "your torch)",
        name=error.name,
    ) from error


class PlasticityMetric(PluginMetric[dict]):
    """Collapse and plasticity of ``strategy.model`` on each experience's data.

    ``num_classes``, ``layers``, ``batchnorm``, ``classifier``, ``layer_collapse``, ``tau``,
    ``batch_size`` and ``samples`` are :class:`~plasticollapse.metrics.monitor.Monitor`'s
    arguments. ``train`` / ``eval``: measure after training experiences / after evaluated
    experiences. ``every``: measure after training experiences ``k, 2k, ...`` (1-based).
    ``prefix`` starts every value's name. ``num_workers``: of the DataLoader that reads an
    experience's data set.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        train: bool = True,
        eval: bool = True,
        every: int = 1,
        layers: LayerSpec | None = None,
        batchnorm: str = "eval",
        classifier: str | None = None,
        layer_collapse: bool = False,
        tau: float = DORMANT_TAU,
        batch_size: int = 1024,
        samples: int | None = None,
        prefix: str = "Plasticity",
        num_workers: int = 0,
    ):
        super().__init__()
        if not (train or eval):
            raise ValueError("PlasticityMetric measures nothing: set train=True and/or eval=True")
        if int(every) < 1:
            raise ValueError(f"every must be >= 1 (measure every k-th experience), got {every}")
        self.measure_train, self.measure_eval = bool(train), bool(eval)
        self.every, self.prefix, self.num_workers = int(every), prefix, int(num_workers)
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
        self.trained_experiences = 0
        self._last: dict[str, float] = {}
        self.history: list[tuple[str, float, int]] = []

    # Avalanche's Metric interface
    def result(self) -> dict[str, float]:
        return dict(self._last)

    def reset(self) -> None:
        self._last = {}

    # the strategy's callbacks
    def before_training(self, strategy) -> None:
        if self.monitor is None or self.monitor.model is not strategy.model:
            self.monitor = Monitor(strategy.model, **self.options)  # theta_0 for drift: now

    def after_training_exp(self, strategy) -> list[MetricValue] | None:
        self.trained_experiences += 1
        if not self.measure_train or self.trained_experiences % self.every:
            return None
        monitor = self._monitor(strategy)
        row = monitor.measure(self._batches(strategy), split="m", log=False)
        return self._emit(strategy, {**_unprefixed(row), **monitor.parameter_metrics()})

    def after_eval_exp(self, strategy) -> list[MetricValue] | None:
        if not self.measure_eval:
            return None
        row = self._monitor(strategy).measure(self._batches(strategy), split="m", log=False)
        return self._emit(strategy, _unprefixed(row))

    # helpers
    def _monitor(self, strategy) -> Monitor:
        if self.monitor is None or self.monitor.model is not strategy.model:
            # evaluated before any training (or the strategy's model was replaced)
            self.monitor = Monitor(strategy.model, **self.options)
        return self.monitor

    def _batches(self, strategy) -> DataLoader:
        """The current experience's data with its eval transforms, as ``(x, y, ...)`` batches
        (Avalanche's batches end in the task label, which the Monitor does not read)."""
        dataset = strategy.experience.dataset
        if hasattr(dataset, "eval"):
            dataset = dataset.eval()
        return DataLoader(
            dataset,
            batch_size=int(self.options["batch_size"]),
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=getattr(dataset, "collate_fn", None),
        )

    def _emit(self, strategy, metrics: dict[str, float]) -> list[MetricValue]:
        self._last = dict(metrics)
        x = int(strategy.clock.train_iterations)
        values = []
        for key, value in metrics.items():
            name = get_metric_name(
                f"{self.prefix}/{key}", strategy, add_experience=True, add_task=False
            )
            self.history.append((name, float(value), x))
            values.append(MetricValue(self, name, float(value), x))
        return values

    def __str__(self) -> str:
        return self.prefix


def _unprefixed(row: dict[str, float]) -> dict[str, float]:
    """The Monitor's ``m_`` split prefix taken off its keys."""
    return {key[2:]: value for key, value in row.items() if isinstance(value, (int, float))}


__all__ = ["PlasticityMetric"]
