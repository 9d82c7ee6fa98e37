"""Setup A (online Permuted MNIST), end to end on tiny digits runs.

Every run here is digits, a 16-16 MLP, a few hundred samples and 3-4 tasks: well under a
second of training each.
"""

import json
import math

import pytest
import torch

import plasticollapse.training as training
from plasticollapse import cli
from plasticollapse.engines import OnlineStats, ReferenceEngine
from plasticollapse.runs.config import ConfigError, Study, parse_study
from plasticollapse.runs.folder import RunFolder
from plasticollapse.runs.runtime import fixed_subset
from plasticollapse.studies.base import execute, plan
from plasticollapse.studies.permuted import config as permuted_config
from plasticollapse.studies.permuted import run as permuted
from plasticollapse.studies.permuted.summary import summarise_study

QUICK = "quick/permuted_digits"  # a preset name (the presets ship inside the package)

TINY = {
    "dataset": "digits",
    "hidden": (16, 16),
    "lr": 0.05,
    "tasks": 4,
    "first_task_epochs": 2,
    "train_samples": 200,
    "measure_samples": 150,
    "engine": "reference",
    "progress": False,
    "threads": 1,
}

COLLAPSE_KEYS = (
    "nc1",
    "nc1_pinv",
    "sigma_b_condition",
    "closest_pair_ratio",
    "closest_pair_a",
    "closest_pair_b",
    "nc1_quotient",
    "cdnv",
    "sigma_b_rank",
    "nc2_equinorm_means",
    "nc2_equiangularity",
    "nc2_etf_error_means",
    "nc2_equinorm_weights",
    "nc2_etf_error_weights",
    "nc3_papyan",
    "nc3_zhu",
    "nc4_agreement",
    "nc4_mismatch",
    "num_classes_present",
)
PLASTICITY_KEYS = (
    "dormant_fraction",
    "dead_fraction",
    "effective_rank",
    "srank",
    "stable_rank",
    "weight_magnitude",
)
TRAINING_KEYS = (
    "task",
    "task_epochs",
    "epoch",
    "accuracy",
    "accuracy_first_epoch",
    "accuracy_last_epoch",
    "loss",
    "pl",
)


def spec_for(out, **fields):
    (spec,) = plan("permuted", Study(permuted.Config, {**TINY, "out": str(out), **fields}, {}))
    return spec


def rows_of(spec):
    return RunFolder(spec.folder).read_metrics()


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


class SpyEngine(ReferenceEngine):
    """The reference engine, recording the inputs each pass trained on, x[:, columns], and
    the online statistics each pass returned."""

    calls: list = []
    stats: list = []

    def train(self, x, y, order, columns=None):
        inputs = x if columns is None else x[:, columns]
        SpyEngine.calls.append((inputs.clone(), y.clone(), order.clone()))
        stats = super().train(x, y, order, columns)
        SpyEngine.stats.append(stats)
        return stats


@pytest.fixture
def spy(monkeypatch):
    SpyEngine.calls = []
    SpyEngine.stats = []
    monkeypatch.setattr(
        training, "make_engine", lambda name, m, lr, bs, remedies=(): SpyEngine(m, lr, bs)
    )
    return SpyEngine.calls


# --------------------------------------------------------------------------- end to end


