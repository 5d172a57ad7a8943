"""data.source packed: a .tar, a .zip or a folder of .tar shards (tools.pack) ingests to the same
data/raw as the folder it came from; what ingest refuses, it names."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from classifier.runtime.errors import PipelineError
from classifier.data.shards import read_index
from classifier.data.sources import list_source
from stages import ingest
from stages import prepare as prepare_stage
from tests.helpers import copy_project, make_image_folder
from tools import pack


def ingest_source(tmp_path: Path, source: Path, monkeypatch, name: str) -> Path:
    """data/raw of an in-process ingest of `source`, in a project of its own."""
    project = copy_project(tmp_path / name, {"data": {"source": str(source)}})
    monkeypatch.chdir(project)
    ingest.main()
    return project / "data/raw"


def stored(raw: Path) -> dict[str, str]:
    """data/raw's shards and index by content (ingest.json names the source, so it differs)."""
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(raw.iterdir()) if p.name != "ingest.json"}


def photos(root: Path, split: bool = False) -> Path:
    if split:
        make_image_folder(root / "train", {"cat": 5, "dog": 4})
        make_image_folder(root / "test", {"cat": 2, "dog": 2}, seed=7, suffix=".jpg")
    else:
        make_image_folder(root, {"cat": 5, "dog": 4, "owl": 3})
    (root / ("train/cat" if split else "cat") / ".DS_Store").write_text("hidden")
    return root


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
@pytest.mark.parametrize("split", [False, True], ids=["class folders", "train/test"])
def test_packed_shards_ingest_to_the_same_data_raw_as_the_folder(tmp_path, monkeypatch, capsys, split) -> None:
    source = photos(tmp_path / "photos", split)
    images, shards, skipped = pack.pack(source, tmp_path / "packed", shard_bytes=2000)
    assert shards > 1 and skipped == 1 and images == len(list(source.rglob("img_*")))
    from_folder = stored(ingest_source(tmp_path, source, monkeypatch, "a"))
    from_packed = stored(ingest_source(tmp_path, tmp_path / "packed", monkeypatch, "b"))
    assert from_packed == from_folder
    assert set(read_index(tmp_path / "b/data/raw")["split"]) == ({"train", "test"} if split else {""})


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_tar_or_zip_of_the_folder_ingests_alike(tmp_path, monkeypatch) -> None:
    source = photos(tmp_path / "photos")
    subprocess.run(["tar", "-cf", str(tmp_path / "photos.tar"), "-C", str(tmp_path), "photos"], check=True)
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(source).as_posix())
    expected = stored(ingest_source(tmp_path, source, monkeypatch, "folder"))
    assert stored(ingest_source(tmp_path, tmp_path / "photos.tar", monkeypatch, "tar")) == expected
    assert stored(ingest_source(tmp_path, tmp_path / "photos.zip", monkeypatch, "zip")) == expected
    assert list_source(tmp_path / "photos.tar").skipped == [f"{tmp_path / 'photos.tar'}:photos/cat/.DS_Store"]


def test_packing_is_repeatable_and_an_added_image_rewrites_one_shard(tmp_path) -> None:
    source = photos(tmp_path / "photos")
    pack.pack(source, tmp_path / "one", shard_bytes=2000)
    pack.pack(source, tmp_path / "two", shard_bytes=2000)
    digests = {p.name: p.read_bytes() for p in (tmp_path / "one").iterdir()}
    assert digests == {p.name: p.read_bytes() for p in (tmp_path / "two").iterdir()}
    shutil.copy(source / "cat/img_000.png", source / "cat/img_100.png")
    pack.pack(source, tmp_path / "three", shard_bytes=2000)
    after = {p.name: p.read_bytes() for p in (tmp_path / "three").iterdir()}
    assert after.keys() == digests.keys() and sum(after[k] != digests[k] for k in after) == 1


