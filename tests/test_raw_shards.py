"""data/raw's shards: the images' own bytes back by key, few files, and an edit touching one shard."""
from __future__ import annotations

import hashlib

import pytest

from classifier.runtime.errors import PipelineError
from classifier.data.shards import SHARD_BYTES, RawImages, ShardWriter, read_index, shard_count, shard_name


def write(folder, images: dict[str, bytes], count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder, count)
    for key, data in images.items():
        writer.add(key, "", key.split("/")[2], data)
    assert writer.close() == len(images)


def shard_digests(folder) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.glob("shard-*.bin"))}


def test_every_image_comes_back_byte_for_byte_in_the_order_added(tmp_path) -> None:
    images = {f"data/raw/{c}/{i:03d}.png": bytes([i, len(c)]) * (i + 1) for c in ("cat", "dog") for i in range(40)}
    write(tmp_path, images, count=4)
    raw = RawImages(tmp_path)
    assert len(raw) == 80 and all(raw.bytes(key) == data for key, data in images.items())
    index = read_index(tmp_path)
    assert index["key"].tolist() == list(images) and set(index["label"]) == {"cat", "dog"}
    assert index["sha1"].tolist() == [hashlib.sha1(d).hexdigest() for d in images.values()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.csv", *(shard_name(s) for s in range(4))]
    with pytest.raises(PipelineError, match="data/raw/cat/nope.png is not in .*index.csv: run `dvc repro ingest`"):
        raw.bytes("data/raw/cat/nope.png")


def test_adding_or_editing_one_image_rewrites_one_shard(tmp_path) -> None:
    images = {f"data/raw/c{i % 3}/{i:04d}.jpg": bytes([i % 256]) * 50 for i in range(300)}
    write(tmp_path / "before", images, count=8)
    edited = dict(images, **{"data/raw/c0/0003.jpg": b"edited" * 9})
    write(tmp_path / "edited", edited, count=8)
    added = dict(images, **{"data/raw/c1/9999.jpg": b"new" * 7})
    write(tmp_path / "added", added, count=8)
    before = shard_digests(tmp_path / "before")
    for case in ("edited", "added"):
        after = shard_digests(tmp_path / case)
        assert sum(before[name] != after[name] for name in before) == 1, case


def test_the_shard_count_grows_by_powers_of_two_with_the_data() -> None:
    assert shard_count(0) == shard_count(SHARD_BYTES) == 1
    assert shard_count(SHARD_BYTES + 1) == 2 and shard_count(15 * SHARD_BYTES) == 16
    assert shard_count(10**15) == 512  # bounded: a few hundred files for DVC at any size


def test_the_key_is_data_raw_split_class_file_and_matches_the_raw_folder() -> None:
    from classifier.runtime import paths
    from classifier.data.shards import KEY_ROOT, raw_key
    assert KEY_ROOT == paths.RAW_DIR.as_posix()
    assert raw_key("", "cat", "a/b.png") == "data/raw/cat/a/b.png" and raw_key("test", "dog", "x.jpg") == "data/raw/test/dog/x.jpg"


def test_a_key_is_added_once(tmp_path) -> None:
    """The sources refuse a name twice; the writer holds the rule whatever its caller does."""
    writer = ShardWriter(tmp_path, 1)
    writer.add("data/raw/c0/000.png", "", "c0", b"first")
    with pytest.raises(PipelineError, match=r"data/raw/c0/000.png: two images under one key"):
        writer.add("data/raw/c0/000.png", "", "c1", b"second")
