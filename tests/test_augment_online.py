"""Batch augmentation on the training device: mixup and cutmix with soft targets, random erasing,
TrivialAugment / RandAugment per image; seeded, and composable with what training already does."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from classifier.augment.online import ERASED_AREA, OnlineAugment, erase, mix, online_augment
from classifier.augment.policies import OPS, apply_ops, apply_policy, draw, magnitudes
from classifier.params.checks import load_sections
from classifier.params.online_augment import OnlineAugmentParams
from classifier.params.train import TrainParams
from tests.helpers import ROOT
from tests.test_training import train_once

CPU = torch.device("cpu")
PARAMS = load_sections(OnlineAugmentParams, TrainParams, path=ROOT / "params.yaml")


def distinct_images(n: int = 32, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images, each a constant of its own value (so every pixel says whose it is), and labels."""
    values = torch.arange(1, n + 1, dtype=torch.float32)
    return values.view(n, 1, 1, 1).expand(n, 3, side, side).clone(), torch.arange(n) % 5


def test_mixup_blends_each_image_with_one_partner_by_the_targets_weight() -> None:
    x, labels = distinct_images()
    mixed, targets = mix(x, labels, 5, mixup_alpha=0.4, cutmix_alpha=0.0, rng=np.random.default_rng(0))
    torch.testing.assert_close(targets.sum(1), torch.ones(len(x)))
    own = torch.nn.functional.one_hot(labels, 5).float()
    for i in range(len(x)):
        value = float(mixed[i, 0, 0, 0])
        # value = λ·own + (1 - λ)·partner for one partner j; the targets carry the same λ.
        fits = [j for j in range(len(x)) if j != i and abs(x[j, 0, 0, 0] - x[i, 0, 0, 0]) > 0
                and 0 <= (lam := float((value - x[j, 0, 0, 0]) / (x[i, 0, 0, 0] - x[j, 0, 0, 0]))) <= 1
                and torch.allclose(targets[i], lam * own[i] + (1 - lam) * own[j], atol=1e-5)]
        assert fits or value == float(x[i, 0, 0, 0]), i  # or its partner was itself
        assert torch.all(mixed[i] == value)  # a blend: the same everywhere


def test_cutmix_pastes_one_box_and_the_targets_weigh_the_area_kept() -> None:
    x, labels = distinct_images()
    for seed in range(5):
        mixed, targets = mix(x, labels, 5, mixup_alpha=0.0, cutmix_alpha=1.0, rng=np.random.default_rng(seed))
        own = torch.nn.functional.one_hot(labels, 5).float()
        for i in range(len(x)):
            kept = float((mixed[i] == x[i]).float().mean())  # the share of pixels still the image's own
            pasted = mixed[i][mixed[i] != x[i]]
            if kept < 1:
                partner = int(pasted[0]) - 1
                assert torch.all(pasted == partner + 1)  # one box, from one partner
                torch.testing.assert_close(targets[i], kept * own[i] + (1 - kept) * own[partner])
            torch.testing.assert_close(targets[i].sum(), torch.tensor(1.0))