def test_what_a_packed_source_cannot_be_is_one_line(tmp_path) -> None:
    source = photos(tmp_path / "photos")
    subprocess.run(["tar", "-czf", str(tmp_path / "photos.tar.gz"), "-C", str(source), "."], check=True)
    os.rename(tmp_path / "photos.tar.gz", tmp_path / "photos.tgz.tar")  # compressed, whatever its name
    with pytest.raises(PipelineError, match=r"photos.tgz.tar: cannot be read as an uncompressed tar .*decompress"):
        list_source(tmp_path / "photos.tgz.tar")
    subprocess.run(["tar", "-czf", str(tmp_path / "photos.tar.gz"), "-C", str(source), "."], check=True)
    with pytest.raises(PipelineError, match=r"photos.tar.gz is a compressed tar: decompress it first"):
        list_source(tmp_path / "photos.tar.gz")
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(PipelineError, match=r"notes.txt is a file but not a .tar or .zip archive: .*tools.pack"):
        list_source(tmp_path / "notes.txt")
    with zipfile.ZipFile(tmp_path / "one.zip", "w") as archive:
        archive.write(source / "cat/img_000.png", "cat/img_000.png")
    with pytest.raises(PipelineError, match=r"one.zip must hold at least two class folders of images .*found 1"):
        list_source(tmp_path / "one.zip")
    with pytest.raises(PipelineError, match="is inside"):
        pack.pack(source, source / "packed", shard_bytes=2000)


def test_pack_never_replaces_a_folder_it_did_not_write(tmp_path) -> None:
    """`pack d/photos d` once deleted d, the photos with it (issue 41): the output must be new, empty
    or pack's own; its earlier output is replaced."""
    source = photos(tmp_path / "d/photos")
    (tmp_path / "d/notes.txt").write_text("mine")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(PipelineError, match=r"d holds .*photos: replacing it would delete the images"):
        pack.pack(source, tmp_path / "d", shard_bytes=2000)
    (tmp_path / "other").mkdir()
    (tmp_path / "other/keep.txt").write_text("mine")
    with pytest.raises(PipelineError, match=r"other holds 1 file\(s\) tools.pack did not write \(e.g. keep.txt\)"):
        pack.pack(source, tmp_path / "other", shard_bytes=2000)
    with pytest.raises(PipelineError, match=r"notes.txt is a file, not a folder"):
        pack.pack(source, tmp_path / "d/notes.txt", shard_bytes=2000)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "other" not in p.parts) == before
    assert (tmp_path / "other/keep.txt").read_text() == "mine"
    pack.pack(source, tmp_path / "packed", shard_bytes=2000)
    (tmp_path / "empty").mkdir()
    pack.pack(source, tmp_path / "empty", shard_bytes=2000)
    assert pack.pack(source, tmp_path / "packed", shard_bytes=4000)[1] >= 1  # its own: replaced
    assert all(pack.SHARD.fullmatch(p.name) for p in (tmp_path / "packed").iterdir())


