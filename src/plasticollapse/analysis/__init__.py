"""Run folders -> pandas tables -> statistics. Knows no study by name.

* :mod:`.tidy`: :func:`load_results` (the tidy long table ``run_id, experiment,
  <settings>, seed, step, metric, value``, every row a step's), :func:`load_summaries`
  (summary.json's scalars, the same columns without ``step``), :func:`load_runs` (one row
  per run), :func:`load` (all three, with each study's setting columns), :func:`wide`,
  :func:`write_results`. A study's step key and always-shown settings come from its run
  folders (config.json records them; folders written before: the registry's).
* :mod:`.frames`: settings, curves (runs x steps DataFrames) and bands of the tidy table.
* :mod:`.stats`: the one Pearson / Spearman :func:`correlate` (and :func:`correlation`
  with p-values), bootstrap intervals over seeds with ``scipy.stats.bootstrap``, sliding
  windows, correlations across runs per step and their Gaussian smoothing.
* :mod:`.ranking`: :func:`rank_metrics`, every recorded metric ranked by its correlation
  with a target (accuracy, plasticity loss), with either r definition the reports use.
* :mod:`.inference`: statistics on dependent data (detrended and lead-lag association
  within runs, prediction across runs), each an :class:`Estimate` with a seed-bootstrap
  interval and its n; :mod:`.aliases`: one canonical name per metric
  (:func:`find_aliases`).
* :mod:`.leaderboard`: :func:`predictors`, every metric of every study ranked by those
  statistics (the ``predictors`` command); :mod:`.forest`: its forest plots.

Each study's own analyses (the paper's correlations, checkpoint tables) live in its
``report`` module, e.g. :mod:`plasticollapse.studies.warmstart.report`.
"""

from __future__ import annotations

from plasticollapse.analysis.aliases import find_aliases
from plasticollapse.analysis.frames import (
    at,
    band,
    between,
    curves,
    metrics,
    paired_curves,
    same,
    setting_groups,
    summary_values,
)
from plasticollapse.analysis.inference import Estimate
from plasticollapse.analysis.leaderboard import predictors, rank_across_studies
from plasticollapse.analysis.ranking import DEFINITION_TEXT, rank_metrics
from plasticollapse.analysis.stats import (
    across_runs_partial_r,
    across_runs_r,
    bootstrap_ci,
    bootstrap_mean,
    bootstrap_over_seeds,
    correlate,
    correlation,
    gaussian_smooth,
    mean_curve_r,
    nanmean,
    p_value,
    partial_r,
    per_run_r,
    pooled_r,
    sliding_window_r,
    window_ends,
    windowed_r,
)
from plasticollapse.analysis.tidy import (
    NOT_APPLIED,
    NOT_SETTINGS,
    Results,
    as_float,
    find_runs,
    load,
    load_results,
    load_runs,
    load_summaries,
    normalise_setting,
    setting_keys_for,
    setting_label,
    sort_key,
    study_keys,
    wide,
    write_results,
)

__all__ = [
    "DEFINITION_TEXT",
    "Estimate",
    "NOT_APPLIED",
    "NOT_SETTINGS",
    "Results",
    "across_runs_partial_r",
    "across_runs_r",
    "as_float",
    "at",
    "band",
    "between",
    "bootstrap_ci",
    "bootstrap_mean",
    "bootstrap_over_seeds",
    "correlate",
    "correlation",
    "curves",
    "find_aliases",
    "find_runs",
    "gaussian_smooth",
    "load",
    "load_results",
    "load_runs",
    "load_summaries",
    "mean_curve_r",
    "metrics",
    "nanmean",
    "normalise_setting",
    "p_value",
    "partial_r",
    "paired_curves",
    "predictors",
    "per_run_r",
    "pooled_r",
    "rank_across_studies",
    "rank_metrics",
    "same",
    "setting_groups",
    "setting_keys_for",
    "setting_label",
    "sliding_window_r",
    "sort_key",
    "study_keys",
    "summary_values",
    "wide",
    "window_ends",
    "windowed_r",
    "write_results",
]
