"""Setup B end to end on digits with tiny networks: rows, schemes, resume, divergence."""

import copy
import math

import pytest
import torch

from plasticollapse.metrics.plasticity import batch_statistics, has_batchnorm
from plasticollapse.runs.config import ConfigError, parse_study
from plasticollapse.runs.folder import RunFolder
from plasticollapse.studies.base import execute, plan, run_id
from plasticollapse.studies.warmstart import STUDY
from plasticollapse.studies.warmstart import config as ws_config
from plasticollapse.studies.warmstart import run as ws_run
from plasticollapse.studies.warmstart import training as ws_training
from plasticollapse.studies.warmstart.summary import summarise_study

TINY = dict(
    dataset="digits",
    model="mlp",
    hidden=(16,),
    train_samples=200,
    warmup_epochs=4,
    checkpoint_every=2,
    lr=0.05,
    batch_size=32,
    finetune_max_epochs=2,
    device="cpu",
    amp=False,
    progress=False,
    seed=3,
)

ROW_KEYS = (
    "epoch",
    "warmup_loss",
    "warmup_train_acc",
    "warmup_train_loss",
    "warmup_test_acc",
    "nc1",
    "nc1_quotient",
    "cdnv",
    "nc3_papyan",
    "nc4_agreement",
    "dormant_fraction",
    "effective_rank",
    "weight_magnitude",
    "full_test_acc",
    "finetune_epochs",
    "finetune_train_acc",
    "seconds",
)


def make_config(tmp_path, **overrides):
    return ws_config.Config(**{**TINY, "out": str(tmp_path), **overrides})


def open_folder(config):
    folder_path = f"{config.out}/{run_id(STUDY, config)}"
    from plasticollapse.runs.config import to_dict

    return RunFolder.open(folder_path, "warmstart", to_dict(config), "cpu", "test")


def run_whole(config, callbacks=()):
    folder = open_folder(config)
    summary = ws_run.run(config, folder, callbacks=callbacks)
    folder.write_summary(summary)
    return folder.read_metrics(), summary


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("scheme", ws_config.SCHEMES)
def test_every_scheme_runs_end_to_end(tmp_path, scheme):
    rows, summary = run_whole(make_config(tmp_path, scheme=scheme))
    assert [r["epoch"] for r in rows] == [2, 4]
    for row in rows:
        missing = [k for k in ROW_KEYS if k not in row]
        assert not missing, missing
        for key in ("warmup_train_acc", "warmup_test_acc", "full_test_acc", "nc4_agreement"):
            assert 0.0 <= row[key] <= 1.0, (key, row[key])
        assert row["nc1"] >= 0 and math.isfinite(row["nc1"])
        assert 1 <= row["finetune_epochs"] <= 2
        # Only ReDo and CBP add their counts, and they count units (16 hidden), not weights.
        assert ("redo_units_reset" in row) == (scheme == "redo")
        assert row.get("redo_units_reset", 0) in range(17)
        assert ("cbp_units_replaced" in row) == (scheme == "cbp")
        assert row.get("cbp_units_replaced", 0) in range(17)
    assert summary["status"] == "complete" and summary["checkpoints"] == 2
    assert 0.0 <= summary["fresh_full_test_acc"] <= 1.0
    assert 1 <= summary["fresh_finetune_epochs"] <= 2
    assert summary["final_nc1"] == rows[-1]["nc1"]
    assert summary["warmstart_gap"] == pytest.approx(
        rows[-1]["full_test_acc"] - summary["fresh_full_test_acc"]
    )
    assert "r_nc1_full_test_acc" in summary and summary["seconds"] > 0


