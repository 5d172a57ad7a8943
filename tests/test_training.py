"""The training loop on the CPU: the loss drops, a seed repeats a run exactly, each scheduler,
clipping, early stopping, the best checkpoint, class weights, streaming and NaN handling."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from classifier.training.device_dataset import DeviceDataset
from classifier.training.devices import select_device
from classifier.runtime.errors import PipelineError
from classifier.models.inference import loss_and_accuracy, predict_logits
from classifier.models.registry import InputShape, build_model
from classifier.training.optim import class_weights, clip_gradients, make_optimizer, make_scheduler
from classifier.params.whole_file import load_params
from classifier.data.preprocessing import Normalizer
from classifier.training.loop import STEP_COLUMNS, FitData, Hooks, fit
from tests.helpers import ROOT, cpu_data, quiet

PARAMS = load_params("model", "train", path=ROOT / "params.yaml")
CPU = torch.device("cpu")


def tiny_images(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 12×12 images told apart by which third of the image is bright."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, size=(n, 12, 12, 1), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, :, 4 * label:4 * label + 4] += 150
    return images, labels


def train_once(seed: int = 0, resident: bool = True, weights=None, augment=None, **train_changes):
    images, labels = tiny_images()
    defaults = {"epochs": 6, "batch_size": 16, "lr": 0.05, "scheduler": "none", "patience": 0}
    train = dataclasses.replace(PARAMS.train, seed=seed, **{**defaults, **train_changes})
    torch.manual_seed(seed)
    model = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(16,), dropout=0.0),
                        InputShape(1, 12, 12, 3))
    data = FitData(DeviceDataset(images, labels, CPU, resident), DeviceDataset(images[:15], labels[:15], CPU, resident),
                   Normalizer((0.3,), (0.3,)), weights, augment)
    result = fit(model, data, train, quiet())
    return model, result


def test_loss_drops_on_a_few_images() -> None:
    _, result = train_once()
    assert result.history[-1].train_loss < 0.5 * result.history[0].train_loss
    assert result.history[-1].val_accuracy == 1.0
    assert len(result.steps) == 6 * 4 and result.steps[-1][:2] == (24, 6)  # 60 images in batches of 16


def test_same_seed_same_run_on_cpu() -> None:
    model_a, a = train_once(seed=1)
    model_b, b = train_once(seed=1)
    _, c = train_once(seed=2)
    assert a.history == b.history and a.steps == b.steps
    assert all(torch.equal(x, y) for x, y in zip(model_a.state_dict().values(), model_b.state_dict().values()))
    assert a.history != c.history


def test_streamed_batches_train_like_resident_ones() -> None:
    _, resident = train_once(resident=True)
    _, streamed = train_once(resident=False)
    for r, s in zip(resident.history, streamed.history):
        assert r.train_loss == pytest.approx(s.train_loss, rel=1e-4) and r.val_accuracy == s.val_accuracy


def test_nan_loss_stops_training() -> None:
    with pytest.raises(PipelineError, match=r"training loss became (nan|inf) in epoch 1: lower train.lr"):
        train_once(lr=1e30)


@pytest.mark.parametrize("scheduler,changes,expected", [
    ("none", {}, [0.1] * 6),
    ("step", {"step_size": 2, "gamma": 0.5}, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]),
    ("exponential", {"gamma": 0.5}, [0.1 * 0.5 ** e for e in range(6)]),
    ("cosine", {}, [0.05 * (1 + math.cos(math.pi * e / 6)) for e in range(6)]),
])
def test_epoch_schedulers_give_the_expected_lr_sequence(scheduler, changes, expected) -> None:
    _, result = train_once(lr=0.1, scheduler=scheduler, **changes)
    assert [r.lr for r in result.history] == pytest.approx(expected)


def test_onecycle_warms_up_to_lr_then_anneals_per_step() -> None:
    _, result = train_once(lr=0.1, scheduler="onecycle")
    lrs = [step[STEP_COLUMNS.index("lr")] for step in result.steps]
    peak = int(np.argmax(lrs))
    assert max(lrs) == pytest.approx(0.1, rel=0.05) and 0 < peak < len(lrs) - 1
    assert lrs[0] < 0.01 and lrs[-1] < 1e-3
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))


@pytest.mark.parametrize("norm,value", [(0.5, 0.0), (0.0, 0.01), (0.5, 0.01), (0.0, 0.0)])
def test_clipping_bounds_the_gradient(norm, value) -> None:
    parameters = [torch.zeros(10, requires_grad=True), torch.zeros(3, 3, requires_grad=True)]
    for p in parameters:
        p.grad = torch.randn_like(p) * 100
    original = [p.grad.clone() for p in parameters]
    clip_gradients(parameters, dataclasses.replace(PARAMS.train, grad_clip_norm=norm, grad_clip_value=value))
    grads = [p.grad for p in parameters]
    total = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])).item()
    if norm:
        assert total <= norm + 1e-5
    if value:
        assert max(g.abs().max().item() for g in grads) <= value
    if not norm and not value:
        assert all(torch.equal(g, o) for g, o in zip(grads, original))


def test_early_stopping_stops_and_keeps_the_best_epoch() -> None:
    # A learning rate of almost zero: val loss cannot improve by min_delta, so patience runs out.
    _, result = train_once(lr=1e-9, epochs=20, patience=2, min_delta=0.5, monitor="val_loss")
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def noisy_run(**train_changes):
    """A run whose val loss wanders: 40% of the train labels are wrong, val's are right, lr is high."""
    images, labels = tiny_images(120)
    rng = np.random.default_rng(0)
    noisy_labels = np.where(rng.random(len(labels)) < 0.4, rng.integers(0, 3, len(labels)), labels)
    val_images, val_labels = tiny_images(60, seed=1)
    train = dataclasses.replace(PARAMS.train, **{"seed": 0, "epochs": 20, "batch_size": 16, "lr": 0.05,
                                                 "scheduler": "none", "patience": 0, **train_changes})
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(64,), dropout=0.0), InputShape(1, 12, 12, 3))
    val = DeviceDataset(val_images, val_labels, CPU)
    result = fit(model, FitData(DeviceDataset(images, noisy_labels, CPU), val, Normalizer((0.3,), (0.3,))), train, quiet())
    return model, result, val


