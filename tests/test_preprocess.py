"""The preprocessing contract: normalisation measured on train only (standard or min-max), applied
on the device by one Normalizer, and carried through stats.json and the checkpoint unchanged."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from classifier.runtime.errors import PipelineError
from classifier.data.image_format import format_image
from classifier.models.registry import pretrained_input_stats
from classifier.params.whole_file import load_params
from classifier.data.preprocessing import Normalizer, Preprocessing, channel_stats
from tests.helpers import ROOT

PREPARE = load_params("prepare", path=ROOT / "params.yaml").prepare


def test_channel_stats_match_numpy_in_chunks() -> None:
    images = np.random.default_rng(0).integers(10, 240, (37, 5, 6, 3), dtype=np.uint8)
    stats = channel_stats(images, chunk=8)
    pixels = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(stats["mean"], pixels.mean(axis=0))
    np.testing.assert_allclose(stats["std"], pixels.std(axis=0))
    np.testing.assert_allclose(stats["min"], pixels.min(axis=0))
    np.testing.assert_allclose(stats["max"], pixels.max(axis=0))


def normalized(preprocessing: Preprocessing, images: np.ndarray) -> np.ndarray:
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    return preprocessing.normalizer()(batch).numpy()


def test_minmax_maps_the_train_range_onto_0_to_1() -> None:
    images = np.array([50, 100, 250], dtype=np.uint8).reshape(3, 1, 1, 1)
    preprocessing, _ = Preprocessing.measure(dataclasses.replace(PREPARE, normalize="minmax"), images)
    np.testing.assert_allclose(normalized(preprocessing, images).reshape(-1), [0.0, 0.25, 1.0], atol=1e-6)


def test_standard_gives_zero_mean_unit_std_and_never_divides_by_zero() -> None:
    images = np.random.default_rng(1).integers(0, 256, (20, 4, 4, 1), dtype=np.uint8)
    preprocessing, _ = Preprocessing.measure(dataclasses.replace(PREPARE, normalize="standard"), images)
    z = normalized(preprocessing, images)
    assert abs(z.mean()) < 1e-5 and z.std() == pytest.approx(1.0, rel=1e-5)
    blank, _ = Preprocessing.measure(PREPARE, np.zeros((3, 2, 2, 1), np.uint8))
    assert blank.std == (1e-6,) and np.isfinite(normalized(blank, np.zeros((1, 2, 2, 1), np.uint8))).all()


def test_normalizer_is_per_channel() -> None:
    batch = torch.tensor([255, 0, 51], dtype=torch.uint8).view(1, 3, 1, 1)
    out = Normalizer((0.5, 0.0, 0.1), (0.25, 1.0, 0.5))(batch).view(-1).tolist()
    assert out == pytest.approx([2.0, 0.0, 0.2])


def test_round_trip_through_a_file_keeps_every_field(tmp_path) -> None:
    image = dataclasses.replace(PREPARE, grayscale=False, image_size=(20, 28), resize="pad", pad_value=7)
    original = Preprocessing(image, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    original.write(tmp_path / "stats.json", {"mean": [0.1, 0.2, 0.3]})
    assert Preprocessing.read(tmp_path / "stats.json") == original
    assert original.input_shape == (3, 20, 28)
    assert format_image(np.full((10, 10, 1), 9, np.uint8), original.image).shape == (20, 28, 3)


@pytest.mark.parametrize("damage,message", [
    (lambda d: d.pop("mean"), "no valid preprocessing"),
    (lambda d: d["image"].update(image_size=1), "no valid preprocessing"),
    (lambda d: d.update(std=[0.5, 0.5]), r"does not fit 1 channel\(s\)"),
    (lambda d: d.update(std=[0.0]), r"does not fit 1 channel\(s\)"),
])
def test_a_damaged_contract_is_one_error_naming_the_file(damage, message) -> None:
    data = Preprocessing(PREPARE, (0.5,), (0.2,)).to_dict()
    damage(data)
    with pytest.raises(PipelineError, match=f"^somewhere.json: .*{message}"):
        Preprocessing.from_dict(data, "somewhere.json")


def _sign(ink: int, paper: int, margin: int = 0, margin_grey: int = 0) -> np.ndarray:
    """A 40×40 'digit' (a thick L) in `ink` on `paper`, inside a `margin` of `margin_grey`."""
    image = np.full((40, 40, 1), paper, np.uint8)
    image[8:32, 10:16] = ink
    image[26:32, 10:30] = ink
    if margin:
        framed = np.full((40 + 2 * margin, 40 + 2 * margin, 1), margin_grey, np.uint8)
        framed[margin:-margin, margin:-margin] = image
        return framed
    return image


def test_invert_makes_dark_ink_on_paper_and_light_ink_on_a_screen_one_kind() -> None:
    base = dataclasses.replace(PREPARE, image_size=(16, 16), resize="stretch")
    on_paper, on_screen = _sign(ink=20, paper=235), _sign(ink=235, paper=20)
    dark = dataclasses.replace(base, invert="dark")
    np.testing.assert_array_equal(format_image(on_paper, dark), format_image(on_screen, dark))
    assert format_image(on_paper, dark)[0, 0, 0] == 20  # the background is the dark one
    light = dataclasses.replace(base, invert="light")
    assert format_image(on_screen, light)[0, 0, 0] == 235
    assert not np.array_equal(format_image(on_paper, base), format_image(on_screen, base))  # none: as they came


def test_trim_crops_a_uniform_margin_so_the_sign_fills_the_frame() -> None:
    from classifier.data.image_format import trim_border
    sign = _sign(ink=20, paper=235)
    rng = np.random.default_rng(0)
    scanned = _sign(ink=20, paper=235, margin=30, margin_grey=120)
    scanned = np.clip(scanned.astype(int) + rng.integers(-6, 7, scanned.shape), 0, 255).astype(np.uint8)  # scan noise
    trimmed = trim_border(scanned)
    assert trimmed.shape == sign.shape  # the grey margin is gone, the sign's own paper stays
    params = dataclasses.replace(PREPARE, image_size=(16, 16), trim=True)
    as_drawn = format_image(sign, dataclasses.replace(params, trim=False))
    difference = np.abs(format_image(scanned, params).astype(int) - as_drawn.astype(int))
    assert difference.max() <= 8
    blank = np.full((10, 10, 1), 7, np.uint8)
    np.testing.assert_array_equal(trim_border(blank), blank)  # nothing but border: kept whole


@pytest.mark.parametrize("channels", [1, 3])
def test_normalisation_follows_the_weights(channels) -> None:
    """imagenet: ImageNet's constants (their average for grey); auto: the train split's own, until train
    says the weights are pretrained: then those the weights were trained with."""
    images = np.random.default_rng(0).integers(0, 256, (50, 8, 8, channels), dtype=np.uint8)
    prepare = dataclasses.replace(PREPARE, grayscale=channels == 1, image_size=(8, 8))
    imagenet, _ = Preprocessing.measure(dataclasses.replace(prepare, normalize="imagenet"), images)
    expected = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if channels == 3 else ((0.449,), (0.226,))
    assert imagenet.mean == pytest.approx(expected[0], abs=1e-6) and imagenet.std == pytest.approx(expected[1], abs=1e-6)
    standard, _ = Preprocessing.measure(dataclasses.replace(prepare, normalize="standard"), images)
    auto, _ = Preprocessing.measure(dataclasses.replace(prepare, normalize="auto"), images)
    assert (auto.mean, auto.std) == (standard.mean, standard.std)
    assert auto.for_weights(None) == auto
    resnet = auto.for_weights(pretrained_input_stats("resnet18", channels))
    assert (resnet.mean, resnet.std) == (imagenet.mean, imagenet.std)
    lite = auto.for_weights(pretrained_input_stats("efficientnet_lite0", channels))  # (pixel - 127) / 128
    assert lite.mean == (127 / 255,) * channels and lite.std == (128 / 255,) * channels
    assert standard.for_weights(pretrained_input_stats("resnet18", channels)) == standard  # only auto follows them


def test_channel_stats_take_the_same_values_in_any_chunks_and_bounded_memory(monkeypatch) -> None:
    """Exact integer sums: chunks of 1, 7 or the default give the same numbers; the default chunk
    holds STATS_CHUNK_BYTES of pixels, whatever the image size (4,096 images of 224×224 took 9.5 GB)."""
    import tracemalloc

    from classifier.data import preprocessing
    images = np.random.default_rng(0).integers(0, 256, (40, 96, 96, 3), dtype=np.uint8)
    whole = preprocessing.channel_stats(images, chunk=len(images))
    assert preprocessing.channel_stats(images, chunk=1) == preprocessing.channel_stats(images, chunk=7) == whole
    monkeypatch.setattr(preprocessing, "STATS_CHUNK_BYTES", 4 * images[0].nbytes)  # 4 images a chunk
    tracemalloc.start()
    assert preprocessing.channel_stats(images) == whole
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 10 * images[0].nbytes, peak  # int64 sums and squares of 4 images, not of 40