def test_fresh_probe_is_shared_by_schemes_and_sp_changes_only_the_probe(tmp_path):
    _, plain = run_whole(make_config(tmp_path / "a"))
    rows_p, _ = run_whole(make_config(tmp_path / "a"))  # rerun in a complete folder: same
    rows_sp, sp = run_whole(make_config(tmp_path / "b", scheme="shrink_perturb"))
    assert plain["fresh_full_test_acc"] == sp["fresh_full_test_acc"]
    # The S&P warm-up is the plain one; only the probes differ.
    for a, b in zip(rows_p, rows_sp, strict=True):
        assert a["nc1"] == b["nc1"] and a["warmup_test_acc"] == b["warmup_test_acc"]
    assert [a["full_test_acc"] for a in rows_p] != [b["full_test_acc"] for b in rows_sp] or [
        a["finetune_train_acc"] for a in rows_p
    ] != [b["finetune_train_acc"] for b in rows_sp]


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at", [2, 4, 6, 8, 10])
def test_a_killed_run_resumes_to_the_uninterrupted_rows(tmp_path, monkeypatch, kill_at):
    """Calls of train_epoch: fresh probe 1-2, warm-up 3-4, probe@2 5-6, warm-up 7-8,
    probe@4 9-10; so kills land inside the fresh probe, the warm-up, between checkpoints,
    and inside a checkpoint's probe (after its first epoch was saved)."""
    reference, _ = run_whole(make_config(tmp_path / "whole"))
    config = make_config(tmp_path / "killed")
    real = ws_training.train_epoch
    calls = []

    def killing(*args, **kwargs):
        calls.append(1)
        if len(calls) == kill_at:
            raise Killed
        return real(*args, **kwargs)

    for module in (ws_run, ws_training):  # the warm-up and the probe
        monkeypatch.setattr(module, "train_epoch", killing)
    folder = open_folder(config)
    with pytest.raises(Killed):
        ws_run.run(config, folder)
    state = torch.load(folder.checkpoint_path, weights_only=True)
    if kill_at in (6, 10):  # inside a checkpoint's probe, with its first epoch saved
        assert state["probe"]["tag"] == {6: 2, 10: 4}[kill_at]
        assert state["probe"]["epochs"] == 1
    if kill_at == 2:
        assert state["probe"]["tag"] == "fresh"
    monkeypatch.undo()
    rows, summary = run_whole(config)
    assert without_seconds(rows) == without_seconds(reference)
    assert summary["status"] == "complete"


def test_a_kill_in_a_callback_then_resume_via_execute(tmp_path):
    reference, _ = run_whole(make_config(tmp_path / "whole"))
    study = parse_study(
        ws_config.Config,
        None,
        [
            f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
            for k, v in {**TINY, "out": str(tmp_path / "cli")}.items()
        ],
    )
    (spec,) = plan("warmstart", study)

    def kill_at_second_checkpoint(epoch, model, row):
        if epoch == 4:
            raise KeyboardInterrupt

    config = ws_config.Config(**{**TINY, "out": str(tmp_path / "cli")})
    folder = RunFolder.open(spec.folder, "warmstart", spec.config, "cpu", spec.run_id)
    with pytest.raises(KeyboardInterrupt):
        ws_run.run(config, folder, callbacks=[kill_at_second_checkpoint])
    assert [r["epoch"] for r in folder.read_metrics()] == [2]
    folder.append_metrics({"epoch": 4, "nc1": -1.0})  # a row after the checkpoint is dropped
    assert execute(spec) == "resumed"
    assert without_seconds(folder.read_metrics()) == without_seconds(reference)
    assert execute(spec) == "skipped"
    text = summarise_study([spec])
    assert "plain" in text and "fresh-init" in text


def test_divergence_from_a_huge_lr_is_recorded_and_ends_cleanly(tmp_path):
    rows, summary = run_whole(make_config(tmp_path, lr=1e8, finetune_max_epochs=1))
    assert summary["status"] == "diverged"
    assert rows[-1]["diverged"] is True and rows[-1]["diverged_metric"] == "loss"
    assert summary["diverged"]["epoch"] == rows[-1]["epoch"]
    assert summary["fresh_full_test_acc"] is not None


def test_divergence_keeps_the_rows_measured_before_it(tmp_path):
    def poison_after_first_checkpoint(epoch, model, row):
        if epoch == 2:
            with torch.no_grad():
                model.classifier.weight.fill_(float("nan"))

    rows, summary = run_whole(
        make_config(tmp_path, warmup_epochs=6), callbacks=[poison_after_first_checkpoint]
    )
    assert [r["epoch"] for r in rows] == [2, 3]
    assert "nc1" in rows[0] and rows[1]["diverged"] is True
    assert summary["status"] == "diverged" and summary["checkpoints"] == 1


