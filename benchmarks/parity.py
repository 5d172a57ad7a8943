"""Benchmark: test accuracy of the pipeline's training loop against a plain PyTorch loop, with the
same model, optimiser, learning rate, schedule, epochs, batch size and augmented arrays, over
several seeds, on a small two-class photo-like set this benchmark makes (no download).

    python -m benchmarks.parity [--seeds 5] [--epochs 30] [--train 250]

The data: 32×32 RGB pictures of two kinds of texture, stripes nearer horizontal or nearer
vertical at a random angle (the two ranges overlap), random colours, blur, brightness and noise,
so a small CNN gets 75-95%, not 100%. Train, val and test come from the same generator; train is
augmented as the pipeline does (blur 3 and a horizontal flip).

Reported, as mean ± sample std of test accuracy over the seeds:
    plain loop             the textbook loop: DataLoader, train, keep the last epoch's weights
    pipeline, last epoch   classifier.training.loop.fit, the weights after the last epoch
                           (train.checkpoint: last, the default)
    pipeline, val_loss     train.checkpoint: best with train.monitor: val_loss
    pipeline, val_accuracy train.checkpoint: best with train.monitor: val_accuracy
Results and the explanation: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import dataclasses

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.harness import plain_epoch
from classifier.augment.offline import AugmentPlan, augment_block, augmentation_variants
from classifier.training.device_dataset import DeviceDataset
from classifier.models.inference import predict_logits
from classifier.models.registry import InputShape, build_model
from classifier.training.optim import make_scheduler
from classifier.params.whole_file import load_params
from classifier.data.preprocessing import Preprocessing
from classifier.training.loop import FitData, Hooks, fit

SIZE = 32


def textures(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` uint8 SIZE×SIZE×3 pictures and labels: 0 = stripes within 55° of horizontal, 1 = of vertical."""
    labels = rng.integers(0, 2, count)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images = np.empty((count, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        angle = np.deg2rad(rng.uniform(-55, 55) + 90 * label)
        period = rng.uniform(4, 9)
        wave = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period + rng.uniform(0, 2 * np.pi))
        colours = rng.uniform(30, 225, (2, 3))
        picture = colours[0] + (colours[1] - colours[0]) * ((wave[..., None] + 1) / 2)
        picture = cv2.GaussianBlur(picture.astype(np.float32), (0, 0), rng.uniform(0.5, 1.5))
        picture = picture * rng.uniform(0.6, 1.3) + rng.normal(0, 25, picture.shape)
        images[i] = np.clip(picture, 0, 255).astype(np.uint8)
    return images, labels


def augmented(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline's augment stage on the train split: the original, a box blur of 3, and both flipped."""
    plan = AugmentPlan(tuple(augmentation_variants((3,), True, False)))
    block = augment_block(images, np.ones(len(images), bool), plan, np.random.default_rng(0))
    return block.images.copy(), labels[block.source]


def accuracy(model: nn.Module, data: DeviceDataset, preprocessing: Preprocessing) -> float:
    logits = predict_logits(model, data, preprocessing.normalizer())
    return float((logits.argmax(1) == data.labels).float().mean())


def plain_loop(model: nn.Module, images: np.ndarray, labels: np.ndarray, preprocessing: Preprocessing,
               train) -> nn.Module:
    """The textbook loop: normalised float tensors, a shuffling DataLoader, the last epoch's weights."""
    x = preprocessing.normalizer()(torch.from_numpy(images).permute(0, 3, 1, 2))
    loader = DataLoader(TensorDataset(x, torch.from_numpy(labels)), batch_size=train.batch_size, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum,
                                weight_decay=train.weight_decay)
    scheduler, _ = make_scheduler(optimizer, train, len(loader))
    for _ in range(train.epochs):
        plain_epoch(model, loader, optimizer)
        if scheduler is not None:
            scheduler.step()
    return model


def one_seed(seed: int, args, params) -> dict[str, float]:
    rng = np.random.default_rng(1000 + seed)  # a new draw of the data set with every seed
    train_images, train_labels = textures(args.train, rng)
    val_images, val_labels = textures(args.val, rng)
    test_images, test_labels = textures(args.test, rng)
    images, labels = augmented(train_images, train_labels)
    prepare = dataclasses.replace(params.prepare, grayscale=False, image_size=(SIZE, SIZE))
    preprocessing, _ = Preprocessing.measure(prepare, train_images)
    shape = InputShape(3, SIZE, SIZE, 2)
    train = dataclasses.replace(params.train, epochs=args.epochs, seed=seed, device="cpu", patience=0)
    cpu = torch.device("cpu")
    val, test = DeviceDataset(val_images, val_labels, cpu), DeviceDataset(test_images, test_labels, cpu)
    scores = {}
    for monitor in ("val_loss", "val_accuracy"):
        torch.manual_seed(seed)
        model = build_model(params.model, shape)
        result = fit(model, FitData(DeviceDataset(images, labels, cpu), val, preprocessing.normalizer()),
                     dataclasses.replace(train, monitor=monitor), Hooks(log=lambda _: None))
        for checkpoint, name in (("last", "pipeline, last epoch"), ("best", f"pipeline, {monitor}")):
            state, epoch = result.saved(checkpoint)
            model.load_state_dict(state)
            scores[name] = accuracy(model, test, preprocessing)
        scores[f"saved epoch ({monitor})"] = result.best_epoch
    torch.manual_seed(seed)
    scores["plain loop"] = accuracy(plain_loop(build_model(params.model, shape), images, labels, preprocessing, train),
                                    test, preprocessing)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train", type=int, default=250)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--model", default="cnn")
    args = parser.parse_args()
    params = load_params("prepare", "model", "train")
    params = dataclasses.replace(params, model=dataclasses.replace(params.model, name=args.model))
    torch.set_num_threads(2)
    runs = [one_seed(seed, args, params) for seed in range(args.seeds)]
    print(f"{args.model}, {args.train} train images (×4 augmented), {args.val} val, {args.test} test, "
          f"{args.epochs} epochs, train params from params.yaml, {args.seeds} seeds")
    for name in ("plain loop", "pipeline, last epoch", "pipeline, val_loss", "pipeline, val_accuracy"):
        values = np.array([r[name] for r in runs])
        print(f"  {name:<24} test accuracy {values.mean():.2%} ± {values.std(ddof=1):.2%}   "
              f"({', '.join(f'{v:.1%}' for v in values)})")
    for monitor in ("val_loss", "val_accuracy"):
        print(f"  saved epoch by {monitor:<13} {[r[f'saved epoch ({monitor})'] for r in runs]}")


if __name__ == "__main__":
    main()
