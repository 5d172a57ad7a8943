"""Image files: decoding bytes into pixels, hashing them, writing PNGs.

The one image reader (read_image) of ingest, prepare, augment's preview and predict: it reads the
file's bytes, decodes them with OpenCV (EXIF orientation applied, BGR turned RGB, 16-bit to 8-bit,
alpha dropped) and raises a PipelineError naming the file when they are not an image.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from classifier.runtime.errors import PipelineError, printable
from classifier.data.opencv import cv2


FORMATS = "PNG/JPEG/BMP/WebP/TIFF/GIF"  # the formats of listing.IMAGE_SUFFIXES (a test keeps them equal)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence what libjpeg and libpng print on stderr (without naming the file): our error names it."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Encoded PNG/JPEG/BMP/WebP/TIFF/GIF bytes (a GIF's first frame) -> uint8 H×W×C, C = 1 (grey) or 3
    (RGB), turned upright as the JPEG's EXIF orientation says. 16-bit images keep their top 8 bits; an alpha channel is dropped.
    A truncated, corrupt or over-large image raises PipelineError starting with `name`."""
    if not data:
        raise PipelineError(f"{name}: empty (zero-byte) image file")
    # libjpeg fills a cut-off JPEG with grey and says so only on stderr: the end-of-image marker
    # must follow the last scan (an EXIF thumbnail's own marker comes before it).
    if data[:2] == b"\xff\xd8" and data.find(b"\xff\xd9", data.rfind(b"\xff\xda")) < 0:
        raise PipelineError(f"{name}: truncated JPEG (no end-of-image marker after the image data)")
    try:
        with _quiet_stderr():
            # ANYCOLOR|ANYDEPTH, not UNCHANGED: UNCHANGED would ignore the EXIF orientation.
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise PipelineError(f"{name}: more than 2^30 pixels, OpenCV's limit: shrink it first") from None
        raise PipelineError(f"{name}: not a readable image (corrupt or not {FORMATS})") from None
    if image is None:
        raise PipelineError(f"{name}: not a readable image (corrupt or not {FORMATS})")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise PipelineError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return image[:, :, None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: Path) -> np.ndarray:
    """The one image reader (ingest, prepare, predict): the file's bytes, decoded by decode_image.
    Reading bytes first keeps OpenCV away from file names that are not valid UTF-8."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PipelineError(f"{printable(path)}: cannot be read ({exc.strerror})") from None
    return decode_image(data, printable(path))


def pixel_hash(image: np.ndarray) -> str:
    """Identifies the decoded pixels (and shape): equal for the same picture in two files or formats."""
    return hashlib.sha1(repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()


def encode_png(image: np.ndarray) -> bytes:
    """uint8 H×W×C (C = 1 or 3, RGB) as PNG bytes."""
    if image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise PipelineError(f"could not encode a {image.shape} image as PNG")
    return encoded.tobytes()

