"""The training loop on the CPU: the loss drops, a seed repeats a run exactly, NaN stops it."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from stages.lib.errors import PipelineError
from stages.lib.models import InputShape, build_model
from stages.lib.params import load_params
from stages.lib.training import Normalizer, fit, images_to_tensor, make_scheduler, make_optimizer, select_device
from tests.helpers import ROOT

PARAMS = load_params("model", "train", path=ROOT / "params.yaml")


def tiny_data(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 12×12 images told apart by which third of the image is bright."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, size=(n, 12, 12, 1), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, :, 4 * label:4 * label + 4] += 150
    return images_to_tensor(images, torch.device("cpu")), torch.from_numpy(labels)


def train_once(seed: int = 0, **train_changes):
    x, y = tiny_data()
    defaults = {"epochs": 6, "batch_size": 16, "lr": 0.05, "scheduler": "none"}
    train = dataclasses.replace(PARAMS.train, seed=seed, **{**defaults, **train_changes})
    torch.manual_seed(seed)
    model = build_model(dataclasses.replace(PARAMS.model, name="mlp", hidden=(16,), dropout=0.0),
                        InputShape(1, 12, 12, 3))
    history = fit(model, x, y, x[:15], y[:15], Normalizer((0.3,), (0.3,)), train, log=lambda _: None)
    return model, history


def test_loss_drops_on_a_few_images() -> None:
    _, history = train_once()
    assert history[-1].train_loss < 0.5 * history[0].train_loss
    assert history[-1].val_accuracy == 1.0


def test_same_seed_same_run_on_cpu() -> None:
    model_a, history_a = train_once(seed=1)
    model_b, history_b = train_once(seed=1)
    _, history_c = train_once(seed=2)
    assert history_a == history_b
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))
    assert history_a != history_c


def test_nan_loss_stops_training() -> None:
    with pytest.raises(PipelineError, match=r"training loss became (nan|inf) in epoch 1: lower train.lr"):
        train_once(lr=1e30)


def test_step_schedule_lowers_lr_every_step_size_epochs() -> None:
    _, history = train_once(scheduler="step", step_size=2, gamma=0.5)
    assert [r.lr for r in history] == pytest.approx([0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125])


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_optimizer_choice(name, cls) -> None:
    model = torch.nn.Linear(2, 2)
    train = dataclasses.replace(PARAMS.train, optimizer=name, lr=0.3, weight_decay=0.01)
    optimizer = make_optimizer(model, train)
    assert isinstance(optimizer, cls)
    assert optimizer.param_groups[0]["lr"] == 0.3 and optimizer.param_groups[0]["weight_decay"] == 0.01
    assert make_scheduler(optimizer, dataclasses.replace(train, scheduler="none")) is None


def test_device_choice() -> None:
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="'train.device' parameter is 'cuda' but no CUDA GPU"):
            select_device("cuda")


def test_normalizer_uses_train_stats() -> None:
    batch = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
    assert math.isclose(Normalizer((0.5,), (0.25,))(batch)[0, 0, 0, 0].item(), 2.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_runs_on_cuda() -> None:
    x, y = tiny_data()
    device = torch.device("cuda")
    model = build_model(dataclasses.replace(PARAMS.model, name="lenet5"), InputShape(1, 16, 16, 3)).to(device)
    x16 = torch.nn.functional.pad(x, (2, 2, 2, 2)).to(device)
    train = dataclasses.replace(PARAMS.train, epochs=3, batch_size=16, scheduler="none")
    history = fit(model, x16, y.to(device), x16, y.to(device), Normalizer((0.3,), (0.3,)), train, log=lambda _: None)
    assert history[-1].train_loss < history[0].train_loss