def test_with_both_on_each_batch_is_one_or_the_other() -> None:
    x, labels = distinct_images()
    kinds = set()
    rng = np.random.default_rng(1)
    for _ in range(20):
        mixed, _ = mix(x, labels, 5, mixup_alpha=0.4, cutmix_alpha=1.0, rng=rng)
        blended = not torch.equal(mixed.round(), mixed)  # mixup makes fractions; cutmix only moves whole values
        kinds.add("mixup" if blended else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_an_erased_rectangle_has_the_configured_area_and_the_share_of_images() -> None:
    x = torch.ones((400, 1, 20, 20))
    erased = erase(x, 0.5, torch.Generator().manual_seed(0))
    areas = (erased == 0).float().mean(dim=(1, 2, 3))
    hit = areas > 0
    assert 150 <= int(hit.sum()) <= 250  # about half the images
    low, high = ERASED_AREA
    # Whole pixels: a rectangle of h × w rounded from the drawn area, at least 1 × 1.
    assert areas[hit].min() >= low * 0.5 and areas[hit].max() <= high * 1.5
    assert areas[hit].mean() == pytest.approx((low + high) / 2, rel=0.25)
    for image in erased[hit][:20]:  # one rectangle each: its zero rows and columns are contiguous
        rows = torch.nonzero((image[0] == 0).any(1)).flatten()
        cols = torch.nonzero((image[0] == 0).any(0)).flatten()
        assert int((image[0] == 0).sum()) == len(rows) * len(cols)
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
    assert torch.equal(erase(x, 0.0, torch.Generator().manual_seed(0)), x)


def torchvision_op(policy: str):
    """The oracle: torchvision's own op at a given magnitude, one image at a time (its policies' private
    dispatch, which public transforms call with a random op and magnitude)."""
    from torchvision.transforms import v2
    reference = v2.TrivialAugmentWide() if policy == "trivialaugment" else v2.RandAugment()
    return lambda image, op, value: reference._apply_image_or_video_transform(
        image, op, value, interpolation=v2.InterpolationMode.NEAREST, fill=reference._fill)


def photo_like(n: int, channels: int) -> torch.Tensor:
    images = torch.from_numpy(np.random.default_rng(channels).integers(0, 256, (n, channels, 20, 24), dtype=np.uint8))
    images[:, :, 5:12, 6:15] //= 3  # a darker patch: something for shears, rotations and equalising to move
    return images


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_at_every_magnitude_equals_torchvisions_to_the_bit(policy, channels) -> None:
    oracle = torchvision_op(policy)
    images = photo_like(62, channels)
    for index, op in enumerate(OPS):
        table = magnitudes(policy, op, 20, 24)
        values = np.zeros(4) if table is None else np.concatenate([table, -table]).astype(np.float64)
        if op in ("Posterize", "Solarize"):  # unsigned
            values = np.abs(values)
        got = apply_ops(images[:len(values)], np.full(len(values), index), values)
        expected = torch.stack([oracle(images[i], op, float(v)) for i, v in enumerate(values)])
        assert torch.equal(got, expected), op


@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment"])
def test_a_policy_batch_is_each_images_own_ops_in_turn(policy) -> None:
    """Mixed ops in one batch: each image as torchvision's ops would give it, in the drawn order;
    trivialaugment draws one op per image, randaugment two; the draws cover every op."""
    oracle = torchvision_op(policy)
    images = photo_like(64, 3)
    rounds = draw(policy, 64, 20, 24, np.random.default_rng(5))
    assert len(rounds) == (1 if policy == "trivialaugment" else 2)
    expected = images.clone()
    for ops, values in rounds:
        expected = torch.stack([oracle(expected[i], OPS[o], float(v)) for i, (o, v) in enumerate(zip(ops, values))])
    got = apply_policy(images, policy, np.random.default_rng(5))
    assert torch.equal(got, expected)
    many = draw(policy, 2000, 20, 24, np.random.default_rng(0))[0][0]
    assert set(many.tolist()) == set(range(len(OPS)))
    assert torch.equal(apply_policy(images, policy, np.random.default_rng(5)), got)  # seeded


def test_the_same_seed_gives_the_same_batch() -> None:
    augment = PARAMS.augment
    train = dataclasses.replace(PARAMS.train, mixup_alpha=0.4, cutmix_alpha=1.0, seed=3)
    on = dataclasses.replace(augment, online=True, online_erasing=0.5, online_policy="trivialaugment")
    online = online_augment(on, train, num_classes=5)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (32, 1, 12, 12), dtype=np.uint8))
    labels = torch.arange(32) % 5

    def batch(augmenter: OnlineAugment) -> tuple[torch.Tensor, torch.Tensor]:
        return augmenter.batch(images, labels, lambda u8: u8.float() / 255, augmenter.draws(CPU))
    first, again = batch(online), batch(online)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    other = batch(dataclasses.replace(online, seed=4))
    assert not torch.equal(first[0], other[0])
    assert online_augment(augment, PARAMS.train, num_classes=5) is None  # the defaults: nothing per batch


def test_mixed_training_learns_with_label_smoothing_and_class_weights() -> None:
    """Soft targets go through the same criterion: label smoothing and class weights compose."""
    from classifier.training import loop as loop
    plain_model, plain = train_once(epochs=8)
    captured = []
    original = loop.train_step

    def spy(model, inputs, targets, *rest):
        captured.append(targets)
        return original(model, inputs, targets, *rest)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "train_step", spy)
        augment = OnlineAugment(1.0, 0.0, False, seed=0, resample=False, mixup_alpha=0.4, cutmix_alpha=1.0,
                                num_classes=3)
        _, mixed = train_once(epochs=8, augment=augment, label_smoothing=0.1, weights=torch.tensor([1.0, 2.0, 1.0]))
    assert captured[0].shape == (16, 3) and torch.allclose(captured[0].sum(1), torch.ones(16))
    assert mixed.history[-1].val_accuracy >= 0.9
    assert mixed.history[-1].train_objective > plain.history[-1].train_objective  # mixed targets are harder to fit


def test_cutmix_targets_weigh_the_share_actually_kept_on_non_square_images() -> None:
    """Image i is the constant i + 1, so the pasted box is where its pixels changed: the own-class
    target must be the share left, measured on the image (here 6×20, so height × height is wrong)."""
    n, height, width = 8, 6, 20
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, height, width).contiguous()
    labels = torch.arange(n)
    checked = 0
    for seed in range(20):
        mixed, targets = mix(x, labels, n, 0.0, 1.0, np.random.default_rng(seed))
        for i in range(n):
            pasted = (mixed[i] != i + 1).float().mean().item()
            if 0 < pasted < 1:
                assert targets[i, i].item() == pytest.approx(1 - pasted, abs=1e-6)
                checked += 1
    assert checked > 20


@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment"])
def test_the_magnitude_tables_are_torchvisions_own(policy: str) -> None:
    """Each op's magnitudes against torchvision's own augmentation space (not a copy of ours), on a
    non-square image so that a swapped height and width shows."""
    from torchvision.transforms import v2
    height, width = 24, 40
    space = (v2.TrivialAugmentWide() if policy == "trivialaugment" else v2.RandAugment())._AUGMENTATION_SPACE
    assert set(space) == set(OPS)
    for op, (table, _signed) in space.items():
        theirs = table(31, height, width)
        ours = magnitudes(policy, op, height, width)
        if theirs is None or theirs.ndim == 0:  # an op without a magnitude
            assert ours is None, op
        else:
            np.testing.assert_array_equal(ours, theirs.numpy(), err_msg=op)
