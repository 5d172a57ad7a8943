"""Hostile input, made by the tests: a phone photo turned by EXIF, a truncated JPEG, a file name
that is not UTF-8, an image over OpenCV's pixel limit, symlinks, FIFOs, duplicates, a full disk,
Ctrl-C, a killed stage's leftovers. Each gets its one-line answer and leaves nothing behind."""
from __future__ import annotations

import errno
import json
import os
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from classifier.data.artifacts import allocate_images
from classifier.data.duplicates import near_duplicates, thumbnail
from classifier.runtime.errors import PipelineError, run_stage
from classifier.data.folder_listing import list_class_folder
from classifier.data.image_files import read_image
from classifier.runtime.outputs import atomic_dir, atomic_file
from classifier.data.shards import read_index
from stages import ingest
from tests.helpers import copy_project, make_image_folder


def jpeg_bytes(image: np.ndarray, orientation: int | None = None) -> bytes:
    """RGB image as a JPEG, with an EXIF Orientation tag when asked (as phones write them)."""
    data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    if orientation is None:
        return data
    entry = struct.pack("<HHII", 0x0112, 3, 1, orientation)  # tag Orientation, SHORT, 1 value
    exif = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:]


def photo(height: int = 60, width: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (9, 9), 0)


# --------------------------------------------------------------------------- the one image reader
def test_exif_orientation_turns_a_phone_photo_upright(tmp_path) -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :10] = 255  # a white band on the left of the stored pixels
    (tmp_path / "phone.jpg").write_bytes(jpeg_bytes(image, orientation=6))  # "rotate 90° clockwise to view"
    upright = read_image(tmp_path / "phone.jpg")
    assert upright.shape == (60, 40, 3)  # portrait, as the phone showed it
    assert upright[:8].mean() > 200 and upright[-20:].mean() < 30  # the band is on top now


def test_a_truncated_jpeg_is_corrupt_naming_the_file(tmp_path) -> None:
    data = jpeg_bytes(photo(300, 400))
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(PipelineError, match=r"cut\.jpg: truncated JPEG \(no end-of-image marker"):
        read_image(tmp_path / "cut.jpg")


