"""Data stages give the same bytes on every CPU: the bundled digits' data/raw and data/prepared are
pinned here, and the committed dvc.lock records the same digests, so a fresh clone's `dvc status`
matches the lock and a team can share one run cache (issue 17, item 9).

OpenCV chooses code by CPU at run time (Intel IPP's AVX-512 bicubic resize rounded 6 of the digits'
pixels differently from its portable code); the data stages use the portable code only. A digest
below that changes means the data stages' bytes changed: rerun `dvc repro`, commit dvc.lock, and
update the pins in the same commit."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ruamel.yaml import YAML

from stages import ingest, prepare, split
from tests.helpers import ROOT

# data/raw and data/prepared as DVC hashes them, and the sha256 of data/prepared/train/images.npy
RAW_DIGEST = "b729b9445f7641c45b8ac7e3566b8f6d.dir"  # shards + index since the raw store
PREPARED_DIGEST = "916fe811cd9ce84d7604c364173644f4.dir"
TRAIN_IMAGES_SHA256 = "2a062d37025ebd0e8f2e8535264982e20e74da9b68be1131c585d49f421b9e51"


def dvc_dir_md5(folder: Path) -> str:
    """A folder's hash as DVC records it in dvc.lock: the md5 of its sorted file list with each file's md5."""
    entries = [{"md5": hashlib.md5(p.read_bytes()).hexdigest(), "relpath": p.relative_to(folder).as_posix()}
               for p in folder.rglob("*") if p.is_file()]
    entries.sort(key=lambda entry: entry["relpath"].split("/"))
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def locked_outs(stage: str) -> dict[str, str]:
    lock = YAML(typ="safe").load((ROOT / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for out in lock["stages"][stage]["outs"]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The default pipeline's data stages, run in-process on a copy of params.yaml."""
    root = tmp_path_factory.mktemp("digits")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(root)
    try:
        for stage in (ingest, split, prepare):
            stage.main()
    finally:
        monkeypatch.undo()
    return root


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_the_digits_raw_images_have_their_pinned_bytes(prepared) -> None:
    assert dvc_dir_md5(prepared / "data/raw") == RAW_DIGEST
    assert locked_outs("ingest")["data/raw"] == RAW_DIGEST  # the committed lock agrees


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_the_prepared_arrays_have_their_pinned_bytes(prepared) -> None:
    images = prepared / "data/prepared/train/images.npy"
    assert hashlib.sha256(images.read_bytes()).hexdigest() == TRAIN_IMAGES_SHA256
    assert dvc_dir_md5(prepared / "data/prepared") == PREPARED_DIGEST
    assert locked_outs("prepare")["data/prepared"] == PREPARED_DIGEST
    stats = json.loads((prepared / "data/prepared/stats.json").read_text())["preprocessing"]
    pixels = np.load(images).astype(np.float64) / 255  # the exact integer sums agree with a float mean
    assert stats["mean"][0] == pytest.approx(pixels.mean(), rel=1e-12)
    assert stats["std"][0] == pytest.approx(pixels.std(), rel=1e-9)
