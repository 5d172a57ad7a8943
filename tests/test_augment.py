"""Augmentation: exact counts, originals kept byte for byte, classes and clones, determinism."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from classifier.augment.offline import AugmentPlan, Variant, augment_block, augmentation_variants
from classifier.runtime.errors import PipelineError
from classifier.data.image_files import read_image
from classifier.params.augment import AugmentParams
from classifier.params.checks import load_sections
from stages.augment import augmented_mask, plan_from, write_augmented
from tests.helpers import ROOT

BASE = load_sections(AugmentParams, path=ROOT / "params.yaml").augment
N = 300  # more than one block of augment.CHUNK (256): the last block is partial


def sources(n: int = N, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (n, 12, 10, channels), dtype=np.uint8)


def run(tmp_path, images, plan, seed=0, augmented=None):
    augmented = np.ones(len(images), bool) if augmented is None else augmented
    blocks = []
    write_augmented(images, augmented, plan, seed, tmp_path / "images.npy",
                    lambda start, block: blocks.append((start, block)))
    rows = np.load(tmp_path / "images.npy")
    source = np.concatenate([start + block.source for start, block in blocks])
    copy = np.concatenate([block.copy for _, block in blocks])
    return rows, source, copy


@pytest.mark.parametrize("kernels,h,v", [((), False, False), ((3,), False, False), ((3, 5, 7, 9, 11, 13, 15, 17), True, False),
                                         ((3, 5), True, True)])
def test_count_is_originals_times_blurs_times_flips(tmp_path, kernels, h, v) -> None:
    plan = plan_from(dataclasses.replace(BASE, blur_kernels=kernels, hflip=h, vflip=v))
    rows, source, copy = run(tmp_path, sources(), plan)
    assert len(rows) == N * (1 + len(kernels)) * (1 + h + v)
    assert np.bincount(source).tolist() == [plan.copies] * N


def test_the_seed_setting_multiplies_by_18_and_rows_match_each_variant(tmp_path) -> None:
    plan = plan_from(dataclasses.replace(BASE, blur_kernels=(3, 5, 7, 9, 11, 13, 15, 17), hflip=True))
    images = sources(40)
    rows, source, copy = run(tmp_path, images, plan)
    assert len(rows) == 40 * 18
    for v, variant in enumerate(plan.variants):
        np.testing.assert_array_equal(rows[copy == v], variant.apply(images))


def test_originals_are_kept_byte_for_byte_even_with_random_copies(tmp_path) -> None:
    plan = plan_from(dataclasses.replace(BASE, blur_kernels=(3,), rotation=20, noise_std=15, clones=2))
    images = sources()
    rows, source, copy = run(tmp_path, images, plan)
    np.testing.assert_array_equal(rows[copy == 0], images)
    assert len(rows) == N * 2 * 2
    assert not np.array_equal(rows[copy == 2], images)  # the second clone's "original" is perturbed


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path) -> None:
    plan = plan_from(dataclasses.replace(BASE, blur_kernels=(3,), hflip=True, rotation=10, noise_std=5))
    images = sources()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    first, _, _ = run(tmp_path / "a", images, plan, seed=1)
    again, _, _ = run(tmp_path / "b", images, plan, seed=1)
    other, _, _ = run(tmp_path / "c", images, plan, seed=2)
    assert (tmp_path / "a/images.npy").read_bytes() == (tmp_path / "b/images.npy").read_bytes()
    assert not np.array_equal(first, other)


def test_clones_without_randomness_repeat_the_variants(tmp_path) -> None:
    plan = plan_from(dataclasses.replace(BASE, blur_kernels=(3,), clones=3))
    rows, source, copy = run(tmp_path, sources(20), plan)
    assert len(rows) == 20 * 2 * 3
    assert plan.copy_name(3) == "blur3#2" and plan.copy_name(0) == "original"
    np.testing.assert_array_equal(rows[copy == 1], rows[copy == 5])


def test_only_listed_classes_get_copies(tmp_path) -> None:
    labels = np.arange(N) % 3
    mask = augmented_mask(labels, ["a", "b", "c"], ("b",))
    plan = plan_from(dataclasses.replace(BASE, blur_kernels=(3,), hflip=True))
    rows, source, copy = run(tmp_path, sources(), plan, augmented=mask)
    per_source = np.bincount(source, minlength=N)
    assert (per_source[labels == 1] == 4).all() and (per_source[labels != 1] == 1).all()
    assert len(rows) == int(mask.sum()) * 4 + int((~mask).sum())


def test_unknown_class_in_augment_classes() -> None:
    with pytest.raises(PipelineError, match=r"'augment.classes' parameter names unknown class\(es\) zebra; "
                                            r"classes: a, b"):
        augmented_mask(np.array([0, 1]), ["a", "b"], ("zebra",))


def test_plan_needs_the_original_first() -> None:
    with pytest.raises(ValueError, match="original"):
        AugmentPlan((Variant(3),))
    block = augment_block(sources(4, 3), np.ones(4, bool), AugmentPlan(tuple(augmentation_variants((), True, False))),
                          np.random.default_rng(0))
    assert block.images.shape == (8, 12, 10, 3) and block.copy.tolist() == [0, 1] * 4


def test_a_blur_wider_than_the_images_is_refused() -> None:
    from classifier.params.whole_file import validate
    from tests.helpers import ROOT, read_params
    raw = read_params(ROOT / "params.yaml")
    raw["prepare"]["image_size"] = [32, 40]
    raw["augment"]["blur_kernels"] = [3, 31]
    validate(raw)
    raw["augment"]["blur_kernels"] = [3, 33]
    with pytest.raises(PipelineError, match=r"kernels no wider than the 32×40 prepared images "
                                            r"\(prepare.image_size: 32 px\). Got \[3, 33\] instead"):
        validate(raw)


def test_the_preview_shows_every_class_and_names_every_transform(monkeypatch, tmp_path) -> None:
    import cv2
    import pandas as pd

    import stages.augment as augment
    shown = {}
    monkeypatch.setattr(augment, "plot_image_grid", lambda rows, titles, path, **_: shown.update(rows=rows, titles=titles))
    classes = [f"c{i}" for i in range(12)]
    labels = np.repeat(np.arange(12), 3)  # per class: the original, a rotated blur, a rotated flip
    sources = [tmp_path / f"s{i}.png" for i in range(12)]
    for i, source in enumerate(sources):
        cv2.imwrite(str(source), np.full((20, 30), 10 * i, np.uint8))
    index = pd.DataFrame({"source": np.repeat([str(s) for s in sources], 3),
                          "augmentation": ["original", "blur5", "hflip"] * 12, "rotation": [0.0, 12.3, -4.0] * 12})
    augment.preview(np.zeros((36, 8, 8, 1), np.uint8), labels, index, classes, 5.0, tmp_path / "p.png",
                    lambda key: read_image(Path(key)))
    assert len(shown["rows"]) == 12 and [len(r) for r in shown["rows"]] == [4] * 12  # 12 classes, not 6
    # The raw file first, so that what prepare did to it (trim, invert, resize) is in sight.
    np.testing.assert_array_equal(shown["rows"][11][0][:, :, 0], np.full((20, 30), 110, np.uint8))
    assert shown["titles"][11] == ["c11: raw file", "c11: original", "c11: blur5\nrot +12.3° noise σ5",
                                   "c11: hflip\nrot -4.0° noise σ5"]
