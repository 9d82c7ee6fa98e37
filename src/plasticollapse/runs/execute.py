"""Execute one :class:`~plasticollapse.runs.spec.RunSpec`: skip it when complete, resume it
when partial, and keep a failure's traceback in its folder.

The study is the spec's own ``"module:attribute"`` target (:func:`~plasticollapse.runs.spec.
study_of`), so this runs in any worker process without the registry.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from plasticollapse.runs.config import from_dict
from plasticollapse.runs.folder import RunFolder
from plasticollapse.runs.identity import run_identity, setting_fields
from plasticollapse.runs.spec import RunnableStudy, RunSpec, run_status, study_of


def execute(spec: RunSpec, threads: int | None = None) -> str:
    """Run one spec to completion. Returns ``skipped`` (it was complete), ``resumed``,
    ``done``, or ``diverged`` (it ended with summary status ``diverged``).

    ``threads`` is the thread count for a run whose config leaves ``threads`` at 0 (sweep
    backends use it to keep workers x threads within the machine's cores); a config that
    sets ``threads`` gets exactly that. The count used is what config.json records, beside
    :func:`reading_keys` (so a folder says how to read its own rows).
    """
    import torch

    experiment = study_of(spec)
    config: Any = from_dict(experiment.Config, spec.config)  # the study's own Config
    status = run_status(spec)
    if status == "complete":
        return "skipped"
    n_threads = config.threads if config.threads > 0 else threads
    if n_threads and n_threads > 0:
        torch.set_num_threads(n_threads)
        os.environ["NUMBA_NUM_THREADS"] = str(n_threads)
    used = torch.get_num_threads()
    if config.threads != used:
        config = dataclasses.replace(config, threads=used)
    folder = RunFolder.open(
        spec.folder,
        spec.experiment,
        {**spec.config, "threads": used},
        device=str(config.device),
        run_id=spec.run_id,
        step_key=experiment.step_key,
        identity=lambda data: run_identity(from_dict(experiment.Config, data)),
        keys=reading_keys(experiment, config),
    )
    try:
        summary = experiment.run(config, folder)
    except BaseException as exc:
        folder.write_error(exc)
        raise
    finally:
        folder.close()
    folder.write_summary(summary)
    if summary.get("status") == "diverged":
        return "diverged"
    return "resumed" if status == "partial" else "done"


def reading_keys(experiment: RunnableStudy, config: Any) -> dict[str, Any]:
    """What the tidy table needs to read a run's folder without asking its study: the
    metrics.jsonl key that orders its rows (``step_key``), the fields that always label its
    setting (``setting_keys``), and those that may (``setting_fields``,
    :func:`~plasticollapse.runs.identity.setting_fields`)."""
    return {
        "step_key": experiment.step_key,
        "setting_keys": list(experiment.setting_keys),
        "setting_fields": setting_fields(config),
    }