def test_resnet18_path_runs_on_tiny_images(tmp_path):
    rows, summary = run_whole(
        make_config(
            tmp_path,
            model="resnet18",
            width=4,
            maxpool=False,
            train_samples=64,
            warmup_epochs=1,
            checkpoint_every=1,
            finetune_max_epochs=1,
            augment=True,
        )
    )
    assert len(rows) == 1 and 0 <= rows[0]["full_test_acc"] <= 1
    assert summary["status"] == "complete"


def test_redo_recycles_resnet18_block_channels_at_each_checkpoint(tmp_path):
    # width 4: the blocks' inner channels are 4, 4, 8, 8, 16, 16, 32, 32 (120 units); at
    # tau 0.5 some fall below half their layer's mean |h| and are recycled.
    config = make_config(
        tmp_path,
        model="resnet18",
        width=4,
        maxpool=False,
        train_samples=64,
        warmup_epochs=2,
        checkpoint_every=1,
        finetune_max_epochs=1,
        scheme="redo",
        redo_tau=0.5,
    )
    rows, summary = run_whole(config)
    assert summary["status"] == "complete"
    resets = [row["redo_units_reset"] for row in rows]
    assert len(resets) == 2 and all(0 < n <= 120 for n in resets), resets


def test_augment_batch_crops_and_flips_per_sample():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    pad = 2
    centre = torch.full((2,), pad)
    same = ws_training.augment_batch(x, centre, centre, torch.tensor([False, True]), pad)
    assert torch.equal(same[0], x[0]) and torch.equal(same[1], x[1].flip(2))
    shifted = ws_training.augment_batch(
        x, torch.tensor([0, 4]), torch.tensor([0, 4]), torch.zeros(2, dtype=torch.bool), pad
    )
    assert torch.equal(shifted[0, 0, 2:, 2:], x[0, 0, :2, :2])
    assert torch.count_nonzero(shifted[0, 0, :2]) == 0
    assert torch.equal(shifted[1, 0, :2, :2], x[1, 0, 2:, 2:])


def test_config_rules_and_labels():
    with pytest.raises(ConfigError, match="weight_decay"):
        ws_config.Config(scheme="weight_decay", weight_decay=0.0)
    with pytest.raises(ConfigError, match="checkpoint_every"):
        ws_config.Config(warmup_epochs=3, checkpoint_every=5)
    assert ws_config.Config(scheme="weight_decay").warmup_weight_decay == 0.01
    assert ws_config.Config().warmup_weight_decay == 0.0
    assert (
        ws_config.run_label(ws_config.Config(scheme="weight_decay", weight_decay=0.1))
        == "weight_decay_wd0.1"
    )
    assert ws_config.run_label(ws_config.Config(scheme="shrink_perturb")) == "shrink_perturb"
    assert ws_config.run_label(ws_config.Config(scheme="l2_init", weight_decay=0.001)) == (
        "l2_init_wd0.001"
    )
    combined = ws_config.Config(remedies=("shrink_perturb", "l2_init"))
    assert ws_config.run_label(combined) == "shrink_perturb+l2_init"
    study = parse_study(ws_config.Config, "paper/warmstart_cifar10", [])
    configs = study.expand()
    assert len(configs) == 15 and {c.scheme for c in configs} == {
        "plain",
        "shrink_perturb",
        "nc1_reg",
    }
    quick = parse_study(ws_config.Config, "quick/warmstart_digits", []).expand()
    # The preset's six schemes (its rows are a baseline; later remedies are not in it).
    assert {c.scheme for c in quick} <= set(ws_config.SCHEMES) and len(quick) == 12


# --------------------------------------------------------------------------- BatchNorm modes


def tiny_resnet():
    from plasticollapse.models import ResNet18

    torch.manual_seed(0)
    model = ResNet18(10, in_channels=1, width=4, maxpool=False)
    model.train()
    with torch.no_grad():  # running statistics that differ from any one batch's
        for _ in range(3):
            model(torch.randn(16, 1, 8, 8) * 2 + 1)
    return model


