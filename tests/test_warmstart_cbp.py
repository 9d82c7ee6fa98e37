"""Continual Backprop in the warm start: on the ResNet-18's block channels, every warm-up
step, counted in the rows, resumed exactly after a kill, and probes left plain."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_warmstart import Killed, make_config, open_folder, run_whole, without_seconds

from plasticollapse.models import ResNet18
from plasticollapse.remedies import RemedyContext, build_remedies
from plasticollapse.remedies.layer_pairs import remove_recorder_hooks
from plasticollapse.remedies.pair_remedies import LayerPairContinualBackprop, on_layer_pairs
from plasticollapse.studies.warmstart import run as ws_run
from plasticollapse.studies.warmstart import training as ws_training

# Width 2: inner channels 2, 2, 4, 4, 8, 8, 16, 16 (60 units). 32 warm-up images in
# batches of 16 are 2 steps per epoch; maturity 2 makes units eligible from step 3 on.
CBP_RESNET = dict(
    model="resnet18",
    width=2,
    maxpool=False,
    train_samples=64,
    batch_size=16,
    warmup_epochs=3,
    checkpoint_every=1,
    finetune_max_epochs=1,
    remedies=("cbp",),
    cbp_replacement_rate=0.05,
    cbp_maturity=2,
)


def test_cbp_replaces_resnet_channels_and_a_killed_run_resumes_to_the_same_rows(
    tmp_path, monkeypatch
):
    """train_epoch calls: fresh probe 1, then per checkpoint e: warm-up 2e, probe 2e + 1.
    The kill at call 6 (warm-up epoch 3) resumes from the row of epoch 2, whose
    checkpoint holds the CBP state mid-run (ages, utilities, the stream's position)."""
    reference, summary = run_whole(make_config(tmp_path / "whole", **CBP_RESNET))
    assert summary["status"] == "complete"
    replaced = [row["cbp_units_replaced"] for row in reference]
    assert replaced[0] == 0  # no unit is older than 2 steps in epoch 1
    assert sum(replaced) > 0 and all(0 <= n <= 60 for n in replaced), replaced
    assert summary["cbp_units_replaced"] == sum(replaced)
    config = make_config(tmp_path / "killed", **CBP_RESNET)
    real, calls = ws_training.train_epoch, []

    def killing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise Killed
        return real(*args, **kwargs)

    for module in (ws_run, ws_training):
        monkeypatch.setattr(module, "train_epoch", killing)
    with pytest.raises(Killed):
        ws_run.run(config, open_folder(config))
    monkeypatch.undo()
    rows, _ = run_whole(config)
    assert without_seconds(rows) == without_seconds(reference)


def bound_cbp(model, **fields):
    config = make_config("unused", **{**CBP_RESNET, **fields})
    (remedy,) = on_layer_pairs(build_remedies(config))
    assert isinstance(remedy, LayerPairContinualBackprop)
    remedy.bind(model, RemedyContext(seed=config.seed, num_classes=10))
    return remedy


def buffer(optimizer, param):
    return optimizer.state[param]["momentum_buffer"]


def test_a_cbp_step_renews_replaced_channels_and_changes_nothing_else():
    """Right after the step's generate-and-test: each replaced inner channel has a fresh
    conv1 filter in U(-b, b), b = sqrt(2) sqrt(3 / fan_in), BatchNorm weight 1, bias 0,
    running mean 0 and variance 1, conv2 weights 0 that read it and their momentum 0; every
    other number is the SGD step's. So the network computes what the updated one computes
    with those outgoing weights zeroed."""
    torch.manual_seed(0)
    model = ResNet18(num_classes=10, in_channels=1, width=2, maxpool=False)
    remedy = bound_cbp(model, cbp_replacement_rate=0.5, cbp_maturity=0)
    hooks = ws_training.StepHooks(model, [remedy])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    model.train()
    logits, features, hidden = hooks.forward(x)
    assert hidden is None  # the ResNet's activations reach CBP through its own hooks
    loss = hooks.objective(F.cross_entropy(logits, y), logits, features, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    updated = copy.deepcopy(model.state_dict())
    momentum = {n: buffer(optimizer, p).clone() for n, p in model.named_parameters()}
    hooks.after_update(optimizer, 0, hidden)
    # rate 0.5 of the C eligible units (age 1 > maturity 0)
    assert remedy.pairs.replaced.tolist() == [1, 1, 2, 2, 4, 4, 8, 8]
    touched = set()
    for k, block in enumerate(model.stages):
        prefix = f"stages.{k}"
        changed = (block.conv1.weight != updated[f"{prefix}.conv1.weight"]).flatten(1).any(1)
        units = changed.nonzero().flatten()
        assert len(units) == remedy.pairs.replaced[k]
        bound = math.sqrt(2) * math.sqrt(3 / block.conv1.weight[0].numel())
        assert float(block.conv1.weight[units].detach().abs().max()) <= bound
        assert torch.equal(block.bn1.weight[units], torch.ones(len(units)))
        assert torch.equal(block.bn1.bias[units], torch.zeros(len(units)))
        assert torch.equal(block.bn1.running_mean[units], torch.zeros(len(units)))
        assert torch.equal(block.bn1.running_var[units], torch.ones(len(units)))
        assert torch.count_nonzero(block.conv2.weight[:, units]) == 0
        for name in ("conv1.weight", "bn1.weight", "bn1.bias"):
            param = model.get_parameter(f"{prefix}.{name}")
            assert torch.count_nonzero(buffer(optimizer, param)[units]) == 0
        assert torch.count_nonzero(buffer(optimizer, block.conv2.weight)[:, units]) == 0
        touched |= {f"{prefix}.{n}" for n in ("conv1.weight", "bn1.weight", "bn1.bias")}
        touched |= {f"{prefix}.{n}" for n in ("bn1.running_mean", "bn1.running_var")}
        touched.add(f"{prefix}.conv2.weight")
        updated[f"{prefix}.conv2.weight"][:, units] = 0.0
    for name, value in model.state_dict().items():
        if name not in touched:
            assert torch.equal(value, updated[name]), name
            if name in momentum:
                assert torch.equal(buffer(optimizer, model.get_parameter(name)), momentum[name])
    zeroed = ResNet18(num_classes=10, in_channels=1, width=2, maxpool=False)
    zeroed.load_state_dict(updated)
    model.eval(), zeroed.eval()
    # replaced channels are silent downstream: their new filters change no output yet
    with torch.no_grad():
        torch.testing.assert_close(model(x), zeroed(x), rtol=1e-5, atol=1e-6)


def test_probes_train_a_copy_without_the_remedys_hooks():
    model = ResNet18(num_classes=10, in_channels=1, width=2, maxpool=False)
    remedy = bound_cbp(model)
    probe = ws_training.probe_start(model, [remedy], epoch=1)
    assert remove_recorder_hooks(probe) == 0  # probe_start took them all off
    recorded_before = [h is None for h in remedy.pairs.recorder.outputs]
    probe.train()
    probe(torch.randn(4, 1, 8, 8)).sum().backward()
    assert [h is None for h in remedy.pairs.recorder.outputs] == recorded_before
    model.train()
    model(torch.randn(4, 1, 8, 8))
    assert all(h is not None for h in remedy.pairs.recorder.outputs)
    assert remove_recorder_hooks(copy.deepcopy(model)) == 16  # 8 relus, 8 blocks' pre-hooks
