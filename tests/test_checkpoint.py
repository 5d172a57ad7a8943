"""models/model.pt: one versioned definition, saved and loaded in one place; a checkpoint rebuilt
without its pretrained file predicts exactly as the trained model did; every damaged or foreign
file is one error naming it."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from classifier.models.checkpoint import Checkpoint, FORMAT
from classifier.runtime.errors import PipelineError
from classifier.models.registry import InputShape, build_model
from classifier.params.whole_file import load_params
from classifier.data.preprocessing import Preprocessing
from tests.helpers import ROOT

PARAMS = load_params("model", "prepare", path=ROOT / "params.yaml")
PREPROCESSING = Preprocessing(dataclasses.replace(PARAMS.prepare, image_size=(32, 32)), (0.5,), (0.2,))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[torch.nn.Module, Checkpoint, bytes]:
    """A torchvision model with pretrained weights, a head and BlurPool, and its checkpoint's bytes: built
    once, saved where the weights file then is not. The smallest of the zoo (1.4M weights): every test
    writes its own copy of the file."""
    import torchvision
    folder = tmp_path_factory.mktemp("checkpoint")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        (folder / "models/pretrained").mkdir(parents=True)
        torch.save(torchvision.models.shufflenet_v2_x0_5(weights=None).state_dict(), folder / "models/pretrained/w.pth")
        params = dataclasses.replace(PARAMS.model, name="shufflenet_v2_x0_5", pretrained="w.pth", blurpool=True, head=(32,))
        model = build_model(params, InputShape(1, 32, 32, 3)).eval()
        checkpoint = Checkpoint(model.state_dict(), params, ["a", "b", "c"], PREPROCESSING, 4, "cpu", False)
        checkpoint.save(folder / "model.pt")
    return model, checkpoint, (folder / "model.pt").read_bytes()


@pytest.fixture
def saved(built, tmp_path, monkeypatch) -> tuple[torch.nn.Module, Checkpoint, object]:
    """That checkpoint as a file of this test's own, in a folder without the weights file (evaluate and
    predict run where it may not be)."""
    model, checkpoint, content = built
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.pt").write_bytes(content)
    return model, checkpoint, tmp_path / "model.pt"


def test_round_trip_rebuilds_the_same_model_without_the_pretrained_file(saved) -> None:
    model, original, path = saved
    loaded = Checkpoint.load(path)
    assert (loaded.classes, loaded.preprocessing, loaded.epoch, loaded.device, loaded.amp, loaded.model) == (
        original.classes, original.preprocessing, original.epoch, original.device, original.amp, original.model)
    x = torch.randn(2, 1, 32, 32)
    rebuilt = loaded.build_model(torch.device("cpu"))
    assert not rebuilt.training and torch.equal(rebuilt(x), model(x))
    content = torch.load(path, weights_only=True)  # plain data: safe to load
    assert content["format"] == FORMAT


def test_saving_twice_gives_the_same_bytes(saved, tmp_path) -> None:
    _, checkpoint, path = saved
    checkpoint.save(tmp_path / "again.pt")
    assert (tmp_path / "again.pt").read_bytes() == path.read_bytes()


def test_an_older_format_is_refused_with_the_remedy(tmp_path) -> None:
    old = {"state_dict": {}, "model": {}, "classes": ["a", "b"], "input_shape": [1, 8, 8],
           "normalization": {"mean": [0.5], "std": [0.2]}, "preprocess": {}}
    torch.save(old, tmp_path / "model.pt")
    with pytest.raises(PipelineError, match=rf"model.pt: checkpoint format 1, but this code reads format {FORMAT}: "
                                            r"retrain with `dvc repro`"):
        Checkpoint.load(tmp_path / "model.pt")


@pytest.mark.parametrize("damage,message", [
    (lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3]), "not a readable checkpoint"),
    (lambda path: path.write_bytes(b""), "not a readable checkpoint"),
    (lambda path: path.write_text("hello"), "not a readable checkpoint"),
    (lambda path: torch.save([1, 2, 3], path), "a list, not a checkpoint of this pipeline"),
    (lambda path: torch.save({"fc.weight": torch.zeros(2, 2)}, path),
     r"a bare state_dict \(weights only\), not a checkpoint of this pipeline .* see model.pretrained"),
    (lambda path: torch.save({"epoch": 3}, path), "a dict of other keys, not a checkpoint of this pipeline"),
    (lambda path: torch.save({"format": FORMAT, "state_dict": {}}, path), "checkpoint lacks 'model'"),
    (lambda path: resave(path, format=str(FORMAT)), f"checkpoint format '{FORMAT}', but this code reads format {FORMAT}:"),
    (lambda path: resave(path, record=None), "checkpoint field 'record' is NoneType, not dict"),
    (lambda path: resave(path, state_dict={"w": torch.tensor([1.0, float("nan")])}),
     "checkpoint weight 'w' holds NaN or infinite values .*lower train.lr"),
    (lambda path: path.write_bytes(__import__("pickle").dumps(Exception("x"))), "not a readable checkpoint"),
])
def test_a_damaged_file_is_one_error_naming_it(saved, damage, message, recwarn) -> None:
    _, _, path = saved
    damage(path)
    with pytest.raises(PipelineError, match=f"^{path}: {message}"):
        Checkpoint.load(path)
    assert not recwarn.list  # the one line only: no torch warning before it


def resave(path, **changes) -> None:
    content = torch.load(path, weights_only=True)
    torch.save({**content, **changes}, path)


def test_a_folder_is_not_a_checkpoint(tmp_path) -> None:
    with pytest.raises(PipelineError, match=f"^{tmp_path} is a folder, not a checkpoint file"):
        Checkpoint.load(tmp_path)


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_weights_of_another_architecture_are_one_error_naming_the_file(saved, tmp_path) -> None:
    model, _, path = saved
    checkpoint = Checkpoint.load(path)
    other = dataclasses.replace(checkpoint, model=dataclasses.replace(checkpoint.model, name="resnet34"))
    with pytest.raises(PipelineError, match=f"^{path}: its weights do not fit resnet34"):
        other.build_model(torch.device("cpu"))


def test_missing_file_says_how_to_make_it(tmp_path) -> None:
    with pytest.raises(PipelineError, match="nothing.pt not found: run `dvc repro`"):
        Checkpoint.load(tmp_path / "nothing.pt")


@pytest.mark.parametrize("gpu", [True, False])
@pytest.mark.parametrize("device,amp", [("cpu", True), ("auto", True), ("auto", False), ("cuda", True)])
def test_evaluation_runs_where_and_how_training_ran(saved, monkeypatch, gpu, device, amp) -> None:
    """train.device and train.amp, recorded in the checkpoint, decide evaluate's device (predict's too,
    except that predict runs a `cuda` model on the CPU of a machine without a GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    checkpoint = dataclasses.replace(saved[1], device=device, amp=amp)
    on_gpu = gpu and device != "cpu"
    if device == "cuda" and not gpu:
        with pytest.raises(PipelineError, match="'train.device' parameter is 'cuda' but no CUDA GPU"):
            checkpoint.runtime()
    else:
        assert checkpoint.runtime() == (torch.device("cuda" if on_gpu else "cpu"), amp and on_gpu)
    assert checkpoint.runtime(cpu_fallback=True) == (torch.device("cuda" if on_gpu else "cpu"), amp and on_gpu)


