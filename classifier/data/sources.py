"""What data.source can be, listed alike for ingest: the images, their classes and given splits.

    a folder of class subfolders             photos/<class>/<image>
    a folder already split                   photos/{train,val,test}/<class>/<image>
    a .tar or .zip archive of either         photos.tar: <class>/<image> or <split>/<class>/<image>,
                                             possibly under one top folder (`tar -cf photos.tar photos`)
    a folder of .tar shards of either        what `python -m tools.pack` writes

An archive or a few shards are one or a few files for DVC to hash (data.source is ingest's
dependency), where a folder of 60,000 images is 60,000: DVC's maintainers advise packing many small
files. Archives are read member by member wherever a member sits (uncompressed tar: images are
compressed already; zip), so a .tar.gz is refused with what to do. Used by ingest only.
"""
from __future__ import annotations

import os
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from classifier.runtime import paths
from classifier.runtime.errors import PipelineError, printable
from classifier.data.folder_listing import FORMATS, IMAGE_SUFFIXES, list_class_folder

ARCHIVE_SUFFIXES = (".tar", ".zip")


@dataclass
class SourceImage:
    name: str                   # how messages and ingest.json name it: a path, or archive:member
    within_class: str           # its path inside its class folder (posix, valid UTF-8)
    label: str
    size: int
    read: Callable[[], bytes]


@dataclass
class Source:
    splits: list[str]                                     # given splits (train first), or [] for one pool
    images: dict[str, list[SourceImage]] = field(default_factory=dict)  # split ('' for one pool) -> images
    skipped: list[str] = field(default_factory=list)      # hidden, non-image, links, special files


