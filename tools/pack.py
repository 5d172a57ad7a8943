"""Pack a folder of images into a few .tar shards, the form of data.source DVC handles fastest.

    python -m tools.pack photos/ photos-packed/ [--shard-mb 256]
    dvc exp run -S data.source=/abs/path/photos-packed

A folder of 60,000 images is 60,000 files for DVC to hash whenever it checks ingest's dependency;
its packed form is a few. The folder may hold class subfolders or train/ (val/, test/) ones, and
the same files are packed that ingest would read (hidden, non-image, linked and special files are
left out, and counted). Each image goes to the shard its name hashes to, and the shard count is a
power of two that only grows with the data, so repacking after adding or editing an image rewrites
one shard. The tars are uncompressed (images are compressed already) and the same bytes for the
same folder: sorted members, no dates or owners.
"""
from __future__ import annotations

import argparse
import io
import re
import tarfile
from pathlib import Path

from classifier.runtime.errors import PipelineError, printable, run_stage
from classifier.runtime.outputs import atomic_dir
from classifier.data.shards import shard_count, shard_of
from classifier.data.sources import list_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.pack", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a folder of class subfolders, or of train/ (val/, test/) ones")
    parser.add_argument("output", type=Path, help="the folder of .tar shards to write: new, empty, or an earlier "
                        "output of tools.pack (replaced)")
    parser.add_argument("--shard-mb", type=int, default=256, help="the size a shard aims at, MB (default: %(default)s)")
    return parser


def member_info(name: str, size: int) -> tarfile.TarInfo:
    """A member with no date, owner or mode of the machine: the same tar for the same images."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    return info


SHARD = re.compile(r"shard-\d{4}\.tar")


def check_output(source: Path, output: Path) -> None:
    """`output` is replaced as a whole: it must be new, empty or pack's own earlier output (shard
    files only), and neither inside `source` nor holding it. A command never deletes what it did
    not write."""
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise PipelineError(f"{printable(output)} is inside {printable(source)}: write the shards elsewhere")
    if output.resolve() in source.resolve().parents:
        raise PipelineError(f"{printable(output)} holds {printable(source)}: replacing it would delete the images; "
                            f"write the shards to a new folder")
    if output.exists() and not output.is_dir():
        raise PipelineError(f"{printable(output)} is a file, not a folder: write the shards to a new folder")
    foreign = sorted(p.name for p in output.iterdir() if not SHARD.fullmatch(p.name) or not p.is_file()) \
        if output.is_dir() else []
    if foreign:
        raise PipelineError(f"{printable(output)} holds {len(foreign)} file(s) tools.pack did not write (e.g. "
                            f"{printable(foreign[0])}): it replaces the whole folder, so write the shards to a new "
                            f"or empty folder")


def pack(source: Path, output: Path, shard_bytes: int) -> tuple[int, int, int]:
    """Write `source`'s images as shards into `output`: (images, shards, files left out)."""
    if not source.is_dir():
        raise PipelineError(f"{printable(source)} is not a folder of images")
    check_output(source, output)
    listed = list_folder(source)
    members = sorted((f"{split + '/' if split else ''}{image.label}/{image.within_class}", image)
                     for split, images in listed.images.items() for image in images)
    count = shard_count(sum(image.size for _, image in members), shard_bytes)
    with atomic_dir(output) as out:
        tars = [tarfile.open(out / f"shard-{shard:04d}.tar", "w", format=tarfile.PAX_FORMAT) for shard in range(count)]
        try:
            for name, image in members:
                data = image.read()
                tars[shard_of(name, count)].addfile(member_info(name, len(data)), io.BytesIO(data))
        finally:
            for tar in tars:
                tar.close()
    return len(members), count, len(listed.skipped)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.shard_mb < 1:
        raise PipelineError(f"--shard-mb must be at least 1, got {args.shard_mb}")
    images, shards, skipped = pack(args.source, args.output, args.shard_mb * 2**20)
    print(f"pack: {images} images from {printable(args.source)} -> {printable(args.output)} ({shards} shard(s)"
          f"{f', {skipped} non-image or hidden file(s) left out' if skipped else ''}); use it with "
          f"dvc exp run -S data.source={printable(args.output.resolve())}")


if __name__ == "__main__":
    run_stage(main)