@pytest.mark.slow
def test_a_pretrained_efficientnet_lite0_run_records_its_weights_constants(tmp_path, capsys) -> None:
    """prepare.normalize: auto with efficientnet_lite0's weights: train normalises as they were trained,
    (pixel - 127) / 128, the checkpoint says so, and evaluate rebuilds the model from it alone."""
    from classifier.models.efficientnet_lite import EfficientNetLite0
    from tests.helpers import copy_project, make_image_folder, run_stage_in_process
    photos = make_image_folder(tmp_path / "photos", {"a": 10, "b": 10})  # a few images: lite0 is slow on a CPU
    project = copy_project(tmp_path / "p", {
        "data": {"source": str(photos)}, "prepare": {"image_size": 32, "grayscale": False, "normalize": "auto"},
        "model": {"name": "efficientnet_lite0", "pretrained": "lite0.pth", "hidden": []},
        "train": {"epochs": 1, "features_lr_factor": 0.1}})
    (project / "models/pretrained").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(EfficientNetLite0().state_dict(), project / "models/pretrained/lite0.pth")
    for stage in ("ingest", "split", "prepare", "augment", "train"):
        run_stage_in_process(stage, project)
    checkpoint = Checkpoint.load(project / "models/model.pt")
    assert checkpoint.preprocessing.mean == pytest.approx((127 / 255,) * 3)
    assert checkpoint.preprocessing.std == pytest.approx((128 / 255,) * 3)
    (project / "models/pretrained/lite0.pth").unlink()
    run_stage_in_process("evaluate", project)
    assert "evaluate: test  accuracy" in capsys.readouterr().out
