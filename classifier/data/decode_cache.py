"""What ingest and prepare learnt from an image file, kept by the file's content: decoding 60,000
images again because one changed is most of their time.

Two SQLite files in $IMAGE_PIPELINE_CACHE (default: ~/.cache/image-pipeline), shared by every
experiment of the user, so that a queued experiment's stage in its own folder finds what the
workspace's learnt:
- ingest.sqlite: for each file's bytes (by SHA-1), the decoded pixels' hash (exact duplicates)
  and the 16×16 thumbnail (near-duplicates);
- prepared.sqlite: for each file's bytes and prepare's params, the prepared image.
Both are pure functions of the bytes, the params, the code and the OpenCV version (whose data
stages are bit-exact across CPUs: classifier/data/opencv.py), which are part of the key. Only images
that decoded are kept, so a corrupt file is always decoded and named again. The cache can only
save time: an unwritable folder or a damaged file means decoding everything, as without it. Each
entry's last value ends with a checksum of all its values (BLAKE2b, 16 bytes), verified on every
read: a damaged entry (bit rot, a bad disk block) is a miss, recomputed and rewritten, and counted
in `damaged` for the stage to say.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import numpy as np

from classifier.data.opencv import cv2
from classifier.runtime.errors import printable

CACHE_VARIABLE = "IMAGE_PIPELINE_CACHE"


def code_version(*files: str) -> str:
    """The OpenCV version and a hash of the classifier/ files that compute an entry: a new decoder,
    or an edit to that code, leaves earlier entries unused instead of wrong."""
    code = hashlib.sha1(b"".join((Path(__file__).parent / name).read_bytes() for name in files)).hexdigest()
    return f"opencv {cv2.__version__}, code {code[:16]}"


# this file is part of each version: how an entry is stored (checksummed since issue 41) is its code too
THUMBNAIL_VERSION = code_version("image_files.py", "duplicates.py", "decode_cache.py")
PREPARED_CODE = ("image_files.py", "image_format.py", "decode_cache.py")
CHECKSUM_BYTES = 16
COMMIT_EVERY = 2000  # puts per transaction: short ones, so that two stages at once wait little
PREPARED_IMAGE_BYTES = 16 * 2**10  # larger prepared images are not kept: 224×224×3 is 150 KiB an image
PREPARED_FILE_BYTES = 4 * 2**30  # prepared.sqlite stops growing here (it is still read)


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_VARIABLE)
    return Path(configured) if configured else Path.home() / ".cache" / "image-pipeline"


class ContentCache:
    """(sha1 of a file's bytes, version) -> a row of values, in one SQLite file. A context manager:
    what was learnt is committed on the way out, whether the stage succeeded or not."""

    FILE = ""
    COLUMNS = ""  # the value columns, SQL

    def __init__(self, folder: Path | None = None) -> None:
        self.hits = self.misses = self.pending = self.damaged = 0
        self.db: sqlite3.Connection | None = None
        self.writable = True
        self.path = (Path(folder) if folder is not None else cache_dir()) / self.FILE
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            self.db.execute(f"CREATE TABLE IF NOT EXISTS entries (sha1 TEXT, version TEXT, {self.COLUMNS}, "
                            "PRIMARY KEY (sha1, version))")
        except (OSError, sqlite3.Error):
            self.db = None  # no cache: everything is decoded

    def __enter__(self):
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def get_row(self, sha1: str, version: str) -> tuple | None:
        row = None
        if self.db is not None:
            try:
                row = self.db.execute("SELECT * FROM entries WHERE sha1 = ? AND version = ?",
                                      (sha1, version)).fetchone()
            except sqlite3.Error:
                self.db = None
        values = _verified(row[2:]) if row is not None else None
        if row is not None and values is None:
            self.damaged += 1  # not what was stored: recomputed by the caller, and rewritten
        if values is None:
            self.misses += 1
            return None
        self.hits += 1
        return values

    def put_row(self, sha1: str, version: str, *values) -> None:
        """`values`: the columns, the last one bytes (the checksum is appended to it)."""
        if self.db is None or not self.writable:
            return
        values = (*values[:-1], values[-1] + _checksum(*values))
        try:
            self.db.execute(f"INSERT OR REPLACE INTO entries VALUES (?, ?{', ?' * len(values)})", (sha1, version, *values))
            self.pending += 1
            if self.pending >= COMMIT_EVERY:
                self.db.commit()
                self.pending = 0
        except sqlite3.Error:
            self.db = None

    def close(self) -> None:
        if self.db is not None:
            try:
                self.db.commit()
                self.db.close()
            except sqlite3.Error:
                pass
            self.db = None

    def damage_note(self) -> str:
        """'N damaged cache entries in FILE (checksum)' for the stage's line, or '' when none were."""
        if not self.damaged:
            return ""
        return (f"{self.damaged} damaged cache {'entry' if self.damaged == 1 else 'entries'} in "
                f"{printable(self.path)} (checksum)")


def _verified(values: tuple) -> tuple | None:
    """A stored entry's values with its checksum checked and taken off; None when they are not what
    put_row stored."""
    last = values[-1]
    if not isinstance(last, bytes) or len(last) < CHECKSUM_BYTES:
        return None
    data, checksum = last[:-CHECKSUM_BYTES], last[-CHECKSUM_BYTES:]
    return (*values[:-1], data) if _checksum(*values[:-1], data) == checksum else None


def _checksum(*values: str | bytes) -> bytes:
    digest = hashlib.blake2b(digest_size=CHECKSUM_BYTES)
    for value in values:
        data = value if isinstance(value, bytes) else str(value).encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.digest()


class DecodeCache(ContentCache):
    """Ingest's: sha1 -> (pixel hash, 16×16 thumbnail)."""

    FILE = "ingest.sqlite"
    COLUMNS = "pixel_hash TEXT, thumbnail BLOB"

    def get(self, sha1: str) -> tuple[str, np.ndarray] | None:
        row = self.get_row(sha1, THUMBNAIL_VERSION)
        return None if row is None else (row[0], np.frombuffer(row[1], np.uint8).astype(np.float32))

    def put(self, sha1: str, pixel_hash: str, thumbnail: np.ndarray) -> None:
        self.put_row(sha1, THUMBNAIL_VERSION, pixel_hash, thumbnail.astype(np.uint8).tobytes())


class PreparedCache(ContentCache):
    """Prepare's: sha1 -> the prepared image (uint8 H×W×C), for one set of prepare params (`recipe`,
    their repr). Images over PREPARED_IMAGE_BYTES are not kept, and nothing more is added once the
    file reaches PREPARED_FILE_BYTES: delete the folder to reclaim it."""

    FILE = "prepared.sqlite"
    COLUMNS = "image BLOB"

    def __init__(self, recipe: str, shape: tuple[int, int, int], folder: Path | None = None) -> None:
        super().__init__(folder)
        self.version, self.shape = f"{code_version(*PREPARED_CODE)}, {recipe}", shape
        if int(np.prod(shape)) > PREPARED_IMAGE_BYTES:
            self.close()  # decoding a large image costs less than storing it
        elif self.db is not None:
            self.writable = self.path.stat().st_size < PREPARED_FILE_BYTES

    def get(self, sha1: str) -> np.ndarray | None:
        row = self.get_row(sha1, self.version)
        if row is None:
            return None
        if len(row[0]) != int(np.prod(self.shape)):  # checksummed, but not this shape: decode instead
            self.hits, self.misses = self.hits - 1, self.misses + 1
            return None
        return np.frombuffer(row[0], np.uint8).reshape(self.shape)

    def put(self, sha1: str, image: np.ndarray) -> None:
        self.put_row(sha1, self.version, np.ascontiguousarray(image, np.uint8).tobytes())