def tar_of(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar built member by member, names as given (a name twice, an absolute one)."""
    import io
    import tarfile
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_an_archive_holding_one_name_twice_is_refused_naming_it(tmp_path) -> None:
    """Two members c0/000.png (the second a class-1 image): one key in data/raw for two images, so a
    key could land in train and test (issue 41). Refused, tar and zip alike."""
    source = photos(tmp_path / "photos")
    cat, owl = (source / "cat/img_000.png").read_bytes(), (source / "owl/img_000.png").read_bytes()
    members = [("cat/img_000.png", cat), ("dog/img_000.png", cat), ("cat/img_000.png", owl)]
    with pytest.raises(PipelineError, match=r"twice.tar holds cat/img_000.png twice \(.*twice.tar:cat/img_000.png "
                                            r"and .*\): an image's name must be unique"):
        list_source(tar_of(tmp_path / "twice.tar", members))
    with zipfile.ZipFile(tmp_path / "twice.zip", "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        for name, data in members:
            archive.writestr(name, data)  # zipfile warns of the duplicate name, and writes it
    with pytest.raises(PipelineError, match=r"twice.zip holds cat/img_000.png twice"):
        list_source(tmp_path / "twice.zip")


def test_a_truncated_tar_is_one_line_saying_truncated(tmp_path) -> None:
    """Cut at a member's header (it read as complete: 60 of 91 images, a class gone), inside a header
    or inside a member's data: one line, "truncated", never a partial source (issue 41)."""
    import tarfile
    source = photos(tmp_path / "photos")
    whole = tar_of(tmp_path / "whole.tar", [(f"{p.parent.name}/{p.name}", p.read_bytes())
                                             for p in sorted(source.glob("*/img_*"))])
    assert sum(map(len, list_source(whole).images.values())) == 12
    with tarfile.open(whole) as tar:
        last = tar.getmembers()[-1]
    data = whole.read_bytes()
    for name, cut in (("at-a-header", last.offset), ("in-a-header", last.offset + 300),
                      ("in-data", last.offset_data + 10), ("no-end-blocks", last.offset_data + 512)):
        (tmp_path / f"{name}.tar").write_bytes(data[:cut])
        with pytest.raises(PipelineError, match=rf"{name}.tar: truncated \(.*\): the file was cut short"):
            list_source(tmp_path / f"{name}.tar")


def test_an_absolute_member_name_is_skipped_not_a_class(tmp_path) -> None:
    source = photos(tmp_path / "photos")
    members = [(f"{p.parent.name}/{p.name}", p.read_bytes()) for p in sorted(source.glob("*/img_*"))]
    listed = list_source(tar_of(tmp_path / "abs.tar", [*members, ("/x/abs.png", members[0][1]),
                                                        ("../up/out.png", members[0][1])]))
    assert {image.label for images in listed.images.values() for image in images} == {"cat", "dog", "owl"}
    assert sorted(name.split(":", 1)[1] for name in listed.skipped) == ["../up/out.png", "/x/abs.png"]


def test_a_zip_header_claiming_gigabytes_does_not_size_the_shards(tmp_path, monkeypatch) -> None:
    """Each member's header says 4 GiB (it made 512 shards for 90 images): the shards are sized by the
    bytes the archive holds, and ingest reads the images as they are (issue 41)."""
    import struct
    source = photos(tmp_path / "photos")
    with zipfile.ZipFile(tmp_path / "honest.zip", "w") as archive:
        for path in sorted(source.glob("*/img_*")):
            archive.write(path, path.relative_to(source).as_posix())
    data = bytearray((tmp_path / "honest.zip").read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:  # each central directory entry
        struct.pack_into("<I", data, start + 24, 0xF0000000)  # its uncompressed size: 4 GiB
        start += 4
    (tmp_path / "claims.zip").write_bytes(bytes(data))
    listed = list_source(tmp_path / "claims.zip")
    assert sum(i.size for images in listed.images.values() for i in images) < 2**20
    raw = ingest_source(tmp_path, tmp_path / "claims.zip", monkeypatch, "claims")
    assert len(list(raw.glob("shard-*.bin"))) == 1 and len(read_index(raw)) == 12


def test_the_pack_command_says_what_to_set(tmp_path, capsys) -> None:
    source = photos(tmp_path / "photos")
    pack.main([str(source), str(tmp_path / "packed"), "--shard-mb", "1"])
    out = capsys.readouterr().out
    assert out.startswith("pack: 12 images from") and "1 shard(s), 1 non-image or hidden file(s) left out" in out
    assert f"data.source={tmp_path / 'packed'}" in out


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_second_ingest_decodes_only_what_changed_and_writes_the_same_bytes(tmp_path, monkeypatch, capsys) -> None:
    """Incremental ingest: after one image edited, one added and one removed, only the two new
    contents are decoded, and data/raw is byte for byte what an ingest with no cache writes."""
    import cv2
    import numpy as np
    from classifier.data import decode_cache
    source = photos(tmp_path / "photos")
    monkeypatch.setenv(decode_cache.CACHE_VARIABLE, str(tmp_path / "cache"))
    ingest_source(tmp_path, source, monkeypatch, "first")
    cv2.imwrite(str(source / "cat/img_001.png"), np.full((20, 30, 3), 77, np.uint8))  # edited
    shutil.copy(source / "dog/img_000.png", source / "owl/img_009.png")  # added: known bytes, a new key
    cv2.imwrite(str(source / "owl/img_010.png"), np.full((20, 30, 3), 200, np.uint8))  # added: new bytes
    (source / "dog/img_003.png").unlink()  # removed
    decoded = []
    real = ingest.decode_image
    monkeypatch.setattr(ingest, "decode_image", lambda data, name: decoded.append(name) or real(data, name))
    capsys.readouterr()
    warm = ingest_source(tmp_path, source, monkeypatch, "second")
    assert sorted(Path(name).name for name in decoded) == ["img_001.png", "img_010.png"]
    assert "2 decoded, 11 known by their bytes" in capsys.readouterr().out
    monkeypatch.setenv(decode_cache.CACHE_VARIABLE, str(tmp_path / "empty-cache"))
    cold = ingest_source(tmp_path, source, monkeypatch, "cold")
    assert stored(warm) == stored(cold) and (warm / "ingest.json").read_bytes() == (cold / "ingest.json").read_bytes()


def prepare_source(tmp_path: Path, source: Path, monkeypatch, name: str, **prepare) -> Path:
    """data/prepared of in-process ingest, split and prepare of `source`, in a project of its own."""
    from stages import split
    project = copy_project(tmp_path / name, {"data": {"source": str(source)}, "prepare": prepare})
    monkeypatch.chdir(project)
    for stage in (ingest, split, prepare_stage):
        stage.main()
    return project / "data/prepared"


def arrays(prepared: Path) -> dict[str, str]:
    return {str(p.relative_to(prepared)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(prepared.rglob("*")) if p.is_file()}


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_second_prepare_decodes_only_what_changed_and_writes_the_same_bytes(tmp_path, monkeypatch, capsys) -> None:
    """Incremental prepare: after one image edited, only it is decoded again; other prepare params
    decode everything; and data/prepared is byte for byte what a prepare with no cache writes."""
    import cv2
    import numpy as np
    from classifier.data import decode_cache
    source = photos(tmp_path / "photos")
    monkeypatch.setenv(decode_cache.CACHE_VARIABLE, str(tmp_path / "cache"))
    prepare_source(tmp_path, source, monkeypatch, "first")
    cv2.imwrite(str(source / "cat/img_001.png"), np.full((20, 30, 3), 77, np.uint8))
    decoded = []
    real = prepare_stage.decode_image
    monkeypatch.setattr(prepare_stage, "decode_image", lambda data, name: decoded.append(name) or real(data, name))
    capsys.readouterr()
    warm = prepare_source(tmp_path, source, monkeypatch, "second")
    assert [Path(name).name for name in decoded] == ["img_001.png"]
    assert "prepare: 1 image(s) decoded, 11 prepared this way before" in capsys.readouterr().out
    decoded.clear()
    prepare_source(tmp_path, source, monkeypatch, "other-way", interpolation="nearest")
    assert len(decoded) == 12
    monkeypatch.setenv(decode_cache.CACHE_VARIABLE, str(tmp_path / "empty-cache"))
    cold = prepare_source(tmp_path, source, monkeypatch, "cold")
    assert arrays(warm) == arrays(cold)


def damage(database: Path) -> int:
    """Bit rot: 300 inverted bytes inside every stored blob, the length kept (issue 41); the count."""
    import sqlite3
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT rowid, * FROM entries").fetchall()
        for rowid, *columns in rows:
            blob = bytearray(columns[-1])
            blob[:300] = bytes(b ^ 0xFF for b in blob[:300])
            db.execute(f"UPDATE entries SET {'image' if len(columns) == 3 else 'thumbnail'} = ? WHERE rowid = ?",
                       (bytes(blob), rowid))
    return len(rows)


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_damaged_cache_entries_are_recomputed_and_said_never_used(tmp_path, monkeypatch, capsys) -> None:
    """Each cached value carries a checksum checked on read: damaged entries in either cache are
    misses, recomputed, said, and the outputs are the bytes of a run with no cache."""
    from classifier.data import decode_cache
    source = photos(tmp_path / "photos")
    monkeypatch.setenv(decode_cache.CACHE_VARIABLE, str(tmp_path / "cache"))
    prepare_source(tmp_path, source, monkeypatch, "first")
    assert damage(tmp_path / "cache/prepared.sqlite") == 12 and damage(tmp_path / "cache/ingest.sqlite") == 12
    capsys.readouterr()
    damaged = prepare_source(tmp_path, source, monkeypatch, "damaged")
    out = capsys.readouterr().out
    assert "12 damaged cache entries in" in out and "ingest.sqlite (checksum) decoded again" in out
    assert "prepare: 12 damaged cache entries in" in out and "prepared.sqlite (checksum): prepared again" in out
    monkeypatch.setenv(decode_cache.CACHE_VARIABLE, str(tmp_path / "empty-cache"))
    assert arrays(damaged) == arrays(prepare_source(tmp_path, source, monkeypatch, "cold"))
    monkeypatch.setenv(decode_cache.CACHE_VARIABLE, str(tmp_path / "cache"))
    capsys.readouterr()
    prepare_source(tmp_path, source, monkeypatch, "repaired")  # the damaged entries were rewritten
    assert "prepare: 0 image(s) decoded, 12 prepared this way before" in capsys.readouterr().out


def test_prepare_by_hand_on_a_split_older_than_data_raw_is_one_line(tmp_path, monkeypatch) -> None:
    """Ingest rerun by hand after an image left the source, then prepare: data/split still lists it
    (a KeyError before). One line naming the stale split and the command."""
    source = photos(tmp_path / "photos")
    prepare_source(tmp_path, source, monkeypatch, "p")
    (source / "dog/img_003.png").unlink()
    ingest.main()
    with pytest.raises(PipelineError, match=r"^data/split/train.csv lists 1 image\(s\) that data/raw does not hold "
                                            r"\(e.g. data/raw/dog/img_003.png\): data/split is older than data/raw; "
                                            r"`dvc repro prepare` brings both up to date$"):
        prepare_stage.main()


def test_a_cache_entry_is_keyed_by_the_code_that_made_it(tmp_path, monkeypatch) -> None:
    from classifier.data import decode_cache
    before = decode_cache.code_version(*decode_cache.PREPARED_CODE)
    module = tmp_path / "classifier"
    shutil.copytree(Path(decode_cache.__file__).parent, module)
    (module / "image_format.py").write_text((module / "image_format.py").read_text() + "\n# edited\n")
    monkeypatch.setattr(decode_cache, "__file__", str(module / "decode_cache.py"))
    assert decode_cache.code_version(*decode_cache.PREPARED_CODE) != before


def test_large_prepared_images_are_not_kept(tmp_path) -> None:
    import numpy as np
    from classifier.data.decode_cache import PreparedCache
    with PreparedCache("r", (224, 224, 3), tmp_path) as big, PreparedCache("r", (32, 32, 3), tmp_path) as small:
        for cache in (big, small):
            cache.put("a" * 40, np.zeros(cache.shape, np.uint8))
    with PreparedCache("r", (224, 224, 3), tmp_path) as big, PreparedCache("r", (32, 32, 3), tmp_path) as small:
        assert big.get("a" * 40) is None and small.get("a" * 40) is not None


def test_an_unusable_cache_folder_only_costs_time(tmp_path, monkeypatch) -> None:
    from classifier.data import decode_cache
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    monkeypatch.setenv(decode_cache.CACHE_VARIABLE, str(tmp_path / "blocked"))
    source = photos(tmp_path / "photos")
    assert len(read_index(ingest_source(tmp_path, source, monkeypatch, "p"))) == 12


def test_a_failed_ingest_leaves_the_cache_usable_at_once(tmp_path, monkeypatch) -> None:
    """An ingest stopped by a bad image commits what it decoded and releases the cache file: the next
    ingest neither waits for a lock nor decodes those images again."""
    import time

    from classifier.data import decode_cache
    monkeypatch.setenv(decode_cache.CACHE_VARIABLE, str(tmp_path / "cache"))
    source = photos(tmp_path / "photos")
    (source / "owl" / "zzz.png").write_bytes(b"not a png")  # the last file read: the others are decoded first
    with pytest.raises(PipelineError, match="zzz.png: not a readable image"):
        ingest_source(tmp_path, source, monkeypatch, "failed")
    (source / "owl" / "zzz.png").unlink()
    with decode_cache.DecodeCache() as cache:
        start = time.monotonic()
        known = [cache.get(hashlib.sha1(p.read_bytes()).hexdigest()) for p in sorted(source.rglob("img_*"))]
        assert time.monotonic() - start < 5 and all(k is not None for k in known)


def test_a_source_that_is_neither_folder_nor_archive_says_so(tmp_path) -> None:
    os.mkfifo(tmp_path / "pipe")
    for path in (Path("/dev/null"), tmp_path / "pipe"):
        with pytest.raises(PipelineError, match=f"data.source {path} is neither a folder nor a .tar or .zip file"):
            list_source(path)