def val_loss_of(state: dict, val: DeviceDataset) -> float:
    model = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(64,), dropout=0.0), InputShape(1, 12, 12, 3))
    model.load_state_dict(state)
    return loss_and_accuracy(predict_logits(model, val, Normalizer((0.3,), (0.3,))), val.labels)[0]


def test_saved_weights_are_the_best_epochs_whatever_min_delta() -> None:
    # min_delta 0.1 is more than the best epoch gains over the first: it must not decide the checkpoint.
    model, result, val = noisy_run(monitor="val_loss", min_delta=0.1)
    losses = [r.val_loss for r in result.history]
    best = int(np.argmin(losses)) + 1
    assert 1 < best < len(losses)  # the setting works: the best epoch is neither the first nor the last
    assert result.best_epoch == best
    assert val_loss_of(result.best_state, val) == pytest.approx(losses[best - 1], rel=1e-6)
    assert val_loss_of(model.state_dict(), val) == pytest.approx(losses[-1], rel=1e-6) != losses[best - 1]


def test_the_checkpoint_keeps_the_last_or_the_best_epoch() -> None:
    model, result, val = noisy_run(monitor="val_loss")
    losses = [r.val_loss for r in result.history]
    state, epoch = result.saved("last")
    assert epoch == len(losses) and val_loss_of(state, val) == pytest.approx(losses[-1], rel=1e-6)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    state, epoch = result.saved("best")
    assert epoch == int(np.argmin(losses)) + 1 < len(losses)
    assert val_loss_of(state, val) == pytest.approx(min(losses), rel=1e-6)


def test_val_accuracy_keeps_the_first_of_the_best_epochs() -> None:
    _, result, _ = noisy_run(monitor="val_accuracy", min_delta=0.5)
    accuracies = [r.val_accuracy for r in result.history]
    assert result.best_epoch == accuracies.index(max(accuracies)) + 1