def test_batch_statistics_normalise_by_the_batch_and_leave_running_stats_alone():
    model = tiny_resnet().eval()
    buffers = {
        k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_b" in k
    }
    x = torch.randn(12, 1, 8, 8)
    twin = copy.deepcopy(model).train()  # train mode: batch statistics
    with torch.no_grad():
        want = twin(x)
        eval_mode = model(x)
        with batch_statistics(model):
            got = model(x)
        after = model(x)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, eval_mode, atol=1e-3)  # the two modes really differ
    assert torch.equal(after, eval_mode)  # restored on exit
    for key, value in buffers.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert has_batchnorm(model) and not has_batchnorm(torch.nn.Linear(2, 2))


def test_bn_batch_keys_measure_batches_of_batch_size_in_a_seeded_order(tmp_path):
    from plasticollapse.metrics.collapse import collapse_metrics

    config = make_config(tmp_path, model="resnet18", width=4, maxpool=False, batch_size=8)
    model = tiny_resnet().eval()
    x, y = torch.randn(40, 1, 8, 8), torch.arange(40) % 10
    tensors = ws_training.Tensors(x, y, x, y, x[:4], y[:4], 10)
    row = ws_run.measure_features(model, tensors, config, epoch=6)
    # brute force: the same order, each batch of 8 through a train-mode copy
    order = torch.randperm(40, generator=ws_run.generator_for(config.seed, "bn_batch", 6))
    twin = copy.deepcopy(model).train()
    feats = []
    twin.classifier.register_forward_pre_hook(lambda _m, a: feats.append(a[0]))
    with torch.no_grad():
        for start in range(0, 40, 8):
            twin(x[order][start : start + 8])
    want = collapse_metrics(torch.cat(feats), y[order], 10)
    assert row["nc1_bn_batch"] == pytest.approx(want["nc1"], rel=1e-5)
    assert row["nc1_pinv_bn_batch"] == pytest.approx(want["nc1_pinv"], rel=1e-5)
    assert row["nc1_bn_batch"] != pytest.approx(row["nc1"], rel=1e-3)
    assert "warmup_train_acc_bn_batch" in row and "weight_magnitude_bn_batch" not in row


def test_shrink_perturb_rows_record_nc1_after_shrinking_and_resnets_both_bn_modes(tmp_path):
    resnet = dict(model="resnet18", width=4, maxpool=False, train_samples=64)
    resnet.update(warmup_epochs=2, checkpoint_every=2, finetune_max_epochs=1)
    rows, _ = run_whole(make_config(tmp_path / "sp", scheme="shrink_perturb", **resnet))
    (row,) = rows
    for key in ("nc1_after_sp", "nc1_pinv_after_sp", "nc1_after_sp_bn_batch", "nc1_bn_batch"):
        assert math.isfinite(row[key]), key
    assert row["nc1_after_sp"] != row["nc1"]  # shrinking moves the features
    plain, _ = run_whole(make_config(tmp_path / "plain", **resnet))
    assert "nc1_after_sp" not in plain[0] and "nc1_bn_batch" in plain[0]
    mlp, _ = run_whole(make_config(tmp_path / "mlp", scheme="shrink_perturb"))
    assert "nc1_after_sp" in mlp[0] and not any(k.endswith("_bn_batch") for k in mlp[0])


def test_nc1_after_sp_is_nc1_of_the_probes_start(tmp_path):
    from plasticollapse.metrics.measure import measure_model

    config = make_config(tmp_path, scheme="shrink_perturb")
    captured = {}

    def keep(epoch, model, row):
        captured[epoch] = copy.deepcopy(model)

    rows, _ = run_whole(config, callbacks=[keep])
    tensors = ws_training.load_tensors(config, torch.device("cpu"))
    remedies = ws_run.build_remedies(config)
    for remedy in remedies:
        remedy.bind(captured[2], ws_run.RemedyContext(seed=config.seed, num_classes=10))
    start = ws_training.probe_start(captured[2], remedies, 2)
    want = measure_model(start, tensors.warmup_x, tensors.warmup_y, 10)["nc1"]
    assert rows[0]["nc1_after_sp"] == pytest.approx(want, rel=1e-9)


def test_paper_preset_is_float32_like_the_authors():
    study = parse_study(ws_config.Config, "paper/warmstart_cifar10", [])
    assert all(c.amp is False for c in study.expand())
