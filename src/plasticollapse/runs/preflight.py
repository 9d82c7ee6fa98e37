"""What a sweep checks and says once, in its own process, before any run starts.

- :func:`preflight`: what would make every run fail (an ``out`` folder that cannot be
  written, a device this machine lacks) is a :class:`~plasticollapse.runs.config.ConfigError`.
- :func:`prepare_data`: each dataset the runs left to do need is made present once (found,
  or downloaded with its checksums), so a dataset that cannot be had fails here with one
  message instead of once in every run (30 runs, 30 identical download errors), and no run
  downloads.
- :func:`cpu_notice`: one line when runs of a GPU-scale study will train on the CPU, with
  the study's estimated CPU time, so a run of days does not start silently.

Like :mod:`plasticollapse.runs.sweep`, it imports torch only when a check needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from plasticollapse.runs.config import ConfigError
from plasticollapse.runs.spec import RunSpec, load_study, run_status

if TYPE_CHECKING:  # pragma: no cover - typing only
    from collections.abc import Callable

#: Backends whose runs execute on this machine (their devices and data are this machine's).
LOCAL_BACKENDS = ("serial", "process")
#: A CPU estimate below this many hours (all the runs together, on one core) says nothing.
CPU_NOTICE_HOURS = 1.0


class DataUnavailableError(ConfigError):
    """A dataset the runs need is missing and cannot be downloaded: nothing ran."""


def preflight(specs: list[RunSpec], backend: str) -> None:
    """Raise a ConfigError (nothing has run) when every run would fail: an ``out`` folder
    that cannot be written (a parent is a file, no permission, read-only, ``/proc``), or,
    for runs executing here (serial, process), a device this machine lacks. Ray and SLURM
    workers may have GPUs the submitting machine has not, so their devices are not checked.
    """
    from plasticollapse.runs.folder import ensure_writable

    devices = {spec.config.get("device", "auto") for spec in specs}
    if backend in LOCAL_BACKENDS and devices - {"auto", "cpu"}:
        from plasticollapse.runs.runtime import resolve_device  # imports torch

        for device in sorted(devices):
            resolve_device(device)
    for out in dict.fromkeys(str(Path(spec.folder).parent) for spec in specs):
        ensure_writable(out)


def prepare_data(specs: list[RunSpec], backend: str, echo: Callable[[str], None] = print) -> None:
    """Make every dataset that ``specs`` name (config fields ``dataset``, ``data_root``,
    ``download``) present once, before the runs start: found where loading looks, or
    downloaded (:func:`plasticollapse.data.prepare_dataset`). Raises
    :class:`DataUnavailableError` with one message when that cannot succeed.

    For Ray and SLURM, a dataset is prepared only when the runs may download it (the login
    node usually has the network its compute nodes lack); one the runs may not download is
    left to the workers, which may hold files this machine has not.
    """
    from plasticollapse.data import DatasetNotFoundError, prepare_dataset

    for (name, root, download), runs in datasets_needed(specs).items():
        if backend not in LOCAL_BACKENDS and not download:
            continue
        try:
            prepare_dataset(name, root)
            continue
        except DatasetNotFoundError as missing:
            if not download:
                raise DataUnavailableError(nothing_ran(name, len(runs), missing)) from None
        echo(f"sweep: {name} is not on disk: downloading it once for {plural(len(runs))}")
        try:
            prepare_dataset(name, root, download=True)
        except (OSError, ValueError) as failed:  # DownloadError, or a corrupt download
            raise DataUnavailableError(nothing_ran(name, len(runs), failed)) from None


def datasets_needed(specs: list[RunSpec]) -> dict[tuple[str, str | None, bool], list[RunSpec]]:
    """``(dataset, data_root, download) -> the runs that need it``, for configs with a
    ``dataset`` field (studies without one need no files)."""
    needed: dict[tuple[str, str | None, bool], list[RunSpec]] = {}
    for spec in specs:
        name = spec.config.get("dataset")
        if isinstance(name, str):
            key = (name, spec.config.get("data_root"), bool(spec.config.get("download")))
            needed.setdefault(key, []).append(spec)
    return needed


def nothing_ran(name: str, runs: int, error: Exception) -> str:
    """The one message of a dataset that cannot be had, with the loader's own advice."""
    need = "needs" if runs == 1 else "need"
    return f"{plural(runs)} {need} the {name} dataset, and nothing ran: {error}"


def plural(runs: int) -> str:
    """``1 run``, ``30 runs``."""
    return f"{runs} run{'s' * (runs != 1)}"


def cpu_notice(specs: list[RunSpec], backend: str) -> str:
    """One line when runs executing here will train on the CPU and their study estimates
    more than :data:`CPU_NOTICE_HOURS` of CPU time for them (its optional
    ``estimated_cpu_hours(config)``: the warm-up study's ResNet-18); "" otherwise.

    A run trains on the CPU when its device is ``cpu``, or ``auto`` on a machine where torch
    sees no GPU. Ray and SLURM workers may have GPUs this machine has not: no notice.
    """
    if backend not in LOCAL_BACKENDS:
        return ""
    todo = [spec for spec in specs if run_status(spec) != "complete"]
    all_estimates = [(spec, cpu_hours(spec)) for spec in todo]
    estimates = [
        (spec, hours) for spec, hours in all_estimates if hours is not None and on_cpu(spec)
    ]
    least = sum(hours[0] for _, hours in estimates)
    if least < CPU_NOTICE_HOURS:
        return ""
    most = sum(hours[1] for _, hours in estimates)
    from plasticollapse.runs.backends import available_cores

    cores = available_cores()
    studies = ", ".join(dict.fromkeys(spec.experiment for spec, _ in estimates))
    devices = {spec.config.get("device", "auto") for spec, _ in estimates}
    why = "no GPU here" if "auto" in devices else "device = cpu"
    return (
        f"sweep: {plural(len(estimates))} of {studies} will train on the CPU ({why}): "
        f"estimated {least:,.0f} to {most:,.0f} CPU-hours (probes of one epoch, to every "
        f"probe at finetune_max_epochs), about {duration(least / cores)} to "
        f"{duration(most / cores)} on this machine's {cores} cores. At this scale use a GPU "
        "(--device cuda, or --backend slurm --gpus 1); Ctrl-C stops, a rerun resumes."
    )


def on_cpu(spec: RunSpec) -> bool:
    """The run trains on the CPU here: device ``cpu``, or ``auto`` with no GPU."""
    device = str(spec.config.get("device", "auto"))
    if device == "auto":
        import torch

        return not torch.cuda.is_available()
    return device == "cpu"


def cpu_hours(spec: RunSpec) -> tuple[float, float] | None:
    """The study's ``estimated_cpu_hours(config)`` for the run, or None when it has none (or
    cannot be loaded here: the run itself then fails, with its traceback in its folder)."""
    try:
        estimate = getattr(load_study(spec.study), "estimated_cpu_hours", None)
        return estimate(spec.config) if estimate is not None else None
    except (ImportError, ValueError, TypeError, KeyError):
        return None


def duration(hours: float) -> str:
    """``40 min``, ``6.5 h``, ``36 days``."""
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h" if hours < 10 else f"{hours:.0f} h"
    return f"{hours / 24:,.0f} days"