def test_min_delta_drives_early_stopping_only() -> None:
    _, result, _ = noisy_run(monitor="val_loss", min_delta=0.1, patience=3)
    losses = [r.val_loss for r in result.history]
    # Stopped 3 epochs after the last epoch that beat the earlier best by more than 0.1 ...
    reference, last_gain = losses[0], 1
    for epoch, loss in enumerate(losses[1:], start=2):
        if loss < reference - 0.1:
            reference, last_gain = loss, epoch
    assert result.stopped_early and len(losses) == last_gain + 3
    # ... while the checkpoint is the best epoch seen, improvement of any size.
    assert result.best_epoch == int(np.argmin(losses)) + 1


def test_train_loss_is_plain_cross_entropy_like_val_loss() -> None:
    """With every regulariser on, train_loss is still the plain cross-entropy (the same quantity as
    val_loss: equal here, where val is the train set and the model barely moves), and the objective
    that was minimised is recorded beside it."""
    images, labels = tiny_images()
    train = dataclasses.replace(PARAMS.train, epochs=1, batch_size=60, lr=1e-9, scheduler="none", patience=0,
                                l1=0.01, label_smoothing=0.3)  # one step on the whole set: exact means
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(16,), dropout=0.0), InputShape(1, 12, 12, 3))
    data = DeviceDataset(images, labels, CPU)
    result = fit(model, FitData(data, data, Normalizer((0.3,), (0.3,)), weights=torch.tensor([5.0, 1.0, 1.0])), train,
                 quiet())
    (epoch,) = result.history
    assert epoch.train_loss == pytest.approx(epoch.val_loss, rel=1e-5)
    logits = predict_logits(model, data, Normalizer((0.3,), (0.3,)))
    regularised = nn.functional.cross_entropy(logits, data.labels, weight=torch.tensor([5.0, 1.0, 1.0]),
                                              label_smoothing=0.3).item()
    l1_penalty = 0.01 * sum(p.abs().sum().item() for p in model.parameters())
    # Label smoothing 0.3 moves this objective by about 0.4%: the tolerance must be far finer than that.
    assert epoch.train_objective == pytest.approx(regularised + l1_penalty, rel=1e-5)
    unsmoothed = nn.functional.cross_entropy(logits, data.labels, weight=torch.tensor([5.0, 1.0, 1.0])).item()
    assert abs(epoch.train_objective - (unsmoothed + l1_penalty)) > 1e-4
    assert abs(epoch.train_objective - epoch.train_loss) > 0.5
    loss, objective = STEP_COLUMNS.index("loss"), STEP_COLUMNS.index("objective")
    assert all(step[objective] > step[loss] for step in result.steps)


def test_class_weights_choices() -> None:
    labels = np.array([0, 0, 0, 1])
    assert class_weights("none", labels, 2) is None
    assert class_weights("balanced", labels, 2).tolist() == pytest.approx([4 / 6, 4 / 2])
    assert class_weights((1.0, 3.0), labels, 2).tolist() == [1.0, 3.0]
    with pytest.raises(PipelineError, match=r"'train.class_weights' parameter must have one weight per class \(2\)"):
        class_weights((1.0, 2.0, 3.0), labels, 2)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizer_choice(name, cls) -> None:
    model = nn.Linear(2, 2)
    train = dataclasses.replace(PARAMS.train, optimizer=name, lr=0.3, weight_decay=0.01, nesterov=name == "sgd")
    optimizer = make_optimizer(model, train)
    assert isinstance(optimizer, cls)
    assert optimizer.param_groups[0]["lr"] == 0.3 and optimizer.param_groups[0]["weight_decay"] == 0.01
    assert make_scheduler(optimizer, dataclasses.replace(train, scheduler="none"), 10) == (None, False)


def test_nesterov_needs_momentum_and_frozen_everything_is_refused() -> None:
    with pytest.raises(PipelineError, match="'train.nesterov' parameter needs train.momentum > 0"):
        make_optimizer(nn.Linear(2, 2), dataclasses.replace(PARAMS.train, nesterov=True, momentum=0.0))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(PipelineError, match="no trainable parameters"):
        make_optimizer(frozen, PARAMS.train)


