"""Pure array functions of the preprocessing contract: grayscale, RGB, trimming the border,
matching the background, resizing (stretch, crop, pad). format_image applies them as the prepare
params say: prepare runs it on every image, predict on new ones (with the params the checkpoint
carries). Every function takes and returns uint8 H×W×C.
"""
from __future__ import annotations

import numpy as np

from classifier.data.opencv import cv2
from classifier.params.prepare import PrepareParams


def _with_channels(image: np.ndarray) -> np.ndarray:
    return image[:, :, None] if image.ndim == 2 else image


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """H×W×C (C = 1 or 3, RGB) -> H×W×1, with OpenCV's luma weights (0.299 R + 0.587 G + 0.114 B)."""
    image = _with_channels(image)
    if image.shape[2] == 1:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """H×W×C (C = 1 or 3) -> H×W×3; grey is replicated into the three channels."""
    image = _with_channels(image)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


TRIM_TOLERANCE = 16  # grey levels: a border row or column this close to the border colour is background


def border_pixels(image: np.ndarray) -> np.ndarray:
    """The outermost rows and columns of an H×W×C image, as K×C."""
    return np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])


def trim_border(image: np.ndarray, tolerance: int = TRIM_TOLERANCE) -> np.ndarray:
    """Crop the uniform border: the outer rows and columns whose every pixel lies within `tolerance`
    of the border's median colour (scanned photos' margins, a sign on a blank card). An image that is
    all border is kept whole."""
    image = _with_channels(image)
    colour = np.median(border_pixels(image), axis=0)
    content = (np.abs(image.astype(np.int16) - colour).max(axis=2) > tolerance)
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if not len(rows):
        return image
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def match_background(image: np.ndarray, background: str) -> np.ndarray:
    """Invert an image whose border (judged as its background) has the other polarity than
    `background` (dark or light), so every image ends with the same: dark digits on light paper
    and light digits on a dark screen become one kind."""
    image = _with_channels(image)
    light = float(border_pixels(image).mean()) > 127.5
    return 255 - image if light != (background == "light") else image


INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                  "area": cv2.INTER_AREA}


def _interpolation(name: str, src: tuple[int, int], dst: tuple[int, int]) -> int:
    """'auto': area when shrinking (no aliasing), linear when enlarging."""
    if name == "auto":
        return cv2.INTER_AREA if dst[0] * dst[1] < src[0] * src[1] else cv2.INTER_LINEAR
    return INTERPOLATIONS[name]


def resize_stretch(image: np.ndarray, size: tuple[int, int], interpolation: str = "auto") -> np.ndarray:
    """Resize H×W×C to size = (height, width), changing the aspect ratio: never pads."""
    height, width = size
    image = _with_channels(image)
    if image.shape[:2] == (height, width):
        return image.copy()
    flag = _interpolation(interpolation, image.shape[:2], size)
    return _with_channels(cv2.resize(image, (width, height), interpolation=flag))


def center_crop_to_aspect(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The largest centred window of `image` with the aspect ratio of size = (height, width)."""
    h, w = image.shape[:2]
    if w * size[0] > h * size[1]:  # too wide: keep the full height
        new_w = max(1, round(h * size[1] / size[0]))
        left = (w - new_w) // 2
        return image[:, left:left + new_w]
    new_h = max(1, round(w * size[0] / size[1]))
    top = (h - new_h) // 2
    return image[top:top + new_h]


def resize_pad(image: np.ndarray, size: tuple[int, int], interpolation: str = "auto",
               mode: str = "constant", value: int = 0) -> np.ndarray:
    """Scale to fit inside size = (height, width) keeping the aspect ratio, then pad the rest
    evenly: with the grey level `value` (mode 'constant') or by mirroring the border ('reflect')."""
    image = _with_channels(image)
    h, w = image.shape[:2]
    scale = min(size[0] / h, size[1] / w)
    inner = (min(size[0], max(1, round(h * scale))), min(size[1], max(1, round(w * scale))))
    scaled = resize_stretch(image, inner, interpolation)
    top, left = (size[0] - inner[0]) // 2, (size[1] - inner[1]) // 2
    bottom, right = size[0] - inner[0] - top, size[1] - inner[1] - left
    if mode == "reflect":
        return _with_channels(cv2.copyMakeBorder(scaled, top, bottom, left, right, cv2.BORDER_REFLECT_101))
    return _with_channels(cv2.copyMakeBorder(scaled, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                             value=[value] * 4))


def resize(image: np.ndarray, size: tuple[int, int], mode: str = "stretch", interpolation: str = "auto",
           pad_mode: str = "constant", pad_value: int = 0) -> np.ndarray:
    """Resize H×W×C to size = (height, width) by `mode`: 'stretch', 'crop' (centre crop to the
    aspect ratio, then resize: nothing added, the sides lost) or 'pad' (letterbox, only when asked)."""
    if mode == "crop":
        return resize_stretch(center_crop_to_aspect(_with_channels(image), size), size, interpolation)
    if mode == "pad":
        return resize_pad(image, size, interpolation, pad_mode, pad_value)
    return resize_stretch(image, size, interpolation)


def format_image(image: np.ndarray, params: PrepareParams) -> np.ndarray:
    """One decoded uint8 H×W×C image -> the model's input layout: grey or RGB, the uniform border
    trimmed (prepare.trim), the background's polarity matched (prepare.invert), params.image_size."""
    image = to_grayscale(image) if params.grayscale else to_rgb(image)
    if params.trim:
        image = trim_border(image)
    if params.invert != "none":
        image = match_background(image, params.invert)
    return resize(image, params.image_size, params.resize, params.interpolation, params.pad_mode, params.pad_value)
