"""No stale result: what DVC reruns or restores always matches the params and the data.

With the real dvc and its run cache on, on a project whose data is a user's image folder:
an image-size change reaches the arrays and the checkpoint (and changing it back restores the
earlier outputs); the image folder and the pretrained weights file are real dependencies.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from classifier.models.checkpoint import Checkpoint
from tests.helpers import (ROOT, STAGES, changed_stages, copy_project, dvc, init_repo, make_image_folder,
                           raw_bytes, read_params, restore_baseline, served, set_params, stages_run)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """Two users' image folders: A (the project's source) and B."""
    root = tmp_path_factory.mktemp("images")
    return (make_image_folder(root / "A", {"a": 10, "b": 10, "c": 10}),
            make_image_folder(root / "B", {"x": 10, "y": 10}, seed=1))


@pytest.fixture(scope="module")
def project(tmp_path_factory, folders) -> Path:
    # normalize auto: standard here, until the weights are pretrained (the import test)
    root = copy_project(tmp_path_factory.mktemp("project"), {"data": {"source": str(folders[0])},
                                                             "prepare": {"normalize": "auto"}})
    assert stages_run(init_repo(root)) == STAGES
    return root


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ingested_images(project: Path) -> int:
    return json.loads((project / "data/raw/ingest.json").read_text())["images"]


def test_image_size_change_reaches_the_arrays_and_checkpoint_and_back(project) -> None:
    before = {f: digest(project / f) for f in ("data/prepared/train/images.npy",)}
    try:
        set_params(project, prepare={"image_size": 12})
        result = dvc("repro", "train", cwd=project)
        assert stages_run(result) == ["params", "prepare", "augment", "train"]
        assert np.load(project / "data/prepared/train/images.npy", mmap_mode="r").shape[1:] == (12, 12, 1)
        assert Checkpoint.load(project / "models/model.pt").preprocessing.input_shape == (1, 12, 12)

        set_params(project, prepare={"image_size": 16})  # back: the run cache restores the earlier arrays
        result = dvc("repro", "prepare", cwd=project)
        assert "Stage 'prepare' is cached - skipping run, checking out outputs" in result.stdout
        assert digest(project / "data/prepared/train/images.npy") == before["data/prepared/train/images.npy"]
    finally:
        restore_baseline(project)


def test_adding_an_image_reruns_ingest_and_everything_after_it(project, folders) -> None:
    """ingest sees the folder change and its output changes with it; DVC's graph carries that on."""
    added = folders[0] / "a" / "new.png"
    try:
        assert changed_stages(project) == set()
        cv2.imwrite(str(added), np.full((20, 30, 3), 77, np.uint8))
        assert changed_stages(project) == {"ingest"}
        assert stages_run(dvc("repro", "ingest", cwd=project)) == ["ingest"]
        assert ingested_images(project) == 31
        # Every stage that reads data/raw sees it changed (DVC's graph carries the rest down the line),
        # and evaluate's summary is gone: ingest retired the scores of the data they were computed on.
        readers = {name for name, stage in read_params(project / "dvc.yaml")["stages"].items()
                   if "data/raw" in stage.get("deps", [])}
        assert "split" in readers and changed_stages(project) == readers | {"evaluate"}
        assert not (project / "metrics/summary.json").exists()
    finally:
        added.unlink(missing_ok=True)
        restore_baseline(project)


def test_switching_folders_never_restores_outputs_of_an_edited_folder(project, folders) -> None:
    folder_a, folder_b = folders
    edited = folder_a / "b" / "img_003.png"
    original = edited.read_bytes()
    try:
        set_params(project, data={"source": str(folder_b)})
        assert stages_run(dvc("repro", "ingest", cwd=project)) == ["params", "ingest"]  # params.yaml changed
        set_params(project, data={"source": str(folder_a)})  # A as it was: restoring its outputs is right
        result = dvc("repro", "ingest", cwd=project)
        assert "Stage 'ingest' is cached - skipping run" in result.stdout
        assert raw_bytes(project, "data/raw/b/img_003.png") == original

        set_params(project, data={"source": str(folder_b)})
        dvc("repro", "ingest", cwd=project)
        cv2.imwrite(str(edited), np.full((20, 30, 3), 250, np.uint8))  # A changes while B is in use
        set_params(project, data={"source": str(folder_a)})
        result = dvc("repro", "ingest", cwd=project)
        assert stages_run(result) == ["ingest"]
        assert raw_bytes(project, "data/raw/b/img_003.png") == edited.read_bytes() != original
    finally:
        edited.write_bytes(original)
        restore_baseline(project)


def test_pretrained_weights_imported_by_url_train_and_dvc_update_reruns_train(project, tmp_path) -> None:
    """docs/your-own-images.md "Pretrained weights": `dvc import-url` records the URL and its ETag, `model.pretrained` names
    the file (any torchvision classifier is one param away), `prepare.normalize: auto` follows the
    weights; the host's new file comes with `dvc update`, and train reruns. Served from 127.0.0.1."""
    import torchvision
    from classifier.data.preprocessing import imagenet_stats
    host, name = tmp_path / "host", "shufflenet-start.pth"
    host.mkdir()

    def publish(seed: int) -> None:
        torch.manual_seed(seed)
        torch.save(torchvision.models.shufflenet_v2_x0_5(weights=None).state_dict(), host / name)
    recipe = (ROOT / "docs/your-own-images.md").read_text()
    assert "dvc import-url https://download.pytorch.org/models/resnet18-f37072fd.pth models/pretrained/" in recipe
    assert "dvc update models/pretrained/resnet18-f37072fd.pth.dvc" in recipe
    imported = project / "models/pretrained" / f"{name}.dvc"
    try:
        publish(0)
        with served(host) as url:
            dvc("import-url", f"{url}/{name}", f"models/pretrained/{name}", cwd=project)
            assert f"{url}/{name}" in imported.read_text() and "checksum:" in imported.read_text()  # URL and ETag
            set_params(project, model={"name": "shufflenet_v2_x0_5", "pretrained": name}, train={"epochs": 1})
            result = dvc("repro", "train", cwd=project)
            assert stages_run(result) == ["params", "train"] and "train: shufflenet_v2_x0_5" in result.stdout
            # auto: ImageNet's constants, since the weights are pretrained (grey images: their average; the
            # weights' first conv sums its RGB filters)
            assert Checkpoint.load(project / "models/model.pt").preprocessing.mean == imagenet_stats(1)[0]
            assert changed_stages(project) == {"evaluate", "audit"}  # the new model's; the audit reads its params
            publish(1)  # the host's file changes; the workspace's does not until `dvc update`
            assert changed_stages(project) == {"evaluate", "audit"}
            dvc("update", str(imported.relative_to(project)), cwd=project)
        status = dvc("status", cwd=project).stdout
        assert "train:" in status and "modified:           models/pretrained" in status, status
        assert (project / "models/pretrained" / name).read_bytes() == (host / name).read_bytes()
    finally:
        for leftover in (imported, project / "models/pretrained" / name, project / "models/pretrained/.gitignore"):
            leftover.unlink(missing_ok=True)
        restore_baseline(project)


def test_a_missing_source_folder_is_named_by_dvc_before_ingest_runs(project, tmp_path) -> None:
    """The folder is a dependency of ingest, so DVC itself stops first; ingest's own message for a run
    outside DVC is test_stage_errors.py's."""
    try:
        set_params(project, data={"source": str(tmp_path / "nowhere")})
        result = dvc("repro", cwd=project, check=False)
        assert result.returncode != 0 and str(tmp_path / "nowhere") in result.stderr
    finally:
        restore_baseline(project)