@pytest.mark.parametrize("gpu", [True, False])
def test_device_choice(monkeypatch, gpu) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert select_device("cpu") == CPU
    assert select_device("auto") == (torch.device("cuda") if gpu else CPU)
    if gpu:
        assert select_device("cuda") == torch.device("cuda")
    else:
        with pytest.raises(PipelineError, match="'train.device' parameter is 'cuda' but no CUDA GPU"):
            select_device("cuda")


def test_frozen_batch_norm_keeps_its_running_statistics() -> None:
    """model.freeze: features leaves the features' batch norm statistics as they were; the control
    run (nothing frozen) shows that training would change them."""
    images, labels = tiny_images()
    train = dataclasses.replace(PARAMS.train, epochs=2, batch_size=16, lr=0.05, scheduler="none", patience=0)
    for freeze in ("features", "none"):
        torch.manual_seed(0)
        model = build_model(dataclasses.replace(PARAMS.model, name="cnn", filters=(4, 8), pool_after=(1, 2),
                                                batch_norm=True, freeze=freeze), InputShape(1, 12, 12, 3))
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        before = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
        data = DeviceDataset(images, labels, CPU)
        fit(model, FitData(data, data, Normalizer((0.3,), (0.3,))), train, quiet())
        after = [(m.running_mean, m.running_var, m.num_batches_tracked) for m in norms]
        unchanged = [all(torch.equal(a, b) for a, b in zip(x, y)) for x, y in zip(before, after)]
        assert unchanged == [freeze == "features"] * len(norms), freeze


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("resident", [True, False])
def test_training_runs_on_cuda_with_amp(resident) -> None:
    images, labels = tiny_images()
    images = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    device = torch.device("cuda")
    model = build_model(dataclasses.replace(PARAMS.model, name="lenet5"), InputShape(1, 16, 16, 3)).to(device)
    train = dataclasses.replace(PARAMS.train, epochs=4, batch_size=16, scheduler="none", amp=True)
    data = DeviceDataset(images, labels, device, resident)
    result = fit(model, FitData(data, data, Normalizer((0.3,), (0.3,), device)), train, quiet())
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_a_one_image_last_batch_joins_the_one_before() -> None:
    from classifier.training.loop import epoch_batches
    assert [len(b) for b in epoch_batches(torch.arange(33), 16)] == [16, 17]
    assert [len(b) for b in epoch_batches(torch.arange(34), 16)] == [16, 16, 2]
    assert [len(b) for b in epoch_batches(torch.arange(1), 16)] == [1]
    images, labels = tiny_images(33)  # 33 = 2 × 16 + 1: batch norm would fail on the last batch alone
    train = dataclasses.replace(PARAMS.train, epochs=2, batch_size=16, lr=0.05, scheduler="onecycle", patience=0)
    model = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(16,), batch_norm=True),
                        InputShape(1, 12, 12, 3))
    data = DeviceDataset(images, labels, CPU)
    result = fit(model, FitData(data, data, Normalizer((0.3,), (0.3,))), train, quiet())
    assert len(result.steps) == 4 and all(math.isfinite(r.train_loss) for r in result.history)


def test_batch_size_one_with_batch_norm_is_refused_in_one_line() -> None:
    images, labels = tiny_images(8)
    train = dataclasses.replace(PARAMS.train, epochs=1, batch_size=1, scheduler="none")
    model = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(8,), batch_norm=True),
                        InputShape(1, 12, 12, 3))
    with pytest.raises(PipelineError, match=r"'train.batch_size' parameter must be >= 2 for a model with batch norm"):
        fit(model, cpu_data(images, labels, None), train)
    plain = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(8,)), InputShape(1, 12, 12, 3))
    fit(plain, cpu_data(images, labels, None), train, quiet())  # without batch norm a batch of one is fine


def test_data_parallel_shards_split_the_train_set_at_random() -> None:
    from classifier.training.distributed import World
    from classifier.training.loop import shard_rows
    labels = np.repeat(np.arange(4), 250)  # stored by class, as augment writes them
    shards = [shard_rows(1000, World(rank, 3), seed=7) for rank in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(1000))  # every image once
    assert [len(s) for s in shards] == [334, 333, 333]
    for shard in shards:  # each process sees every class in about its share, not a block of the stored order
        assert np.all(np.abs(np.bincount(labels[shard], minlength=4) - len(shard) / 4) < 40)
    assert np.array_equal(shard_rows(1000, World(1, 3), seed=7), shards[1])  # seeded: a rerun holds the same rows
    assert shard_rows(1000, World(), seed=7) is None  # alone: everything


