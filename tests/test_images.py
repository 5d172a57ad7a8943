"""Pure image functions: resize never pads, blur is a box filter, flips are exact."""
from __future__ import annotations

import numpy as np
import pytest

from classifier.augment.offline import (add_noise, augment_into, augmentation_variants, box_blur, hflip, rotate, Variant,
                                      vflip)
from classifier.data.image_format import resize, resize_stretch, to_grayscale, to_rgb


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



def gradient(h: int, w: int) -> np.ndarray:
    """A bright image whose every pixel differs from its neighbours: no constant border of its own."""
    y, x = np.mgrid[0:h, 0:w]
    return (100 + (x * 97 + y * 31) % 150).astype(np.uint8)[:, :, None]


def border_is_constant(image: np.ndarray, width: int = 2) -> bool:
    edges = [image[:width], image[-width:], image[:, :width], image[:, -width:]]
    return any(np.unique(edge).size == 1 for edge in edges)


@pytest.mark.parametrize("mode", ["stretch", "crop"])
@pytest.mark.parametrize("shape,size", [((30, 90), (32, 32)), ((90, 30), (32, 32)), ((40, 40), (16, 48))])
def test_stretch_and_crop_leave_no_constant_border(mode, shape, size) -> None:
    out = resize(gradient(*shape), size, mode)
    assert out.shape == (*size, 1)
    assert out.min() >= 100  # no black pixel came in
    assert not border_is_constant(out)


def test_crop_keeps_the_centre_and_loses_the_sides() -> None:
    image = np.zeros((20, 60, 1), dtype=np.uint8)
    image[:, :20], image[:, 20:40], image[:, 40:] = 50, 150, 250  # left, centre, right thirds
    out = resize(image, (10, 10), "crop", "nearest")
    assert np.unique(out).tolist() == [150]


@pytest.mark.parametrize("pad_mode,value", [("constant", 0), ("constant", 127)])
def test_pad_letterboxes_only_when_asked(pad_mode, value) -> None:
    out = resize(np.full((20, 60, 1), 200, np.uint8), (30, 30), "pad", pad_mode=pad_mode, pad_value=value)
    assert out.shape == (30, 30, 1)
    assert (out[:10] == value).all() and (out[-10:] == value).all()  # bars above and below
    assert (out[10:20] == 200).all()  # the whole picture, scaled to the width


def test_pad_reflect_mirrors_the_border() -> None:
    image = gradient(10, 30)
    out = resize(image, (30, 30), "pad", pad_mode="reflect")
    assert out.min() >= 100 and out.shape == (30, 30, 1)
    np.testing.assert_array_equal(out[9], out[11])  # reflect-101 about the first picture row (10)


def step_edge() -> np.ndarray:
    """A 4×8 grey image: left half 100, right half 200."""
    return np.repeat(np.array([[100] * 4 + [200] * 4], np.uint8), 4, axis=0)[:, :, None]


@pytest.mark.parametrize("name", ["nearest", "linear", "cubic", "area", "auto"])
def test_each_interpolation_behaves_as_its_name_says(name) -> None:
    """What each filter is for, seen on a step edge enlarged 4× and a noisy image shrunk 3×."""
    enlarged = set(np.unique(resize(step_edge(), (16, 32), "stretch", name)).tolist())
    if name in ("nearest", "area"):
        assert enlarged == {100, 200}  # enlarging copies pixels: no new grey levels
    if name in ("linear", "auto"):
        assert min(enlarged) == 100 and max(enlarged) == 200 and len(enlarged) > 2  # blends, never overshoots
    if name == "cubic":
        assert min(enlarged) < 100 and max(enlarged) > 200  # sharper: rings beyond the edge's two levels
    noisy = np.random.default_rng(0).integers(0, 256, (6, 6, 1), dtype=np.uint8)
    block_means = np.rint(noisy[:, :, 0].reshape(2, 3, 2, 3).mean(axis=(1, 3)))
    shrunk = resize(noisy, (2, 2), "stretch", name)[:, :, 0]
    # area (and auto, which shrinks with area) averages every source pixel; the others sample a few.
    assert np.array_equal(shrunk, block_means) == (name in ("area", "auto"))


def test_rotate_fills_corners_from_the_picture() -> None:
    image = np.full((32, 32, 1), 180, np.uint8)
    assert (rotate(image, 30) == 180).all()  # no black wedges in the corners
    np.testing.assert_array_equal(rotate(image, 0), image)
    arrow = np.zeros((33, 33, 1), np.uint8)
    arrow[16, 16:] = 255  # a ray pointing right, rotated a quarter turn counter-clockwise points up
    assert rotate(arrow, 90)[:16, 16, 0].mean() > 200


def test_noise_has_the_asked_spread_and_stays_in_range() -> None:
    images = np.full((50, 16, 16, 1), 128, np.uint8)
    noisy = add_noise(images, 10.0, np.random.default_rng(0))
    assert noisy.dtype == np.uint8 and abs(noisy.astype(float).std() - 10.0) < 0.5
    assert add_noise(np.full((2, 4, 4, 1), 250, np.uint8), 50.0, np.random.default_rng(0)).max() == 255
