"""predict applies exactly the preprocessing the checkpoint carries: colour, trim, invert, resize
mode, padding and size (classifier/data/image_format.py's format_image with prepare's params), whatever the
photo's own size; a test with the default params, where raw and prepared sizes agree, could not tell."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from classifier.models.checkpoint import Checkpoint
from classifier.data.image_files import read_image
from classifier.data.image_format import format_image
from classifier.models.registry import InputShape, build_model
from classifier.params.whole_file import load_params
from classifier.data.preprocessing import Preprocessing
from tests.helpers import ROOT
from tools import predict as predict_module

PARAMS = load_params("model", "prepare", path=ROOT / "params.yaml")


@pytest.mark.parametrize("changes", [
    {"resize": "pad", "pad_value": 30, "image_size": (12, 16)},
    {"resize": "crop", "image_size": (16, 12)},
    {"trim": True, "image_size": (14, 14), "interpolation": "area"},
    {"invert": "dark", "image_size": (10, 20), "resize": "pad", "pad_mode": "reflect"},
])
def test_predict_feeds_the_model_what_prepare_would_have_made(tmp_path, monkeypatch, changes) -> None:
    prepare = dataclasses.replace(PARAMS.prepare, **changes)
    preprocessing = Preprocessing(prepare, (0.5,), (0.25,))
    model_params = dataclasses.replace(PARAMS.model, name="mlp", hidden=(8,), dropout=0.0)
    torch.manual_seed(0)
    model = build_model(model_params, InputShape(1, *prepare.image_size, 3))
    Checkpoint(model.state_dict(), model_params, ["a", "b", "c"], preprocessing, 1, "cpu", False).save(tmp_path / "m.pt")
    photo = np.full((45, 70, 3), 235, np.uint8)  # dark ink on light paper, a wide margin, another aspect ratio
    cv2.rectangle(photo, (20, 10), (50, 35), (20, 20, 20), -1)
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    fed = []
    real = predict_module.predict_logits
    monkeypatch.setattr(predict_module, "predict_logits", lambda m, x, *a, **k: (fed.append(x.clone()), real(m, x, *a, **k))[1])
    (answer,) = predict_module.predict([tmp_path / "photo.png"], tmp_path / "m.pt", 2)
    expected = format_image(read_image(tmp_path / "photo.png"), prepare)  # prepare's own function and params
    assert expected.shape == (*prepare.image_size, 1)
    np.testing.assert_array_equal(fed[0][0].permute(1, 2, 0).numpy(), expected)
    assert [p["class"] for p in answer["predictions"]][0] in ("a", "b", "c")


def test_a_folder_or_a_missing_file_is_one_line_saying_which(tmp_path, monkeypatch) -> None:
    from classifier.runtime.errors import PipelineError
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    with pytest.raises(PipelineError, match=r"^photos is a folder: give its image files, e.g. photos/\*.jpg"):
        predict_module.read_any([tmp_path.joinpath("photos").relative_to(tmp_path)])
    with pytest.raises(PipelineError, match="^nothing.png: no such image file"):
        predict_module.read_any([tmp_path.joinpath("nothing.png").relative_to(tmp_path)])