@pytest.mark.parametrize("resident", [True, False])
def test_a_shard_serves_its_own_rows(resident) -> None:
    images, labels = tiny_images(30)
    rows = np.array([2, 5, 11, 29])
    shard = DeviceDataset(images, labels, CPU, resident, rows=rows)
    assert len(shard) == 4
    got_images, got_labels = shard.get(torch.tensor([3, 0]))
    order = np.argsort([3, 0]) if not resident else [0, 1]  # streamed batches come back in stored order
    expected = rows[[3, 0]][order]
    assert torch.equal(got_images, torch.from_numpy(images[expected]).permute(0, 3, 1, 2))
    assert got_labels.tolist() == labels[expected].tolist()


def test_fit_records_wall_time_and_throughput() -> None:
    _, result = train_once(epochs=3)
    assert all(r.seconds > 0 for r in result.history)
    assert result.images_trained == 3 * 60 and result.images_per_second == pytest.approx(180 / result.train_seconds)
    assert result.train_seconds <= sum(r.seconds for r in result.history)


def test_sam_steps_with_the_gradient_at_the_perturbed_weights() -> None:
    """One SAM step by hand: w1 = w0 - lr × grad(w0 + rho × g0 / |g0|), g0 = grad(w0)."""
    images, labels = tiny_images(24)
    normalize = Normalizer((0.3,), (0.3,))
    train = dataclasses.replace(PARAMS.train, optimizer="sam", sam_rho=0.5, lr=0.1, momentum=0.0, weight_decay=0.0,
                                epochs=1, batch_size=24, scheduler="none", patience=0)
    model_params = dataclasses.replace(PARAMS.model, name="mlp", hidden=(), dropout=0.0)
    torch.manual_seed(0)
    model = build_model(model_params, InputShape(1, 12, 12, 3))
    start = [p.detach().clone() for p in model.parameters()]
    x = normalize(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    y = torch.from_numpy(labels)

    def gradient(weights: list[torch.Tensor]) -> list[torch.Tensor]:
        probe = build_model(model_params, InputShape(1, 12, 12, 3))
        with torch.no_grad():
            for p, w in zip(probe.parameters(), weights):
                p.copy_(w)
        nn.functional.cross_entropy(probe(x), y).backward()
        return [p.grad for p in probe.parameters()]
    g0 = gradient(start)
    norm = torch.sqrt(sum((g ** 2).sum() for g in g0))
    g1 = gradient([w + 0.5 * g / norm for w, g in zip(start, g0)])
    expected = [w - 0.1 * g for w, g in zip(start, g1)]
    fit(model, FitData(DeviceDataset(images, labels, CPU), DeviceDataset(images, labels, CPU), normalize), train, quiet())
    for got, want in zip(model.parameters(), expected):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)
    plain_sgd = [w - 0.1 * g for w, g in zip(start, g0)]
    assert not torch.allclose(model.parameters().__next__().detach(), plain_sgd[0])  # not an SGD step