def test_a_truncated_jpeg_with_an_exif_thumbnail_is_still_truncated(tmp_path) -> None:
    """A phone photo's EXIF block carries a small JPEG thumbnail with its own end-of-image marker,
    before the photo's own scan: only a marker after the last scan means the photo is whole."""
    thumbnail = jpeg_bytes(photo(16, 20, seed=1))
    exif = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<IH", 8, 0) + struct.pack("<I", 0) + thumbnail
    data = jpeg_bytes(photo(300, 400))
    with_thumbnail = data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:]
    assert read_image_bytes(with_thumbnail, tmp_path / "whole.jpg").shape == (300, 400, 3)
    cut = with_thumbnail[: len(with_thumbnail) - len(data) // 3]  # the thumbnail whole, the photo cut short
    assert cut.find(b"\xff\xd9") > 0  # the thumbnail's end-of-image marker is still there
    with pytest.raises(PipelineError, match=r"cut\.jpg: truncated JPEG \(no end-of-image marker"):
        read_image_bytes(cut, tmp_path / "cut.jpg")


def read_image_bytes(data: bytes, path: Path) -> np.ndarray:
    path.write_bytes(data)
    return read_image(path)


def test_an_image_over_opencvs_pixel_limit_is_one_error(tmp_path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)  # 40000×40000 grey, claimed by the header
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    (tmp_path / "huge.png").write_bytes(png)
    with pytest.raises(PipelineError, match=r"huge\.png: more than 2\^30 pixels, OpenCV's limit"):
        read_image(tmp_path / "huge.png")


def test_a_name_that_is_not_utf8_is_read_and_shown_escaped(tmp_path) -> None:
    name = os.fsdecode(b"\xff\xfe.png")
    cv2.imwrite(str(tmp_path / "ok.png"), np.full((5, 5), 9, np.uint8))
    (tmp_path / name).write_bytes((tmp_path / "ok.png").read_bytes())
    assert read_image(tmp_path / name).shape == (5, 5, 1)
    (tmp_path / name).write_bytes(b"junk")
    with pytest.raises(PipelineError, match=r"\\xff\\xfe\.png: not a readable image") as raised:
        read_image(tmp_path / name)
    str(raised.value).encode("utf-8")  # printable: no lone surrogates


# ------------------------------------------------------------------------------- folder listing
def test_symlinks_fifos_and_loose_files_are_skipped_and_counted(tmp_path) -> None:
    root = make_image_folder(tmp_path / "photos", {"cat": 2, "dog": 2})
    (root / "loop").symlink_to(root, target_is_directory=True)  # would list every image again as "loop"
    (root / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    (root / "cat" / "link.png").symlink_to(root / "dog" / "img_000.png")
    (root / "cat" / "broken.png").symlink_to(tmp_path / "gone.png")
    os.mkfifo(root / "dog" / "pipe.png")
    (root / "README.txt").write_text("loose file beside the class folders")
    listing = list_class_folder(root)
    assert [label for _, label in listing.files] == ["cat", "cat", "dog", "dog"]
    assert sorted(p.name for p in listing.skipped) == ["README.txt", "broken.png", "elsewhere", "link.png", "loop",
                                                       "pipe.png"]


# --------------------------------------------------------------------------- ingest, in process
def run_in(project: Path, main, monkeypatch, capsys) -> tuple[int, str, str]:
    """Run a stage's main() as `python -m stages.<name>` would, in `project`; exit code, stdout, stderr."""
    monkeypatch.chdir(project)
    with pytest.raises(SystemExit) as exited:
        run_stage(main)
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


def ingest_project(tmp_path: Path, source: Path, **data) -> Path:
    return copy_project(tmp_path / "project", {"data": {"source": str(source), **data}})


def test_ingest_keeps_non_utf8_names_under_printable_ones(tmp_path, monkeypatch, capsys) -> None:
    source = make_image_folder(tmp_path / "photos", {"cat": 3, "dog": 3})
    os.rename(source / "cat" / "img_000.png", source / "cat" / os.fsdecode(b"caf\xe9.png"))
    project = ingest_project(tmp_path, source)
    code, out, err = run_in(project, ingest.main, monkeypatch, capsys)
    assert code == 0, err
    assert "data/raw/cat/caf\\xe9.png" in set(read_index(project / "data/raw")["key"]) and "ingest: 6 images" in out


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_duplicates_are_listed_and_dropped_or_kept(tmp_path, monkeypatch, capsys) -> None:
    source = make_image_folder(tmp_path / "photos", {"cat": 4, "dog": 4}, size=(40, 60))
    (source / "cat" / "copy.png").write_bytes((source / "cat" / "img_001.png").read_bytes())  # same pixels
    big = cv2.imread(str(source / "dog" / "img_002.png"))
    cv2.imwrite(str(source / "dog" / "resized.jpg"), cv2.resize(big, (120, 80)), [cv2.IMWRITE_JPEG_QUALITY, 90])
    for mode, images in (("drop", 9), ("keep", 10)):
        project = ingest_project(tmp_path / mode, source, duplicates=mode)
        code, out, err = run_in(project, ingest.main, monkeypatch, capsys)
        assert code == 0, err
        report = json.loads((project / "data/raw/ingest.json").read_text())
        # Files are read in name order: copy.png comes first, so img_001.png is the repeat.
        assert report["images"] == images and ("data/raw/cat/img_001.png" in set(read_index(project / "data/raw")["key"])) == (mode == "keep")
        assert report["duplicates"] == [[str(source / "cat/img_001.png"), str(source / "cat/copy.png")]]
        assert report["near_duplicates"] == [[str(source / "dog/resized.jpg"), str(source / "dog/img_002.png")]]
        assert "1 duplicate image(s)" in out and "1 near-duplicate image(s)" in out


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_the_same_image_in_two_given_splits_is_an_error_naming_both(tmp_path, monkeypatch, capsys) -> None:
    source = tmp_path / "photos"
    make_image_folder(source / "train", {"a": 4, "b": 4})
    make_image_folder(source / "test", {"a": 2, "b": 2}, seed=5)
    (source / "test" / "b" / "leak.png").write_bytes((source / "train" / "a" / "img_003.png").read_bytes())
    code, _, err = run_in(ingest_project(tmp_path, source), ingest.main, monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 1
    assert (f"error: {source / 'test/b/leak.png'} (test) has the same pixels as {source / 'train/a/img_003.png'} "
            f"(train)") in err and "data.duplicates: keep" in err
    project = ingest_project(tmp_path / "keep", source, duplicates="keep")
    assert run_in(project, ingest.main, monkeypatch, capsys)[0] == 0
    # A resized copy in another split is no exact duplicate, but it is listed as a near one.
    leak = cv2.imread(str(source / "test" / "b" / "leak.png"))
    (source / "test" / "b" / "leak.png").unlink()
    cv2.imwrite(str(source / "test" / "a" / "bigger.png"), cv2.resize(leak, (90, 60)))
    project = ingest_project(tmp_path / "near", source)
    assert run_in(project, ingest.main, monkeypatch, capsys)[0] == 0
    report = json.loads((project / "data/raw/ingest.json").read_text())
    assert report["near_duplicates"] == [[str(source / "test/a/bigger.png"), str(source / "train/a/img_003.png")]]


def test_a_class_named_like_the_report_is_refused(tmp_path, monkeypatch, capsys) -> None:
    source = make_image_folder(tmp_path / "photos", {"ingest.json": 3, "dog": 3})
    code, _, err = run_in(ingest_project(tmp_path, source), ingest.main, monkeypatch, capsys)
    assert code == 1 and "the name ingest.json is taken by ingest's report; rename the folder" in err


def test_skip_corrupt_lists_truncated_and_huge_images(tmp_path, monkeypatch, capsys) -> None:
    source = make_image_folder(tmp_path / "photos", {"cat": 3, "dog": 3})
    data = jpeg_bytes(photo(300, 400))
    (source / "cat" / "cut.jpg").write_bytes(data[: len(data) // 3])
    project = ingest_project(tmp_path, source, skip_corrupt=True)
    code, out, _ = run_in(project, ingest.main, monkeypatch, capsys)
    assert code == 0 and f"skipped corrupt image {source / 'cat/cut.jpg'}" in out


# ------------------------------------------------------------------ full disk, Ctrl-C, leftovers
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(tmp_path, monkeypatch, capsys) -> None:
    source = make_image_folder(tmp_path / "photos", {"cat": 3, "dog": 3})
    project = ingest_project(tmp_path, source)
    monkeypatch.setattr(ingest.ShardWriter, "add", no_space)
    code, _, err = run_in(project, ingest.main, monkeypatch, capsys)
    assert code == 1 and err == ("error: disk full while writing data/raw: free some space and rerun "
                                 "(the earlier data/raw, if any, is unchanged)\n")
    assert not list((project / "data").glob(".*.tmp")) and not (project / "data/raw").exists()


def test_a_memory_mapped_array_reserves_its_disk_first(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(os, "posix_fallocate", no_space)  # what a full disk answers
    with pytest.raises(PipelineError, match="disk full while writing .*prepared"):
        with atomic_dir(tmp_path / "prepared") as out:
            allocate_images(out, (1000, 32, 32, 1))  # a memory map would have died with SIGBUS
    assert os.listdir(tmp_path) == []


def test_ctrl_c_exits_130_with_one_line_and_no_leftovers(tmp_path, monkeypatch, capsys) -> None:
    source = make_image_folder(tmp_path / "photos", {"cat": 3, "dog": 3})
    project = ingest_project(tmp_path, source)

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(ingest.ShardWriter, "add", interrupted)
    code, _, err = run_in(project, ingest.main, monkeypatch, capsys)
    assert code == 130 and err == "error: interrupted (Ctrl-C); outputs being written were discarded\n"
    assert not list((project / "data").glob(".*.tmp")) and not (project / "data/raw").exists()


def test_a_killed_stages_leftovers_are_removed_by_the_next_run(tmp_path) -> None:
    (tmp_path / ".augmented.x1y2.tmp").mkdir()
    (tmp_path / ".augmented.x1y2.tmp" / "images.npy").write_bytes(b"\0" * 1000)
    (tmp_path / ".data.json.k3.tmp").write_text("{")
    with atomic_dir(tmp_path / "augmented") as out:
        (out / "a").write_text("a")
    with atomic_file(tmp_path / "data.json") as tmp:
        tmp.write_text("{}")
    assert sorted(os.listdir(tmp_path)) == ["augmented", "data.json"]


@pytest.mark.parametrize("umask,folder,file", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600), (0o002, 0o775, 0o664)])
def test_outputs_respect_the_umask(tmp_path, umask, folder, file) -> None:
    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "out") as out:
            (out / "inner.txt").write_text("x")
        with atomic_file(tmp_path / "single.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == folder
    assert (tmp_path / "out" / "inner.txt").stat().st_mode & 0o777 == file
    assert (tmp_path / "single.json").stat().st_mode & 0o777 == file


def test_near_duplicates_pairs_each_copy_with_its_first_original() -> None:
    originals = [photo(seed=s) for s in range(3)]
    reencoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg_bytes(originals[2]), np.uint8), cv2.IMREAD_COLOR),
                             cv2.COLOR_BGR2RGB)
    copies = [cv2.resize(originals[1], (40, 30), interpolation=cv2.INTER_AREA), reencoded]
    thumbs = np.stack([thumbnail(i) for i in [*originals, *copies]])
    assert near_duplicates(thumbs, chunk=2) == [(1, 3), (2, 4)]


@pytest.mark.parametrize("args, message", [
    (["--start", "1", "--end", "0.1"], "lr_find needs 0 < --start < --end (finite) and 20 <= --steps <= 10000. "
                                       "Got --start 1, --end 0.1"),
    (["--steps", "5"], "--steps 5"),
    (["--steps", "1000000000"], "--steps 1000000000"),
    (["--end", "inf"], "--end inf"),
])
def test_lr_find_refuses_a_range_it_cannot_test(args, message) -> None:
    from tools.lr_find import main
    with pytest.raises(PipelineError, match=re.escape(message)):
        main(args)


def range_test(losses: list[float]):
    from tools.lr_find import RangeTest
    lrs = [1e-3 * 1.5 ** i for i in range(len(losses))]
    return RangeTest(lrs, losses, losses)  # already smooth


@pytest.mark.parametrize("losses, message", [
    ([2.3 * 3 ** i for i in range(12)], r"the loss never decreased: it rose from 2.3 at --start 100 .*: lower --start"),
    ([2.3] * 30, r"the loss never decreased \(from 2.3 to at best 2.3 up to --end 1000\).*raise --end"),
    ([2.3, 4.0, 9.0], r"the loss diverged within 3 steps from --start 100: lower --start"),
])
def test_lr_find_suggests_nothing_when_the_loss_never_falls(losses, message) -> None:
    with pytest.raises(PipelineError, match=message):
        range_test(losses).check(100, 1000)


def test_lr_find_accepts_a_range_where_the_loss_falls_then_diverges() -> None:
    test = range_test([2.3 - 0.1 * i for i in range(20)] + [5.0, 20.0])
    test.check(1e-6, 10)
    assert test.suggestion == pytest.approx(test.lrs[19] / 3)
