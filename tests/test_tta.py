"""Test-time augmentation: the views, their averaged probabilities, evaluate's scores beside the plain
ones, and predict --tta."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from classifier.models.inference import predict_logits, predict_logits_and_tta, tta_views
from classifier.data.preprocessing import Normalizer
from tests.helpers import copy_project, run_stage_in_process

NORMALIZE = Normalizer((0.5,), (0.25,))


def lopsided_model() -> nn.Module:
    """A linear classifier that tells left from right: its views disagree."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(1 * 10 * 12, 4))


def test_the_views_are_the_mirror_and_four_corner_crops_scaled_back() -> None:
    x = torch.arange(2 * 1 * 10 * 12, dtype=torch.float32).view(2, 1, 10, 12)
    assert len(tta_views(x, "none")) == 1
    original, mirrored = tta_views(x, "flip")
    assert torch.equal(original, x) and torch.equal(mirrored[..., 0], x[..., -1])
    views = tta_views(x, "crops")
    assert len(views) == 5 and all(v.shape == x.shape for v in views)
    top_left = nn.functional.interpolate(x[..., :9, :11], size=(10, 12), mode="bilinear", align_corners=False)
    assert torch.equal(views[1], top_left)  # 10% of each side left out: 1 row, 1 column
    assert len({float(v.sum()) for v in views}) == 5  # five different views


@pytest.mark.parametrize("mode", ["flip", "crops"])
def test_tta_logits_are_the_log_of_the_views_mean_probabilities(mode) -> None:
    model = lopsided_model()
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (20, 1, 10, 12), dtype=np.uint8))
    got = predict_logits(model, images, NORMALIZE, tta=mode)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(model(v), 1) for v in tta_views(NORMALIZE(images), mode)]).mean(0)
    torch.testing.assert_close(torch.softmax(got, 1), expected)
    assert not torch.allclose(got.softmax(1), predict_logits(model, images, NORMALIZE).softmax(1))
    # Cross-entropy of these log-probabilities is the loss of the averaged prediction.
    labels = torch.arange(20) % 4
    torch.testing.assert_close(nn.functional.cross_entropy(got, labels),
                               nn.functional.nll_loss(torch.log(expected), labels))


def test_one_pass_gives_the_plain_and_the_tta_logits_running_each_view_once() -> None:
    model = lopsided_model()
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (20, 1, 10, 12), dtype=np.uint8))
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    plain, crops = predict_logits_and_tta(model, images, NORMALIZE, batch_size=8, tta="crops")
    assert calls == [8] * 5 + [8] * 5 + [4] * 5  # five views a batch: the plain view is not run again
    torch.testing.assert_close(plain, predict_logits(model, images, NORMALIZE))
    torch.testing.assert_close(crops, predict_logits(model, images, NORMALIZE, tta="crops"))
    same, also = predict_logits_and_tta(model, images, NORMALIZE, tta="none")
    assert same is also


@pytest.mark.slow
def test_evaluate_reports_tta_beside_the_plain_scores_and_predict_takes_tta(tmp_path, capsys) -> None:
    project = copy_project(tmp_path / "p", {"evaluate": {"tta": "crops"}, "train": {"epochs": 1}})
    for stage in ("ingest", "split", "prepare", "augment", "train", "evaluate"):
        run_stage_in_process(stage, project)
    out = capsys.readouterr().out
    scores = json.loads((project / "metrics/eval.json").read_text())
    assert scores["tta"]["mode"] == "crops" and set(scores["tta"]) == {"mode", "val", "test"}
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert summary["test_acc_tta"] == round(scores["tta"]["test"]["accuracy"], 4)
    assert summary["test_acc"] == round(scores["test"]["accuracy"], 4)  # the plain score stays the reference
    assert "evaluate: test  accuracy" in out and "with test-time augmentation (crops)" in out
    # The TTA scores are those of the checkpoint's model over the test split's views.
    from classifier.models.checkpoint import Checkpoint
    from classifier.data.artifacts import load_array_set
    from classifier.training.device_dataset import DeviceDataset
    from classifier.models.inference import loss_and_accuracy
    checkpoint = Checkpoint.load(project / "models/model.pt")
    test = load_array_set(project / "data/prepared/test")
    data = DeviceDataset(test.images, test.labels, torch.device("cpu"))
    loss, accuracy = loss_and_accuracy(predict_logits(checkpoint.build_model(torch.device("cpu")), data,
                                                      checkpoint.preprocessing.normalizer(), tta="crops"), data.labels)
    assert scores["tta"]["test"] == {"accuracy": pytest.approx(accuracy), "loss": pytest.approx(loss)}

    from tools import predict
    from tests.helpers import raw_image_files
    images = raw_image_files(project, "data/raw/3/", 3, project / "threes")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        predict.main([*images, "--json", "--top-k", "10", "--tta", "flip"])
        flipped = json.loads(capsys.readouterr().out)
        predict.main([*images, "--json", "--top-k", "10"])
        plain = json.loads(capsys.readouterr().out)
    assert [a["predictions"] for a in flipped] != [a["predictions"] for a in plain]
    for answer in flipped:
        assert sum(p["probability"] for p in answer["predictions"]) == pytest.approx(1.0, abs=1e-5)