def test_two_phase_fine_tuning_trains_the_head_then_everything() -> None:
    from classifier.training.loop import fit_phases
    images, labels = tiny_images()
    train = dataclasses.replace(PARAMS.train, epochs=2, finetune_epochs=3, finetune_lr=0.01, lr=0.05, batch_size=16,
                                scheduler="none", patience=0, checkpoint="last")
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(16,), dropout=0.0, freeze="features"),
                        InputShape(1, 12, 12, 3))
    named = dict(model.named_parameters())
    frozen = {name: p.detach().clone() for name, p in named.items() if not p.requires_grad}
    assert frozen, "model.freeze: features froze nothing"
    phases = []

    def log(line: str) -> None:
        phases.append(line)
    torch.manual_seed(0)
    head_only = fit(build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(16,), dropout=0.0,
                                                    freeze="features"), InputShape(1, 12, 12, 3)),
                    cpu_data(images, labels), dataclasses.replace(train, finetune_epochs=0), quiet())
    result = fit_phases(model, cpu_data(images, labels), train, Hooks(log=log))
    # One history: epochs 1-5, the phase of each, the second phase at its own learning rate.
    assert [r.epoch for r in result.history] == [1, 2, 3, 4, 5]
    assert [r.phase for r in result.history] == ["head", "head", "finetune", "finetune", "finetune"]
    assert [r.lr for r in result.history] == [0.05, 0.05, 0.01, 0.01, 0.01]
    assert [s[0] for s in result.steps] == list(range(1, 5 * 4 + 1)) and result.steps[-1][1] == 5
    assert any(line.startswith("epoch   5/5") for line in phases)
    # The head phase is a plain frozen run (the same as one without fine-tuning); then the features move too.
    assert [r.train_loss for r in result.history[:2]] == [r.train_loss for r in head_only.history]
    for name, before in frozen.items():
        assert not torch.equal(dict(model.named_parameters())[name].detach(), before), name
        assert dict(model.named_parameters())[name].requires_grad
    assert result.saved("last")[1] == 5 and 1 <= result.best_epoch <= 5


