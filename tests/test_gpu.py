"""The CUDA path: run with `pytest -m gpu` on a machine with a GPU; every test here skips without one."""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from classifier.training import device_dataset
from classifier.training import loop as training  # fit and FitResult
from classifier.training.device_dataset import DeviceDataset
from classifier.models.registry import InputShape, build_model
from classifier.params.whole_file import load_params
from classifier.data.preprocessing import Normalizer
from tests.helpers import copy_project, run_stage, set_params

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PARAMS = load_params("model", "train")
CUDA = torch.device("cuda")


def images_and_labels(n: int = 512, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    images = np.clip(rng.normal(60 + 60 * labels[:, None, None, None], 30, (n, size, size, 1)), 0, 255)
    return images.astype(np.uint8), labels


def train_once(images: np.ndarray, labels: np.ndarray, resident: bool = True, **train_changes) -> training.FitResult:
    model = build_model(dataclasses.replace(PARAMS.model, name="lenet5"), InputShape(1, 16, 16, 3)).to(CUDA)
    train = dataclasses.replace(PARAMS.train, epochs=2, batch_size=32, scheduler="none", amp=True, **train_changes)
    data = DeviceDataset(images, labels, CUDA, resident)
    val = DeviceDataset(images, labels, CUDA)
    return training.fit(model, training.FitData(data, val, Normalizer((0.3,), (0.3,), CUDA)), train,
                        training.Hooks(log=lambda _: None))


def test_bf16_autocast_and_channels_last_are_used() -> None:
    images, labels = images_and_labels()
    model = build_model(dataclasses.replace(PARAMS.model, name="lenet5"), InputShape(1, 16, 16, 3)).to(CUDA)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append((o.dtype, i[0].is_contiguous(memory_format=torch.channels_last))))
    train = dataclasses.replace(PARAMS.train, epochs=1, batch_size=64, scheduler="none", amp=True)
    data = DeviceDataset(images, labels, CUDA)
    training.fit(model, training.FitData(data, data, Normalizer((0.3,), (0.3,), CUDA)), train,
                 training.Hooks(log=lambda _: None))
    assert seen and all(dtype == torch.bfloat16 and channels_last for dtype, channels_last in seen)


def test_compiled_model_trains() -> None:
    images, labels = images_and_labels()
    result = train_once(images, labels, compile=True)
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_data_larger_than_the_resident_budget_is_streamed(monkeypatch) -> None:
    images, labels = images_and_labels()
    monkeypatch.setattr(device_dataset, "fits_in_memory", lambda nbytes, device: False)  # as if the GPU were full
    data = DeviceDataset(images, labels, CUDA)
    assert not data.resident
    result = train_once(images, labels, resident=None)
    assert result.history[-1].train_loss < result.history[0].train_loss


@pytest.mark.parametrize("resident", [True, False])
def test_no_host_synchronisation_per_step(resident) -> None:
    """The syncs of an epoch (its end, validation) do not grow with the number of steps."""
    images, labels = images_and_labels(1024)

    def syncs(batch_size: int) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_once(images, labels, resident, batch_size=batch_size)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    train_once(images, labels, resident)  # warm-up: first-use allocations
    assert syncs(16) == syncs(128)  # 64 steps an epoch vs 8


def test_erasing_and_mixing_run_on_the_gpu_without_host_syncs() -> None:
    """Their draws: per image on the device (erasing), per batch on the host (mixing: plain numbers)."""
    from classifier.augment.online import OnlineAugment
    augment = OnlineAugment(crop_scale=0.6, translate=0.1, hflip=True, seed=0, erasing=0.5, mixup_alpha=0.4,
                            cutmix_alpha=1.0, num_classes=10)
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, device=CUDA)
    labels = torch.randint(0, 10, (256,), device=CUDA)
    draws = augment.draws(CUDA)
    normalize = Normalizer((0.5,) * 3, (0.2,) * 3, CUDA)
    augment.batch(images, labels, normalize, draws)  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):  # both kinds of mixing
            x, targets = augment.batch(images, labels, normalize, draws)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.device.type == "cuda" and targets.shape == (256, 10)


@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment"])
def test_policies_run_on_the_gpu_without_host_syncs_as_on_the_cpu(policy) -> None:
    """The ops are known on the host, so gathering each op's images needs nothing back from the device;
    the pixels are the CPU's, but for float rounding at a few interpolation boundaries."""
    from classifier.augment.policies import apply_policy
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    on_gpu = images.to(CUDA)
    apply_policy(on_gpu, policy, np.random.default_rng(0))  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = apply_policy(on_gpu, policy, np.random.default_rng(1))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    expected = apply_policy(images, policy, np.random.default_rng(1))
    assert out.device.type == "cuda" and (out.cpu() == expected).float().mean() > 0.99


def test_online_augmentation_runs_on_the_gpu_without_host_syncs() -> None:
    from classifier.augment.online import OnlineAugment
    augment = OnlineAugment(crop_scale=0.6, translate=0.1, hflip=True, seed=0)
    images = torch.rand((256, 3, 32, 32), device=CUDA)
    generator = augment.generator(CUDA)
    augment(images, generator)  # warm-up
    torch.cuda.set_sync_debug_mode("error")  # any host sync inside raises
    try:
        out = augment(images, generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == "cuda" and out.shape == images.shape


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.slow
def test_two_processes_with_nccl_train_the_stage(tmp_path) -> None:
    root = copy_project(tmp_path / "project")
    for stage in ("ingest", "split", "prepare", "augment"):
        run_stage(stage, root)
    set_params(root, train={"processes": 2, "device": "cuda"})
    result = run_stage("train", root)
    assert "2 processes on cuda" in result.stdout
    assert json.loads((root / "metrics/train.json").read_text())["processes"] == 2
    run_stage("evaluate", root)
