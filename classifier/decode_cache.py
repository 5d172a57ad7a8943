"""What ingest learnt from an image file, kept by the file's content: decoding 60,000 images again
because one changed is most of ingest's time.

For each file's bytes (by SHA-1) ingest needs the decoded pixels' hash (exact duplicates) and the
16×16 thumbnail (near-duplicates), both pure functions of the bytes and of the OpenCV version,
which is part of the key. They are kept in one SQLite file, $IMAGE_PIPELINE_CACHE/ingest.sqlite
(default: ~/.cache/image-pipeline), shared by every experiment of the user: a queued experiment's
ingest in its own folder finds what the workspace's ingest learnt. Only images that decoded are
kept, so a corrupt file is always decoded and named again. The cache can only save time: an
unwritable folder or a damaged file means decoding everything, as without it. Used by ingest only.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np

from .opencv import cv2

CACHE_VARIABLE = "IMAGE_PIPELINE_CACHE"
VERSION = f"opencv {cv2.__version__}, thumbnail 1"  # a new decoder or thumbnail makes earlier entries unused


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_VARIABLE)
    return Path(configured) if configured else Path.home() / ".cache" / "image-pipeline"


COMMIT_EVERY = 2000  # puts per transaction: short ones, so that two ingests at once wait little


class DecodeCache:
    """sha1 of a file's bytes -> (pixel hash, thumbnail). A context manager: what was learnt is
    committed on the way out, whether ingest succeeded or not."""

    def __init__(self, folder: Path | None = None) -> None:
        self.hits = self.misses = self.pending = 0
        self.db: sqlite3.Connection | None = None
        try:
            folder = Path(folder) if folder is not None else cache_dir()
            folder.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(folder / "ingest.sqlite", timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            self.db.execute("CREATE TABLE IF NOT EXISTS decoded (sha1 TEXT, version TEXT, pixel_hash TEXT, "
                            "thumbnail BLOB, PRIMARY KEY (sha1, version))")
        except (OSError, sqlite3.Error):
            self.db = None  # no cache: everything is decoded

    def __enter__(self) -> DecodeCache:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def get(self, sha1: str) -> tuple[str, np.ndarray] | None:
        row = None
        if self.db is not None:
            try:
                row = self.db.execute("SELECT pixel_hash, thumbnail FROM decoded WHERE sha1 = ? AND version = ?",
                                      (sha1, VERSION)).fetchone()
            except sqlite3.Error:
                self.db = None
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return row[0], np.frombuffer(row[1], np.uint8).astype(np.float32)

    def put(self, sha1: str, pixel_hash: str, thumbnail: np.ndarray) -> None:
        if self.db is None:
            return
        try:
            self.db.execute("INSERT OR REPLACE INTO decoded VALUES (?, ?, ?, ?)",
                            (sha1, VERSION, pixel_hash, thumbnail.astype(np.uint8).tobytes()))
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