def small_photo_set(n_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 24×24 grey 'photos': a ring or a cross of random size and place, on a noisy,
    unevenly lit background."""
    import cv2
    images, labels = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            light = np.linspace(-30, 30, 24)[None, :] * rng.uniform(-1, 1)
            image = np.clip(rng.normal(90, 25, (24, 24)) + light, 0, 255)
            size, (x, y) = int(rng.integers(3, 8)), (int(v) for v in rng.integers(5, 19, size=2))
            if label == 0:
                cv2.circle(image, (x, y), size, 230, 2)
            else:
                cv2.line(image, (x - size, y), (x + size, y), 230, 2)
                cv2.line(image, (x, y - size), (x, y + size), 230, 2)
            images.append(image.astype(np.uint8)[:, :, None])
            labels.append(label)
    return np.stack(images), np.array(labels)


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_online_augmentation_raises_test_accuracy_on_a_small_photo_set() -> None:
    """40 training photos: the random crops, shifts and flips of every batch let a small CNN
    generalise to 400 new photos far better than the same run without them."""
    from classifier.augment.online import OnlineAugment
    rng = np.random.default_rng(0)
    train_x, train_y = small_photo_set(20, rng)
    test_x, test_y = small_photo_set(200, rng)
    normalize = Normalizer((0.4,), (0.15,))
    model_params = dataclasses.replace(PARAMS.model, name="cnn", filters=(8, 16), pool_after=(1, 2), dropout=0.0,
                                       batch_norm=False)
    accuracy = {}
    for online in (None, OnlineAugment(crop_scale=0.6, translate=0.15, hflip=True, seed=0)):
        scores = []
        for seed in (0,):
            train = dataclasses.replace(PARAMS.train, epochs=40, batch_size=16, lr=0.02, scheduler="cosine",
                                        patience=0, seed=seed)
            torch.manual_seed(seed)
            model = build_model(model_params, InputShape(1, 24, 24, 2))
            fit(model, FitData(DeviceDataset(train_x, train_y, CPU), DeviceDataset(train_x[:4], train_y[:4], CPU), normalize,
                               augment=online), train, quiet())
            scores.append((predict_logits(model, DeviceDataset(test_x, test_y, CPU), normalize).argmax(1).numpy()
                           == test_y).mean())
        accuracy[online is not None] = float(np.mean(scores))
    assert accuracy[True] >= accuracy[False] + 0.05, accuracy


def test_online_augmentation_is_seeded_and_does_what_it_says() -> None:
    from classifier.augment.online import OnlineAugment
    images = torch.zeros((64, 1, 16, 16))
    images[:, :, :, 2] = 1.0  # a bright column near the left edge
    shift_only = OnlineAugment(crop_scale=1.0, translate=0.25, hflip=False, seed=3)
    shifted = shift_only(images, shift_only.generator(CPU))
    torch.testing.assert_close(shifted, shift_only(images, shift_only.generator(CPU)))  # the same seed, the same draws
    columns = shifted[:, 0, 8].argmax(dim=1)  # where the column went, per image
    assert len(set(columns.tolist())) > 3 and (columns - 2).abs().max() <= 4  # moved, by at most a quarter side
    flip = OnlineAugment(crop_scale=1.0, translate=0.0, hflip=True, seed=3)
    flipped = flip(images, flip.generator(CPU))[:, 0, 8].argmax(dim=1)
    assert set(flipped.tolist()) == {2, 13} and 16 <= (flipped == 13).sum() <= 48  # mirrored about half the time
    crop = OnlineAugment(crop_scale=0.5, translate=0.0, hflip=False, seed=3)
    widths = (crop(images, crop.generator(CPU))[:, 0, 8] > 0.2).sum(dim=1)
    assert widths.float().mean() > 1.2  # a crop enlarged back to full size: the column grows wider


def test_a_large_split_streams_on_the_cpu_and_a_copy_is_never_held_twice(monkeypatch) -> None:
    """On the CPU a split above CPU_RESIDENT_BYTES stays in its memory map; a resident copy is the
    NCHW tensor filled chunk by chunk, equal to the array."""
    from classifier.training import device_dataset
    from classifier.training.device_dataset import DeviceDataset, images_to_tensor
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 5, 6, 3), dtype=np.uint8)
    monkeypatch.setattr(device_dataset, "CPU_RESIDENT_BYTES", images.nbytes - 1)
    assert not DeviceDataset(images, np.zeros(10), torch.device("cpu")).resident
    monkeypatch.setattr(device_dataset, "CPU_RESIDENT_BYTES", images.nbytes + 1)
    assert DeviceDataset(images, np.zeros(10), torch.device("cpu")).resident
    monkeypatch.setattr(device_dataset, "CHUNK_ROWS", 3)
    assert torch.equal(images_to_tensor(images, torch.device("cpu")), torch.from_numpy(images).permute(0, 3, 1, 2))


def test_a_process_training_alone_never_calls_the_distributed_module(monkeypatch) -> None:
    from classifier.training import loop as training_loop
    from classifier.training.loop import Keeping

    def refuse(*_args, **_kwargs):
        raise AssertionError("a single process called into classifier/training/distributed.py")
    for name in ("sum_all", "min_all", "from_leader", "gather_to_leader"):
        monkeypatch.setattr(training_loop, name, refuse)
    kept = []
    images, labels = tiny_images()
    train = dataclasses.replace(PARAMS.train, epochs=2, batch_size=16, lr=0.05, scheduler="none", patience=0)
    model = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(16,), dropout=0.0), InputShape(1, 12, 12, 3))
    result = fit(model, cpu_data(images, labels), train, Hooks(log=lambda _: None, keep=Keeping(kept.append)))
    assert len(result.history) == 2 and len(kept) == 2  # the last one too: a kill while writing resumes there


def test_on_epoch_saying_stop_ends_the_run_there_as_pruned() -> None:
    """A search's pruner speaks through on_epoch: True after epoch 2 of 6 ends the run, marked pruned
    (not early-stopped), and two-phase fine-tuning never starts its second phase."""
    from classifier.training.loop import fit_phases
    lines = []
    images, labels = tiny_images()
    train = dataclasses.replace(PARAMS.train, epochs=6, batch_size=16, lr=0.05, scheduler="none", patience=0,
                                finetune_epochs=3, finetune_lr=0.01)
    model = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(16,), dropout=0.0, freeze="features"),
                        InputShape(1, 12, 12, 3))
    result = fit_phases(model, cpu_data(images, labels), train,
                        Hooks(log=lines.append, on_epoch=lambda history: history[-1].epoch == 2))
    assert [r.epoch for r in result.history] == [1, 2] and result.pruned and not result.stopped_early
    assert "pruned after epoch 2: the search stopped this run" in lines
    assert not any(line.startswith("fine-tuning") for line in lines)
    model = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(16,), dropout=0.0), InputShape(1, 12, 12, 3))
    seen = []  # live progress says nothing: the run goes on, through both phases, its history told whole
    whole = fit_phases(model, cpu_data(images, labels), dataclasses.replace(train, epochs=2, finetune_epochs=2),
                       Hooks(log=lambda _: None, on_epoch=lambda history: seen.append([r.epoch for r in history])))
    assert not whole.pruned and len(whole.history) == 4 and seen == [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]
