"""data/raw as DVC likes it: a few shard files of the images' own bytes, and an index.

    data/raw/shard-0000.bin ...   the encoded files (JPEG, PNG, ...) as they came, back to back
    data/raw/index.csv            one row per image: key, split, label, shard, offset, length, sha1
    data/raw/ingest.json          what ingest saw (written by ingest)

A key is the name the image had under data/raw when it was a folder of copies
(`data/raw/[<split>/]<class>/<file>`): the file lists of data/split and the prepared arrays' index
name images by it. DVC hashes and caches a shard per file, so 60,000 images are a handful of cache
objects instead of 60,000, and `dvc status` stays fast. An image goes to the shard its key hashes to,
and the shard count only grows with the data's size (by powers of two), so adding, removing or
editing one image rewrites one shard, not all of them. Written by ingest; read by split (the index),
prepare and augment's preview (the bytes, which they decode with image_files.decode_image: split,
which needs the index alone, does not depend on the decoder).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from classifier.runtime.errors import PipelineError

INDEX_NAME = "index.csv"
KEY_ROOT = "data/raw"  # paths.RAW_DIR, as the keys spell it
COLUMNS = ("key", "split", "label", "shard", "offset", "length", "sha1")
SHARD_BYTES = 16 * 2**20  # the size a shard aims at
MAX_SHARDS = 512


def raw_key(split: str, label: str, name: str) -> str:
    """data/raw/[<split>/]<class>/<name>: an image's key, joined as text (at 100,000 images pathlib
    costs seconds)."""
    return "/".join(part for part in (KEY_ROOT, split, label, name) if part)


def shard_count(total_bytes: int, target: int = SHARD_BYTES) -> int:
    """A power of two giving shards of about `target` bytes; it changes only when the data doubles."""
    count = 1
    while count < MAX_SHARDS and total_bytes > count * target:
        count *= 2
    return count


def shard_name(shard: int) -> str:
    return f"shard-{shard:04d}.bin"


def shard_of(key: str, count: int) -> int:
    """The shard `key` goes to: by a hash of the key, so the same image keeps its shard."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8", "surrogateescape")).digest()[:8], "big") % count


class ShardWriter:
    """Appends images to `count` shards in `folder` as they come; close() writes the index."""

    def __init__(self, folder: Path, count: int) -> None:
        self.folder, self.count = Path(folder), count
        self.files: dict[int, BinaryIO] = {}
        self.sizes = [0] * count
        self.rows: list[tuple] = []
        self.keys: set[str] = set()

    def add(self, key: str, split: str, label: str, data: bytes, sha1: str | None = None) -> None:
        if key in self.keys:  # the sources refuse a name twice (classifier/data/sources.py); this holds it
            raise PipelineError(f"{key}: two images under one key; a key is unique in {INDEX_NAME}")
        self.keys.add(key)
        shard = shard_of(key, self.count)
        if shard not in self.files:
            self.files[shard] = open(self.folder / shard_name(shard), "wb")
        self.files[shard].write(data)
        self.rows.append((key, split, label, shard, self.sizes[shard], len(data), sha1 or hashlib.sha1(data).hexdigest()))
        self.sizes[shard] += len(data)

    def close(self) -> int:
        """Close the shards and write the index (rows in the order added); the number of images."""
        for handle in self.files.values():
            handle.close()
        for shard in range(self.count):  # an empty shard is a file too: the set of files is the count's
            (self.folder / shard_name(shard)).touch()
        pd.DataFrame(self.rows, columns=list(COLUMNS)).to_csv(self.folder / INDEX_NAME, index=False)
        return len(self.rows)


def read_index(folder: Path) -> pd.DataFrame:
    """data/raw/index.csv: key, split ('' unless the source was split), label, shard, offset, length, sha1."""
    return pd.read_csv(Path(folder) / INDEX_NAME, dtype={"key": str, "split": str, "label": str, "sha1": str},
                       keep_default_na=False)


@dataclass
class RawImages:
    """The images of data/raw by key: their bytes, read from the shards (memory-mapped)."""
    folder: Path

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        index = read_index(self.folder)
        self.where = dict(zip(index["key"], zip(index["shard"], index["offset"], index["length"])))
        self.sha1 = dict(zip(index["key"], index["sha1"]))  # of each image's bytes
        self.shards: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def bytes(self, key: str) -> bytes:
        if key not in self.where:
            raise PipelineError(f"{key} is not in {self.folder / INDEX_NAME}: run `dvc repro ingest` (or `make repro`)")
        shard, offset, length = self.where[key]
        if shard not in self.shards:
            path = self.folder / shard_name(shard)
            self.shards[shard] = np.memmap(path, np.uint8, "r") if path.stat().st_size else np.zeros(0, np.uint8)
        return self.shards[shard][offset:offset + length].tobytes()
