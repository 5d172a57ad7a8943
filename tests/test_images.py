"""Pure image functions: resize never pads, blur is a box filter, flips are exact."""
from __future__ import annotations

import numpy as np
import pytest

from stages.augment import write_augmented_images
from stages.lib.images import (Variant, augment_into, augmentation_variants, box_blur, hflip, resize_stretch, to_grayscale,
                               to_rgb, vflip)


def reference_box_blur(image: np.ndarray, k: int) -> np.ndarray:
    """Mean over k×k with reflect-101 borders (numpy's 'reflect'), written the slow obvious way."""
    r = k // 2
    padded = np.pad(image.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="reflect")
    out = np.zeros(image.shape, dtype=np.float64)
    for dy in range(k):
        for dx in range(k):
            out += padded[dy:dy + image.shape[0], dx:dx + image.shape[1]]
    return out / (k * k)


@pytest.mark.parametrize("k", [3, 5, 9])
@pytest.mark.parametrize("channels", [1, 3])
def test_box_blur_equals_reference(k: int, channels: int) -> None:
    rng = np.random.default_rng(k)
    images = rng.integers(0, 256, size=(4, 13, 17, channels), dtype=np.uint8)
    out = box_blur(images, k)
    assert out.shape == images.shape and out.dtype == np.uint8
    for image, blurred in zip(images, out):
        expected = reference_box_blur(image, k)
        assert np.abs(blurred.astype(np.float64) - expected).max() <= 0.5 + 1e-9  # rounded to nearest


def test_box_blur_float_is_exact() -> None:
    image = np.random.default_rng(0).random((1, 11, 9, 1)).astype(np.float32)
    np.testing.assert_allclose(box_blur(image, 5)[0], reference_box_blur(image[0], 5), atol=1e-5)


def test_flips_are_exact_and_involutive() -> None:
    images = np.arange(2 * 3 * 4 * 1, dtype=np.uint8).reshape(2, 3, 4, 1)
    np.testing.assert_array_equal(hflip(images)[1, 2, :, 0], images[1, 2, ::-1, 0])
    np.testing.assert_array_equal(vflip(images)[0, :, 1, 0], images[0, ::-1, 1, 0])
    np.testing.assert_array_equal(hflip(hflip(images)), images)
    np.testing.assert_array_equal(vflip(vflip(images)), images)


@pytest.mark.parametrize("shape,size", [((30, 60, 3), (32, 32)), ((90, 20, 1), (16, 16)), ((8, 8, 1), (32, 24))])
def test_resize_stretch_never_pads(shape, size) -> None:
    # A uniformly bright image stays uniformly bright: a letterbox would bring in black pixels.
    image = np.full(shape, 200, dtype=np.uint8)
    out = resize_stretch(image, size)
    assert out.shape == (*size, shape[2])
    assert out.min() == 200 and out.max() == 200


def test_resize_stretch_keeps_the_corners() -> None:
    # Content reaches every edge: the four corner colours of the input land in the output's corners.
    image = np.zeros((40, 80, 1), dtype=np.uint8)
    image[:20, :40], image[:20, 40:], image[20:, :40], image[20:, 40:] = 10, 80, 160, 240
    out = resize_stretch(image, (16, 16))[:, :, 0]
    assert (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]) == (10, 80, 160, 240)


def test_grayscale_and_rgb() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 1] = 255  # pure green
    grey = to_grayscale(rgb)
    assert grey.shape == (2, 2, 1) and int(grey[0, 0, 0]) == round(0.587 * 255)
    assert to_rgb(grey).shape == (2, 2, 3)
    assert to_grayscale(grey) is grey or np.array_equal(to_grayscale(grey), grey)


@pytest.mark.parametrize("kernels,h,v", [((), False, False), ((3,), False, False), ((3, 5, 7), True, False),
                                         ((3, 5), True, True)])
def test_variant_count_and_order(kernels, h, v) -> None:
    variants = augmentation_variants(kernels, h, v)
    assert len(variants) == (1 + len(kernels)) * (1 + h + v)
    assert variants[0] == Variant() and variants[0].name == "original"
    assert len({variant.name for variant in variants}) == len(variants)


def test_variant_applies_blur_then_flip() -> None:
    images = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_array_equal(Variant(5, "h").apply(images), hflip(box_blur(images, 5)))
    np.testing.assert_array_equal(Variant().apply(images), images)
    assert Variant(5, "h").name == "blur5+hflip"


def test_augment_into_writes_every_variant_image_major() -> None:
    images = np.random.default_rng(2).integers(0, 256, (7, 9, 9, 1), dtype=np.uint8)
    variants = augmentation_variants((3, 5), True, True)
    out = np.zeros((7 * len(variants), 9, 9, 1), dtype=np.uint8)
    augment_into(images, variants, out)
    assert len(out) == 7 * (1 + 2) * (1 + 1 + 1)
    for v, variant in enumerate(variants):
        np.testing.assert_array_equal(out[v::len(variants)], variant.apply(images))
    with pytest.raises(ValueError, match="expected"):
        augment_into(images, variants, out[:-1])


def test_augment_into_a_flip_without_its_unflipped_variant() -> None:
    images = np.random.default_rng(3).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    variants = [Variant(3, "v")]
    out = np.zeros((2, 5, 6, 3), dtype=np.uint8)
    augment_into(images, variants, out)
    np.testing.assert_array_equal(out, vflip(box_blur(images, 3)))


def test_write_augmented_images_streams_a_valid_npy(tmp_path) -> None:
    images = np.random.default_rng(4).integers(0, 256, (11, 8, 8, 1), dtype=np.uint8)
    variants = augmentation_variants((3,), True, False)
    rows = write_augmented_images(images, variants, tmp_path / "images.npy", chunk=4)  # partial last block
    expected = np.empty((11 * 4, 8, 8, 1), dtype=np.uint8)
    augment_into(images, variants, expected)
    assert rows == 44
    np.testing.assert_array_equal(np.load(tmp_path / "images.npy"), expected)