def _read_file(path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise PipelineError(f"{printable(path)}: cannot be read ({exc.strerror})") from None
    return read


def _folder_splits(source: Path) -> list[str]:
    subfolders = {p.name for p in source.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")}
    if "train" in subfolders and subfolders <= set(paths.SPLITS):
        return [split for split in paths.SPLITS if split in subfolders]
    return []


def list_folder(source: Path) -> Source:
    listed = Source(_folder_splits(source))
    for split in listed.splits or [""]:
        folder = source / split
        listing = list_class_folder(folder)
        listed.skipped += [printable(p) for p in listing.skipped]
        prefix = len(str(folder)) + 1  # the text before <class>/: strings, fast at 100,000 files
        listed.images[split] = [
            SourceImage(printable(path), printable(path[prefix:].split(os.sep, 1)[1]), label, size, _read_file(path))
            for (path, label), size in zip(listing.files, listing.sizes)]
    return listed


# ------------------------------------------------------------------------------------ archives
@dataclass
class _Member:
    name: str                   # its path in the archive
    parts: tuple[str, ...]      # that path split into folders and name (the top folder left out, if any)
    size: int
    read: Callable[[], bytes]
    plain: bool                 # a regular file (not a link, folder or device)


def _truncated(archive: Path, where: str) -> PipelineError:
    return PipelineError(f"{printable(archive)}: truncated ({where}): the file was cut short, e.g. by an "
                         f"interrupted copy or download; copy it again")


def _tar_members(archive: Path) -> list[_Member]:
    try:
        with tarfile.open(archive, "r:") as tar:  # uncompressed only: members are read where they sit
            infos = tar.getmembers()
            end = tar.offset  # where the header after the last member would be: the end-of-archive blocks
    except tarfile.ReadError as exc:
        if "unexpected end of data" in str(exc):
            raise _truncated(archive, "it ends inside a member") from None
        with open(archive, "rb") as f:
            compressed = f.read(6).startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))  # gzip, bzip2, xz
        hint = ("decompress it first (gunzip, bunzip2, unxz): images are compressed already" if compressed
                else "not a tar file")
        raise PipelineError(f"{printable(archive)}: cannot be read as an uncompressed tar ({exc}): {hint}") from None
    # tarfile takes the file's end for the archive's: a tar cut between two members reads as complete.
    # A whole one ends with a block of zeros where the next header would be.
    with open(archive, "rb") as f:
        f.seek(end)
        tail = f.read(tarfile.BLOCKSIZE)
    if len(tail) < tarfile.BLOCKSIZE or tail.strip(b"\0"):
        raise _truncated(archive, f"no end-of-archive block after its {len(infos)} member(s)")

    def reader(info: tarfile.TarInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            with open(archive, "rb") as f:
                f.seek(info.offset_data)
                return f.read(info.size)
        return read
    return [_Member(i.name, tuple(PurePosixPath(i.name).parts), i.size, reader(i), i.isreg())
            for i in infos if not i.isdir()]


def _zip_members(archive: Path) -> list[_Member]:
    try:
        handle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PipelineError(f"{printable(archive)}: cannot be read as a zip archive ({exc})") from None

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            try:
                return handle.read(info)
            except (zipfile.BadZipFile, OSError) as exc:
                raise PipelineError(f"{printable(archive)}:{info.filename}: cannot be read ({exc})") from None
        return read
    # A link stored by `zip --symlinks` has the S_IFLNK mode in its external attributes. The size that
    # sizes data/raw's shards is the bytes the archive holds for a member (JPEG and PNG do not compress
    # further), not the size its header claims: a header claiming 4 GiB made 512 shards for 90 images.
    return [_Member(i.filename, tuple(PurePosixPath(i.filename).parts), min(i.file_size, i.compress_size),
                    reader(i), (i.external_attr >> 28) != 0xA) for i in handle.infolist() if not i.is_dir()]


def _strip_common_top(members: list[_Member]) -> list[_Member]:
    """`tar -cf photos.tar photos` puts everything under photos/: that folder is the source, when
    it holds folders (classes or splits) and not the images of a single class."""
    tops = {m.parts[0] for m in members}
    below = {m.parts[1] for m in members if len(m.parts) > 2}
    if len(tops) == 1 and all(len(m.parts) > 1 for m in members) and len(below) > 1:
        return [_Member(m.name, m.parts[1:], m.size, m.read, m.plain) for m in members]
    return members


def list_archives(archives: list[Path], shown: str) -> Source:
    """The images of one archive, or of a folder's .tar shards taken together (`shown` names it)."""
    members = []
    for archive in archives:
        found = _tar_members(archive) if archive.suffix.lower() == ".tar" else _zip_members(archive)
        members += [(archive, m) for m in found]
    if len(archives) == 1:  # shards (tools.pack) have no top folder, and one may hold a single class
        members = [(archives[0], m) for m in _strip_common_top([m for _, m in members])]
    tops = {m.parts[0] for _, m in members if len(m.parts) > 2}
    splits = [s for s in paths.SPLITS if s in tops] if "train" in tops and tops <= set(paths.SPLITS) else []
    listed = Source(splits)
    by_split: dict[str, dict[str, list[SourceImage]]] = {split: {} for split in splits or [""]}
    seen: dict[tuple[str, str, str], str] = {}  # (split, class, name in the class) -> the member first there
    for archive, member in sorted(members, key=lambda am: am[1].parts):
        name = f"{printable(archive)}:{printable(member.name)}"
        parts = member.parts[1:] if splits else member.parts
        if splits and member.parts[0] not in splits:
            listed.skipped.append(name)
            continue
        # hidden files and "..", and absolute names (/x/y.png): never an image of the source's
        hidden = any(part.startswith(".") for part in parts) or PurePosixPath(member.name).is_absolute()
        if len(parts) < 2 or hidden or not member.plain or PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
            listed.skipped.append(name)
            continue
        split = member.parts[0] if splits else ""
        label, within_class = printable(parts[0]), printable("/".join(parts[1:]))
        key = (split, label, within_class)
        if key in seen:  # two members under one name: one key in data/raw, two images
            raise PipelineError(f"{shown} holds {'/'.join(k for k in key if k)} twice ({seen[key]} and {name}): "
                                f"an image's name must be unique; remove or rename one")
        seen[key] = name
        by_split[split].setdefault(label, []).append(SourceImage(name, within_class, label, member.size, member.read))
    for split, classes in by_split.items():
        where = f"{shown}{':' + split if split else ''}"
        if len(classes) < 2:
            raise PipelineError(f"{where} must hold at least two class folders of images ({FORMATS}), found "
                                f"{len(classes)}")
        listed.images[split] = [image for label in sorted(classes) for image in classes[label]]
    return listed


def list_source(source: Path) -> Source:
    """List data.source, whatever its form; a missing one, or a folder of the wrong shape, raises."""
    shown = printable(source)
    if source.is_file():
        if source.name.lower().endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            raise PipelineError(f"data.source {shown} is a compressed tar: decompress it first (gunzip, bunzip2, "
                                f"unxz give a .tar): images are compressed already, and ingest reads the members "
                                f"where they sit")
        if source.suffix.lower() not in ARCHIVE_SUFFIXES:
            raise PipelineError(f"data.source {shown} is a file but not a .tar or .zip archive: give a folder of "
                                f"class subfolders, or pack one with `python -m tools.pack`")
        return list_archives([source], shown)
    if not source.exists():
        raise PipelineError(f"data folder {shown} not found (data.source in params.yaml)")
    if not source.is_dir():
        raise PipelineError(f"data.source {shown} is neither a folder nor a .tar or .zip file (data.source in "
                            f"params.yaml)")
    shards = sorted(p for p in source.iterdir() if p.suffix == ".tar" and p.is_file() and not p.name.startswith("."))
    if shards and not [p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")]:
        return list_archives(shards, shown)
    return list_folder(source)
