"""The small-data training tricks: warm-up epochs, a moving average of the weights (EMA) and
discriminative learning rates (the features slower than the head)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from classifier.runtime.errors import PipelineError
from classifier.models.registry import InputShape, build_model, head_parameters
from classifier.training.optim import make_optimizer, make_scheduler, parameter_groups
from classifier.params.whole_file import read_yaml, validate
from tests.helpers import ROOT
from tests.test_training import PARAMS, tiny_images, train_once

RAW = read_yaml(ROOT / "params.yaml")


@pytest.mark.parametrize("scheduler,expected", [
    ("none", [0.1, 0.2, 0.3, 0.3, 0.3, 0.3]),
    ("cosine", [0.1, 0.2, 0.3, 0.2561, 0.15, 0.0439]),  # cosine over the 4 epochs after the warm-up
    ("step", [0.1, 0.2, 0.3, 0.3, 0.03, 0.03]),         # step_size 2 counted from the warm-up's end
])
def test_warm_up_climbs_linearly_to_lr_then_the_schedule_runs(scheduler, expected) -> None:
    _, result = train_once(lr=0.3, scheduler=scheduler, warmup_epochs=2, step_size=2, gamma=0.1)
    assert [r.lr for r in result.history] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("changes,message", [
    ({"warmup_epochs": 2, "scheduler": "onecycle"}, "'train.warmup_epochs' parameter does not apply to "
                                                   "train.scheduler: onecycle"),
    ({"warmup_epochs": 15, "epochs": 15}, r"'train.warmup_epochs' parameter must be less than train.epochs \(15\)"),
    ({"ema_decay": 1.0}, r"'train.ema_decay' parameter must be a float >= 0 and < 1. Got 1.0"),
    ({"features_lr_factor": 0}, r"'train.features_lr_factor' parameter must be a float > 0 and <= 1. Got 0"),
])
def test_bad_trick_settings_are_one_line(changes, message) -> None:
    raw = {**RAW, "train": {**RAW["train"], **changes}}
    with pytest.raises(PipelineError, match=message):
        validate(raw)


def test_the_averaged_weights_are_the_ema_of_every_step_and_are_what_is_kept() -> None:
    """Recomputed here from the weights after each optimiser step: e1 = w1, then e = d·e + (1 - d)·w
    with the decay warmed up, d = min(0.8, (1 + t) / (10 + t)) at the t-th update after the first."""
    decay, after_steps = 0.8, []

    def record(optimizer, args, kwargs) -> None:
        after_steps.append([p.detach().clone() for group in optimizer.param_groups for p in group["params"]])
    handle = register_optimizer_step_post_hook(record)
    try:
        model, result = train_once(ema_decay=decay, epochs=3, checkpoint="last")
    finally:
        handle.remove()
    average = after_steps[0]
    for step, weights in enumerate(after_steps[1:], 1):
        d = min(decay, (1 + step) / (10 + step))
        average = [d * e + (1 - d) * w for e, w in zip(average, weights)]
    kept = [result.last_state[name] for name, _ in model.named_parameters()]
    for expected, state, live in zip(average, kept, model.parameters()):
        torch.testing.assert_close(state, expected)
        assert torch.equal(live.detach(), state)  # the model itself ends with the averaged weights
    assert not torch.equal(kept[0], after_steps[-1][0])  # not the last step's raw weights
    _, plain = train_once(epochs=3)
    # The training itself is the same run; what is validated each epoch is the average.
    assert [r.train_loss for r in result.history] == [r.train_loss for r in plain.history]
    assert [r.val_loss for r in result.history] != [r.val_loss for r in plain.history]


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
@pytest.mark.parametrize("epochs", [3, 30])
def test_the_average_is_no_worse_than_the_raw_weights_on_a_short_run_or_a_long_one(epochs) -> None:
    """EMA at 0.99 over 12 steps (3 epochs) or 120: the warmed-up average tracks the training, where
    a fixed 0.99 would keep 89% of the first step's weights after 12 steps."""
    for seed in range(3):
        _, raw = train_once(seed=seed, epochs=epochs, lr=0.02)
        _, averaged = train_once(seed=seed, epochs=epochs, lr=0.02, ema_decay=0.99, checkpoint="last")
        assert averaged.history[-1].val_loss <= raw.history[-1].val_loss * 1.15 + 0.02, seed


def test_discriminative_rates_give_the_features_their_share_through_every_schedule() -> None:
    train = dataclasses.replace(PARAMS.train, lr=0.2, features_lr_factor=0.1, epochs=4)
    model = build_model(dataclasses.replace(PARAMS.model, name="cnn", head=(16,)), InputShape(1, 16, 16, 3))
    head, features = parameter_groups(model, train)
    head_ids = {id(p) for name, p in model.named_parameters() if name in head_parameters(model)}
    assert {id(p) for p in head["params"]} == head_ids and not {id(p) for p in features["params"]} & head_ids
    assert (head["lr"], features["lr"]) == (0.2, pytest.approx(0.02))
    for scheduler in ("cosine", "step", "onecycle"):
        optimizer = make_optimizer(model, dataclasses.replace(train, scheduler=scheduler, step_size=1, gamma=0.5))
        schedule, per_step = make_scheduler(optimizer, dataclasses.replace(train, scheduler=scheduler), 5)
        for _ in range(7 if per_step else 2):
            optimizer.step()
            schedule.step()
        rates = [group["lr"] for group in optimizer.param_groups]
        assert rates[1] == pytest.approx(0.1 * rates[0]), scheduler
    # One group when the factor is 1, or when the features are frozen anyway.
    assert len(parameter_groups(model, dataclasses.replace(train, features_lr_factor=1.0))) == 1
    frozen = build_model(dataclasses.replace(PARAMS.model, name="cnn", head=(16,), freeze="features"),
                         InputShape(1, 16, 16, 3))
    assert len(parameter_groups(frozen, train)) == 1


def test_the_range_test_keeps_the_features_at_their_share(monkeypatch) -> None:
    from tools import lr_find
    from classifier.training import loop as training_loop
    from classifier.training.device_dataset import DeviceDataset
    from classifier.data.preprocessing import Normalizer
    from classifier.training.loop import FitData
    made = []  # the range test runs training's own loop, which makes the optimiser
    monkeypatch.setattr(training_loop, "make_optimizer", lambda *a: made.append(make_optimizer(*a)) or made[-1])
    images, labels = tiny_images()
    model = build_model(dataclasses.replace(PARAMS.model, name="cnn", head=(16,)), InputShape(1, 12, 12, 3))
    train = dataclasses.replace(PARAMS.train, features_lr_factor=0.25, batch_size=16)
    lr_find.lr_range_test(model, FitData(DeviceDataset(images, labels, torch.device("cpu")), None,
                                         Normalizer((0.3,), (0.3,))), train, start=1e-4, end=1e-2, steps=20)
    head, features = made[0].param_groups
    assert head["lr"] == pytest.approx(1e-2) and features["lr"] == pytest.approx(0.25e-2)
