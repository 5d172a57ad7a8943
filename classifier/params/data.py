"""The data section: where the images come from (read by ingest).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from classifier.runtime.paths import DIGITS_SOURCE, MADE_BY
from .checks import Invalid, boolean, choice, number, spec


def _source(value: Any) -> str:
    """A folder path; the bare word 'digits' of earlier versions is now the folder data/digits. Not a
    folder the pipeline writes (data/raw, ...): ingest would read what it is replacing."""
    if not isinstance(value, str) or not value.strip() or value.strip() == "digits":
        raise Invalid(f"'{DIGITS_SOURCE}' (scikit-learn's bundled digits), or the path of a folder of images or of "
                      f"a .tar or .zip of one")
    where = Path(value).resolve()
    for output, stage in MADE_BY.items():
        if where == output.resolve() or output.resolve() in where.parents:
            raise Invalid(f"a folder the pipeline does not write ({output} is made by {stage}), e.g. "
                          f"'{DIGITS_SOURCE}' or a folder of your images")
    return value


@dataclass(frozen=True)
class DataParams:
    SECTION: ClassVar[str] = "data"
    source: str = spec(_source, f"{DIGITS_SOURCE} (scikit-learn's bundled digits), a folder of class subfolders, "
                                 "or a folder split into train/ (val/, test/) class subfolders; either may be "
                                 "packed as a .tar or .zip, or as a folder of .tar shards (made by tools.pack)")
    digits_size: int = spec(number(int, ge=8, le=512), "pixels: the 8x8 digits are upscaled to this square size")
    skip_corrupt: bool = spec(boolean, "false: a corrupt or empty image stops ingest; true: it is skipped and listed")
    duplicates: str = spec(choice("drop", "keep"),
                           "drop: an image whose pixels repeat an earlier one's is listed and left out, and one in "
                           "two given splits is an error; keep: they are listed only")