def test_rows_and_summary_have_every_key_in_range(tmp_path):
    spec = spec_for(tmp_path)
    assert execute(spec) == "done"
    rows = rows_of(spec)
    assert [r["task"] for r in rows] == [0, 1, 2, 3]
    assert [r["epoch"] for r in rows] == [2, 3, 4, 5]  # cumulative: task 0 took 2 epochs
    assert [r["task_epochs"] for r in rows] == [2, 1, 1, 1]
    layer_keys = [
        f"{m}_layer{k}"
        for k in (1, 2)
        for m in ("dormant_fraction", "dead_fraction", "effective_rank", "srank")
    ]
    for row in rows:
        for key in (*TRAINING_KEYS, *COLLAPSE_KEYS, *PLASTICITY_KEYS, *layer_keys, "seconds"):
            assert key in row, key
        for key in ("accuracy", "accuracy_first_epoch", "eval_accuracy", "nc4_agreement"):
            assert 0 <= row[key] <= 1, key
        assert row["nc1"] >= 0 and row["loss"] > 0 and row["seconds"] > 0
        assert math.isclose(row["pl"], rows[0]["accuracy"] - row["accuracy"])
    assert rows[0]["pl"] == 0
    assert rows[1]["accuracy"] == rows[1]["accuracy_first_epoch"]

    summary = json.loads((tmp_path / spec.run_id / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["tasks_done"] == 4
    assert summary["final_accuracy"] == rows[-1]["accuracy"]
    assert summary["final_pl"] == rows[-1]["pl"]
    assert summary["measured_tasks"] == 4
    assert -1 <= summary["r_nc1_accuracy"] <= 1
    assert math.isclose(summary["r_nc1_pl"], -summary["r_nc1_accuracy"])
    assert summary["seconds"] >= sum(r["seconds"] for r in rows) * 0.999


def test_a_seed_fixes_every_row_and_another_seed_changes_them(tmp_path):
    a, b, c = spec_for(tmp_path / "a"), spec_for(tmp_path / "b"), spec_for(tmp_path / "c", seed=1)
    for spec in (a, b, c):
        execute(spec)
    assert without_seconds(rows_of(a)) == without_seconds(rows_of(b))
    assert without_seconds(rows_of(a)) != without_seconds(rows_of(c))


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_killed_after_a_task_resumes_to_the_uninterrupted_rows(tmp_path, engine):
    reference = spec_for(tmp_path / "whole", engine=engine)
    execute(reference)
    spec = spec_for(tmp_path / "killed", engine=engine)

    def kill_at_task_2(task, model, row):
        if task == 2:
            raise KeyboardInterrupt

    folder = RunFolder.open(spec.folder, "permuted", spec.config, "cpu", spec.run_id)
    config = permuted.Config(**{**TINY, "engine": engine, "out": str(tmp_path / "killed")})
    with pytest.raises(KeyboardInterrupt):
        permuted.run(config, folder, callbacks=[kill_at_task_2])
    assert [r["task"] for r in rows_of(spec)] == [0, 1]
    # A row written after the last checkpoint (killed between the two) is dropped on resume.
    folder.append_metrics({"task": 2, "accuracy": -1.0})
    assert execute(spec) == "resumed"
    assert without_seconds(rows_of(spec)) == without_seconds(rows_of(reference))
    assert execute(spec) == "skipped"


def test_a_folder_from_before_the_remedy_fields_resumes(tmp_path):
    """A partial run written by plasticollapse 0.1 (no remedy or logger fields in its
    config.json) keeps its folder name and resumes to the uninterrupted rows."""
    reference = spec_for(tmp_path / "whole")
    execute(reference)
    spec = spec_for(tmp_path / "old")

    def kill_at_task_2(task, model, row):
        if task == 2:
            raise KeyboardInterrupt

    folder = RunFolder.open(spec.folder, "permuted", spec.config, "cpu", spec.run_id)
    with pytest.raises(KeyboardInterrupt):
        permuted.run(permuted.Config(**spec.config), folder, callbacks=[kill_at_task_2])
    record = json.loads(folder.config_path.read_text())
    late = permuted.Config.LEGACY_IDENTITY_OMITS | {"loggers"}
    record["config"] = {k: v for k, v in record["config"].items() if k not in late}
    folder.config_path.write_text(json.dumps(record))
    assert spec_for(tmp_path / "old").folder == spec.folder  # the same name as before
    assert execute(spec) == "resumed"
    assert without_seconds(rows_of(spec)) == without_seconds(rows_of(reference))


def test_killed_inside_a_multi_epoch_task_resumes_from_the_epoch(tmp_path, monkeypatch):
    reference = spec_for(tmp_path / "whole", first_task_epochs=3)
    execute(reference)
    spec = spec_for(tmp_path / "killed", first_task_epochs=3)
    real_order = permuted.sample_order

    def killed_in_epoch_2(seed, task, epoch, n):
        if (task, epoch) == (0, 2):
            raise KeyboardInterrupt
        return real_order(seed, task, epoch, n)

    monkeypatch.setattr(permuted, "sample_order", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        execute(spec)
    state = torch.load(RunFolder(spec.folder).checkpoint_path, weights_only=True)
    assert (state["task"], state["task_epoch"]) == (0, 2)
    monkeypatch.setattr(permuted, "sample_order", real_order)
    assert execute(spec) == "resumed"
    assert without_seconds(rows_of(spec)) == without_seconds(rows_of(reference))


def test_a_study_makes_one_folder_per_setting_and_seed(tmp_path):
    study = parse_study(
        permuted.Config,
        None,
        ["--dataset", "digits", "--first-task-epochs", "1", "2", "--seeds", "0", "1"],
    )
    specs = plan("permuted", study)
    assert len({s.folder for s in specs}) == 4
    names = sorted(s.run_id.rsplit("_", 1)[0] for s in specs)
    assert names == ["fte1_seed0", "fte1_seed1", "fte2_seed0", "fte2_seed1"]


def test_measure_every_skips_collapse_but_keeps_training_keys(tmp_path):
    spec = spec_for(tmp_path, tasks=5, measure_every=3)
    execute(spec)
    rows = rows_of(spec)
    assert [("nc1" in r) for r in rows] == [True, False, False, True, True]  # and the last
    for row in rows:
        assert all(k in row for k in (*TRAINING_KEYS, "seconds"))


def test_callbacks_add_keys_to_the_rows(tmp_path):
    spec = spec_for(tmp_path, tasks=2)
    folder = RunFolder.open(spec.folder, "permuted", spec.config, "cpu", spec.run_id)
    config = permuted.Config(**{**TINY, "tasks": 2, "out": str(tmp_path)})

    def in_place(task, model, row):
        row["twice_task"] = 2 * task

    def returned(task, model, row):
        return {"n_params": sum(p.numel() for p in model.parameters())}

    permuted.run(config, folder, callbacks=[in_place, returned])
    rows = rows_of(spec)
    assert [r["twice_task"] for r in rows] == [0, 2]
    assert rows[0]["n_params"] == 64 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10


def test_nc1_threshold_stops_the_first_task_early_or_at_the_cap(tmp_path):
    easy = spec_for(tmp_path, tasks=2, first_task_epochs=3, nc1_threshold=1e9)
    hard = spec_for(tmp_path, tasks=2, first_task_epochs=3, nc1_threshold=1e-9)
    assert easy.run_id.startswith("fte3_nc1lt1e+09_")
    for spec in (easy, hard):
        execute(spec)
    first_easy, first_hard = rows_of(easy)[0], rows_of(hard)[0]
    assert first_easy["task_epochs"] == 1 and first_easy["nc1_threshold_reached"] is True
    assert first_hard["task_epochs"] == 3 and first_hard["nc1_threshold_reached"] is False
    assert rows_of(hard)[1]["epoch"] == 4


def test_divergence_stops_cleanly_and_keeps_the_rows(tmp_path, monkeypatch):
    class Diverging(ReferenceEngine):
        passes = 0

        def train(self, x, y, order, columns=None):
            Diverging.passes += 1
            stats = super().train(x, y, order, columns)
            if Diverging.passes == 3:  # task 1's only epoch
                return OnlineStats(stats.correct, stats.count, float("nan"))
            return stats

    monkeypatch.setattr(
        training, "make_engine", lambda name, m, lr, bs, remedies=(): Diverging(m, lr, bs)
    )
    spec = spec_for(tmp_path)
    assert execute(spec) == "diverged"  # the sweep says so (exit status 4)
    summary = RunFolder(spec.folder).read_summary()
    assert summary["status"] == "diverged" and summary["tasks_done"] == 1
    assert summary["diverged"]["metric"] == "loss" and summary["diverged"]["epoch"] == 3
    assert [r["task"] for r in rows_of(spec)] == [0]


# --------------------------------------------------------------------------- the task stream


def test_permutations_compose_and_a_seed_fixes_them():
    dim = 64
    q = [permuted.fresh_permutation(7, t, dim) for t in range(4)]
    composed = [permuted.pixel_permutation(7, t, dim, "composed") for t in range(4)]
    assert torch.equal(composed[0], q[0])  # P_0 = Q_0: task 0 is permuted too
    for t in range(1, 4):
        assert torch.equal(composed[t], composed[t - 1][q[t]])  # P_t = P_{t-1}[Q_t]
        assert torch.equal(permuted.pixel_permutation(7, t, dim, "independent"), q[t])
    for p in composed:
        assert torch.equal(p.sort().values, torch.arange(dim))
    assert torch.equal(permuted.pixel_permutation(7, 3, dim, "composed"), composed[3])
    assert not torch.equal(permuted.pixel_permutation(8, 3, dim, "composed"), composed[3])
    assert len({tuple(p.tolist()) for p in composed}) == 4


def test_each_task_permutes_every_sample_alike_and_reshuffles_the_order(tmp_path, spy):
    spec = spec_for(tmp_path, tasks=3, first_task_epochs=2, seed=3)
    execute(spec)
    assert len(spy) == 4  # 2 epochs of task 0, then one per task
    from plasticollapse.data import load_dataset

    x, y = load_dataset("digits").flat("train")
    subset = fixed_subset(3, "train_samples", len(y), TINY["train_samples"])
    x, y = x[subset], y[subset]
    tasks = [0, 0, 1, 2]
    for (x_t, y_t, _), task in zip(spy, tasks, strict=True):
        perm = permuted.pixel_permutation(3, task, x.shape[1], "composed")
        assert torch.equal(x_t, x[:, perm]) and torch.equal(y_t, y)
    assert torch.equal(spy[0][0], spy[1][0])  # one permutation for all epochs of a task
    orders = [tuple(o.tolist()) for _, _, o in spy]
    assert len(set(orders)) == 4  # a fresh sample order every epoch and task
    assert all(sorted(o) == list(range(len(y))) for o in orders)


def test_authors_protocol_one_order_per_task_and_mean_accuracy(tmp_path, spy):
    spec = spec_for(
        tmp_path, tasks=3, first_task_epochs=3, sample_order="per_task", task_accuracy="mean"
    )
    execute(spec)
    orders = [tuple(o.tolist()) for _, _, o in spy]
    assert orders[0] == orders[1] == orders[2]  # task 0's three epochs: one shuffle
    assert len(set(orders)) == 3  # but each task its own
    rows = rows_of(spec)
    first = SpyEngine.stats[:3]
    assert rows[0]["accuracy"] == pytest.approx(sum(s.accuracy for s in first) / 3, abs=1e-15)
    assert rows[0]["loss"] == pytest.approx(sum(s.loss for s in first) / 3, rel=1e-12)
    assert rows[0]["accuracy_first_epoch"] == first[0].accuracy
    assert rows[0]["accuracy_last_epoch"] == first[2].accuracy
    assert rows[0]["accuracy"] != rows[0]["accuracy_last_epoch"]  # the choice matters here
    for row, stats in zip(rows[1:], SpyEngine.stats[3:], strict=True):  # one-epoch tasks
        assert row["accuracy"] == row["accuracy_last_epoch"] == stats.accuracy
        assert row["pl"] == pytest.approx(rows[0]["accuracy"] - stats.accuracy, abs=1e-15)


def test_default_protocol_takes_the_last_epoch_and_reshuffles(tmp_path, spy):
    spec = spec_for(tmp_path, tasks=2, first_task_epochs=3)
    execute(spec)
    assert len({tuple(o.tolist()) for _, _, o in spy}) == 4
    first = rows_of(spec)[0]
    assert first["accuracy"] == first["accuracy_last_epoch"] == SpyEngine.stats[2].accuracy
    assert first["loss"] == SpyEngine.stats[2].loss


def test_new_protocol_fields_at_their_defaults_keep_old_run_folders():
    from plasticollapse.runs.identity import config_hash

    config = permuted.Config(dataset="digits", first_task_epochs=5)
    old_style = {"task_accuracy", "sample_order", "threshold_metric"}
    assert old_style <= permuted.Config.LEGACY_IDENTITY_OMITS
    changed = permuted.Config(dataset="digits", first_task_epochs=5, task_accuracy="mean")
    assert config_hash(changed) != config_hash(config)


@pytest.mark.parametrize(("metric", "epochs"), [("nc1_pinv", 1), ("nc1", 3)])
def test_threshold_metric_picks_the_nc1_convention_that_stops_task_0(
    tmp_path, monkeypatch, metric, epochs
):
    # A network whose exact NC1 spikes (1.0) while the authors' convention reads 0.1.
    real_measure = permuted.measure

    def measured(*args, **kwargs):
        return {**real_measure(*args, **kwargs), "nc1": 1.0, "nc1_pinv": 0.1}

    monkeypatch.setattr(permuted, "measure", measured)
    spec = spec_for(
        tmp_path, tasks=2, first_task_epochs=3, nc1_threshold=0.5, threshold_metric=metric
    )
    execute(spec)
    first = rows_of(spec)[0]
    assert first["task_epochs"] == epochs
    assert first["nc1_threshold_reached"] is (metric == "nc1_pinv")


# --------------------------------------------------------------------------- config and CLI


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tasks", 0, "tasks must be an integer >= 1"),
        ("lr", -1.0, "lr must be"),
        ("permutation", "shuffled", "permutation must be one of composed, independent"),
        ("measure_every", 0, "measure_every must be >= 1"),
        ("nc1_threshold", 0.0, "nc1_threshold must be > 0"),
        ("hidden", (), "hidden must be"),
        ("task_accuracy", "best", "task_accuracy must be one of last, mean"),
        ("sample_order", "random", "sample_order must be one of per_epoch, per_task"),
        ("threshold_metric", "nc2", "threshold_metric must be one of nc1, nc1_pinv"),
    ],
)
def test_bad_fields_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        permuted.Config(**{field: value})


def test_run_label():
    assert permuted_config.run_label(permuted.Config(first_task_epochs=5)) == "fte5"
    assert permuted_config.run_label(permuted.Config(nc1_threshold=0.2)) == "fte1_nc1lt0.2"


def test_cli_runs_the_quick_preset_shortened(tmp_path, capsys):
    argv = ["permuted", "--config", str(QUICK), "--tasks", "2"]
    argv += ["--seeds", "0", "--first-task-epochs", "1", "--train-samples", "100"]
    argv += ["--hidden", "8", "8", "--engine", "reference", "--out", str(tmp_path)]
    argv += ["--progress", "false", "--threads", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "1 permuted run(s)" in out and "fte1" in out
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (run / "summary.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "0"], "tasks"),
        (["--permutation", "shuffled"], "composed"),
        (["--dataset", "imagenet"], "digits"),
        (["--no-such-field", "1"], "unknown field"),
    ],
)
def test_cli_bad_fields_exit_2_with_a_message(argv, message, capsys):
    assert cli.main(["permuted", *argv]) == 2
    assert message in capsys.readouterr().err


def test_summarise_study_reports_each_setting(tmp_path):
    specs = [spec_for(tmp_path, tasks=3, first_task_epochs=e) for e in (1, 2)]
    for spec in specs:
        execute(spec)
    text = summarise_study(specs)
    assert "fte1" in text and "fte2" in text and "complete" in text and "r(NC1, acc)" in text


def test_the_reference_engine_trains_on_the_permuted_columns_bit_for_bit():
    from plasticollapse.models import MLP

    x, y = torch.rand(40, 12), torch.arange(40) % 3
    perm, order = torch.randperm(12), torch.randperm(40)

    def trained(data, columns):
        torch.manual_seed(0)
        model = MLP(12, (8,), 3)
        stats = ReferenceEngine(model, 0.1, batch_size=4).train(data, y, order, columns)
        return stats, [p.detach().clone() for p in model.parameters()]

    stats_a, params_a = trained(x, perm)  # the engine gathers each batch's columns
    stats_b, params_b = trained(x[:, perm], None)  # the task's data built beforehand
    assert stats_a == stats_b
    assert all(torch.equal(p, q) for p, q in zip(params_a, params_b, strict=True))


def test_permute_pixels_is_column_indexing():
    x = torch.rand(7, 12)
    perm = torch.randperm(12)
    assert torch.equal(permuted.permute_pixels(x, perm), x[:, perm])


def test_measuring_reads_unpermuted_pixels_through_the_first_layer():
    # x[:, P] W^T = x (W[:, P^-1])^T: the copy computes on x what the model does on x[:, P],
    # and measure(..., columns=P) equals measuring on x[:, P] up to float rounding.
    from plasticollapse.models import MLP

    torch.manual_seed(0)
    model = MLP(20, (16, 12), 4)
    x, y = torch.rand(300, 20), torch.arange(300) % 4
    perm = torch.randperm(20)
    before = model.hidden_linears[0].weight.detach().clone()
    twin = permuted.reading_unpermuted(model, perm)
    assert torch.equal(model.hidden_linears[0].weight, before)  # the model is left alone
    with torch.no_grad():
        assert torch.allclose(twin(x), model(x[:, perm]), rtol=1e-5, atol=1e-6)
    want = permuted.measure(model, x[:, perm], y, 4)
    got = permuted.measure(model, x, y, 4, columns=perm)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), key


def test_paper_presets_set_the_authors_protocol():
    study = parse_study(permuted.Config, "paper/permuted_mnist", [])
    for config in study.expand():
        assert (config.sample_order, config.task_accuracy) == ("per_task", "mean")
    threshold = parse_study(permuted.Config, "paper/permuted_nc_threshold", []).expand()
    assert len(threshold) == 15
    assert {c.nc1_threshold for c in threshold} == {0.22, 0.2, 0.18}
    assert {c.seed for c in threshold} == {1, 2, 3, 4, 5}
    for config in threshold:
        assert config.threshold_metric == "nc1_pinv" and config.tasks == 150
        assert config.first_task_epochs >= 1000  # a safety cap only
