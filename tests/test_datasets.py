"""Folder reading, image decoding, the stratified split and atomic writes."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from classifier.runtime.errors import PipelineError
from classifier.data.folder_listing import list_class_folder
from classifier.data.image_files import read_image
from classifier.runtime.outputs import atomic_dir, atomic_file
from stages.split import downsample, merge_and_drop, stratified_split
from tests.helpers import make_image_folder

FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
NAMES = [str(i) for i in range(3)]


def labels_of(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


def test_split_is_disjoint_complete_and_stratified() -> None:
    labels = labels_of([100, 50, 30])
    parts = stratified_split(labels, FRACTIONS, seed=0, class_names=NAMES)
    rows = np.concatenate(list(parts.values()))
    assert len(rows) == len(labels) and len(np.unique(rows)) == len(labels)
    for name, fraction in FRACTIONS.items():
        for c, n in enumerate([100, 50, 30]):
            assert abs(np.sum(labels[parts[name]] == c) - n * fraction) <= 1, (name, c)


def test_split_is_deterministic_for_a_seed() -> None:
    labels = labels_of([40, 40, 40])
    a = stratified_split(labels, FRACTIONS, seed=3, class_names=NAMES)
    b = stratified_split(labels, FRACTIONS, seed=3, class_names=NAMES)
    c = stratified_split(labels, FRACTIONS, seed=4, class_names=NAMES)
    assert all(np.array_equal(a[k], b[k]) for k in FRACTIONS)
    assert not all(np.array_equal(a[k], c[k]) for k in FRACTIONS)


def test_every_split_gets_every_class_even_when_small() -> None:
    parts = stratified_split(labels_of([3, 5, 4]), FRACTIONS, seed=0, class_names=NAMES)
    labels = labels_of([3, 5, 4])
    for rows in parts.values():
        assert set(labels[rows]) == {0, 1, 2}


def test_class_too_small_to_split_is_named() -> None:
    with pytest.raises(PipelineError, match="class '1' has 2 image"):
        stratified_split(labels_of([10, 2, 10]), FRACTIONS, seed=0, class_names=NAMES)


@pytest.mark.parametrize("suffix,channels", [(".png", 3), (".jpg", 3), (".bmp", 1), (".png", 1), (".webp", 3),
                                             (".tif", 3), (".tiff", 1), (".gif", 3)])
def test_read_image_formats(tmp_path, suffix, channels) -> None:
    make_image_folder(tmp_path, {"a": 1}, size=(6, 9), channels=channels, suffix=suffix)
    image = read_image(tmp_path / "a" / f"img_000{suffix}")
    assert image.dtype == np.uint8 and image.shape == (6, 9, channels)


@pytest.mark.parametrize("suffix", [".webp", ".tif", ".tiff", ".png", ".bmp", ".gif"])
@pytest.mark.parametrize("damage", ["cut in half", "cut 10 bytes short", "garbage"])
def test_a_corrupt_image_of_each_format_is_one_error_naming_it(tmp_path, suffix, damage) -> None:
    ok, encoded = cv2.imencode(suffix, np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    data = encoded.tobytes()
    damaged = {"cut in half": data[:len(data) // 2], "cut 10 bytes short": data[:-10], "garbage": b"garbage" * 9}[damage]
    (tmp_path / f"bad{suffix}").write_bytes(damaged)
    with pytest.raises(PipelineError, match=rf"bad\{suffix}: not a readable image \(corrupt or not PNG/JPEG/BMP/WebP/TIFF/GIF\)"):
        read_image(tmp_path / f"bad{suffix}")


def test_a_folder_of_web_photos_is_listed_not_skipped(tmp_path) -> None:
    for suffix in (".webp", ".tif", ".tiff"):
        make_image_folder(tmp_path, {"a": 2, "b": 2}, size=(6, 9), suffix=suffix)
    listing = list_class_folder(tmp_path)
    assert sorted(Path(p).suffix for p, _ in listing.files) == sorted([".webp", ".tif", ".tiff"] * 4) and not listing.skipped


def test_read_image_converts_bgr_to_rgb_and_drops_alpha(tmp_path) -> None:
    bgra = np.zeros((4, 4, 4), dtype=np.uint8)
    bgra[..., 0], bgra[..., 3] = 255, 128  # blue in OpenCV's order, half transparent
    cv2.imwrite(str(tmp_path / "blue.png"), bgra)
    image = read_image(tmp_path / "blue.png")
    assert image.shape == (4, 4, 3) and image[0, 0].tolist() == [0, 0, 255]


def test_read_image_16_bit(tmp_path) -> None:
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((4, 4), 65535, dtype=np.uint16))
    image = read_image(tmp_path / "deep.png")
    assert image.dtype == np.uint8 and image.max() == 255


def test_read_image_errors_name_the_file(tmp_path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg \xff\xda \xff\xd9")
    with pytest.raises(PipelineError, match=r"empty\.png: empty \(zero-byte\) image file"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(PipelineError, match=r"corrupt\.jpg: not a readable image"):
        read_image(tmp_path / "corrupt.jpg")


def test_list_class_folder_skips_hidden_and_non_images(tmp_path) -> None:
    make_image_folder(tmp_path, {"cat": 2, "dog": 3})
    (tmp_path / "cat" / "notes.txt").write_text("x")
    (tmp_path / "dog" / ".hidden.png").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    listing = list_class_folder(tmp_path)
    assert [label for _, label in listing.files] == ["cat"] * 2 + ["dog"] * 3
    assert sorted(p.name for p in listing.skipped) == [".git", ".hidden.png", "notes.txt"]


def test_list_class_folder_errors(tmp_path) -> None:
    with pytest.raises(PipelineError, match="data folder .*missing not found"):
        list_class_folder(tmp_path / "missing")
    make_image_folder(tmp_path / "one", {"only": 3})
    with pytest.raises(PipelineError, match="at least two class subfolders, found 1"):
        list_class_folder(tmp_path / "one")
    make_image_folder(tmp_path / "hollow", {"a": 3})
    (tmp_path / "hollow" / "b").mkdir()
    with pytest.raises(PipelineError, match=r"class folder .*hollow/b holds no image \(PNG/JPEG/BMP/WebP/TIFF/GIF\)"):
        list_class_folder(tmp_path / "hollow")


def test_atomic_dir_keeps_old_output_on_failure(tmp_path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("stage failed")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind


def test_atomic_file_writes_nothing_on_failure(tmp_path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "model.pt") as tmp:
            tmp.write_text("partial")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []



def test_min_per_split_is_honoured_and_named_in_the_error() -> None:
    labels = labels_of([20, 20, 20])
    parts = stratified_split(labels, FRACTIONS, seed=0, class_names=NAMES, min_per_split=4)
    for rows in parts.values():
        assert np.bincount(labels[rows]).min() >= 4
    with pytest.raises(PipelineError, match=r"class '0' has 8 image\(s\); the split needs at least 9: 3 "
                                            r"\(split.min_per_split\) for each of train, val, test"):
        stratified_split(labels_of([8, 20, 20]), FRACTIONS, seed=0, class_names=NAMES, min_per_split=3)


def test_merge_then_drop() -> None:
    labels = ["cat", "dog", "owl", "bat", "cat"]
    assert merge_and_drop(labels, {"cat": "pet", "dog": "pet"}, ("bat",)) == ["pet", "pet", "owl", None, "pet"]
    with pytest.raises(PipelineError, match=r"'split.merge' parameter names unknown class\(es\) cow; "
                                            r"classes: bat, cat, dog, owl"):
        merge_and_drop(labels, {"cow": "pet"}, ())
    with pytest.raises(PipelineError, match=r"'split.drop' parameter names unknown class\(es\) cat; "
                                            r"classes after split.merge: bat, owl, pet"):
        merge_and_drop(labels, {"cat": "pet", "dog": "pet"}, ("cat",))
    with pytest.raises(PipelineError, match="fewer than two classes are left"):
        merge_and_drop(labels, {}, ("cat", "dog", "owl"))


@pytest.mark.parametrize("cap,balance,expected", [(0, False, [50, 20, 5]), (10, False, [10, 10, 5]),
                                                  (0, True, [5, 5, 5]), (3, True, [3, 3, 3])])
def test_downsample_caps_and_balances(cap, balance, expected) -> None:
    labels = labels_of([50, 20, 5])
    kept = downsample(labels, cap, balance, np.random.default_rng(0))
    assert np.bincount(labels[kept]).tolist() == expected
    assert np.array_equal(kept, downsample(labels, cap, balance, np.random.default_rng(0)))
