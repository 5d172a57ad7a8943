"""Confidence you can trust (issue 39, item 3): ECE and the Brier score, the reliability bins, temperature
scaling fitted on val, and the temperature reaching predict and the exported program, for the model
it was fitted for only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from classifier.evaluation.calibration import (brier_score, calibration_json, expected_calibration_error,
                                               fit_temperature, reliability_bins, scaled_probabilities,
                                               temperature_for)
from tests.helpers import assert_picture, copy_project, run_stage_in_process

# Four images, two bins: confidence 0.9 right half the time, confidence 0.6 right every time.
PROBABILITIES = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
LABELS = np.array([0, 1, 0, 0])


def test_ece_and_brier_by_hand() -> None:
    assert expected_calibration_error(PROBABILITIES, LABELS) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert brier_score(PROBABILITIES, LABELS) == pytest.approx((0.02 + 1.62 + 0.32 + 0.32) / 4)
    table = reliability_bins(PROBABILITIES, LABELS)
    assert table[["confidence", "accuracy", "images"]].values.tolist() == [[0.6, 1.0, 2], [0.9, 0.5, 2]]
    assert table["bin_low"].tolist() == pytest.approx([8 / 15, 13 / 15])   # (k/15, (k+1)/15]


def overconfident(seed: int = 0, n: int = 4000, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(logits), and those logits scaled by 3: sure beyond what they know."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, classes))
    probabilities = scaled_probabilities(logits, 1.0)
    labels = (probabilities.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)   # a draw from each row
    return logits * 3, labels


def test_labels_drawn_from_the_probabilities_are_calibrated_and_overconfident_logits_are_not() -> None:
    logits, labels = overconfident()
    assert expected_calibration_error(scaled_probabilities(logits / 3, 1.0), labels) < 0.03
    assert expected_calibration_error(scaled_probabilities(logits, 1.0), labels) > 0.2


def test_the_temperature_fitted_on_one_half_calibrates_the_other_and_keeps_every_prediction() -> None:
    logits, labels = overconfident()
    fit, held = slice(0, 2000), slice(2000, None)
    temperature = fit_temperature(logits[fit], labels[fit])
    assert temperature == pytest.approx(3, rel=0.1) and temperature == fit_temperature(logits[fit], labels[fit])
    before = expected_calibration_error(scaled_probabilities(logits[held], 1.0), labels[held])
    after = expected_calibration_error(scaled_probabilities(logits[held], temperature), labels[held])
    assert after < 0.03 < 0.2 < before
    assert brier_score(scaled_probabilities(logits[held], temperature), labels[held]) < \
        brier_score(scaled_probabilities(logits[held], 1.0), labels[held])
    assert (scaled_probabilities(logits, temperature).argmax(1) == logits.argmax(1)).all()


def test_a_calibration_file_applies_to_the_model_it_was_fitted_for_only(tmp_path) -> None:
    model, other, calibration = tmp_path / "model.pt", tmp_path / "other.pt", tmp_path / "calibration.json"
    model.write_bytes(b"weights")
    other.write_bytes(b"other weights")
    assert temperature_for(model, calibration) == (1.0, "")   # no file: no calibration, nothing said
    calibration.write_text(calibration_json("none", 1.0, model))
    assert temperature_for(model, calibration) == (1.0, "")
    calibration.write_text(calibration_json("temperature", 1.7, model))
    temperature, said = temperature_for(model, calibration)
    assert temperature == 1.7 and said.startswith("probabilities calibrated: logits / 1.7")
    temperature, said = temperature_for(other, calibration)
    assert temperature == 1.0 and "was fitted for another model than" in said
    calibration.write_text("{")
    assert temperature_for(model, calibration)[0] == 1.0


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_evaluate_fits_the_temperature_that_predict_and_export_apply(tmp_path, monkeypatch, capsys) -> None:
    project = copy_project(tmp_path / "p", {"evaluate": {"calibrate": "temperature"}, "train": {"epochs": 1}})
    for stage in ("ingest", "split", "prepare", "augment", "train", "evaluate"):
        run_stage_in_process(stage, project)
    out = capsys.readouterr().out
    stored = json.loads((project / "models/calibration.json").read_text())
    temperature = stored["temperature"]
    assert stored["method"] == "temperature" and abs(temperature - 1) > 0.05, stored  # one epoch: far from calibrated
    scores = json.loads((project / "metrics/eval.json").read_text())
    assert scores["calibration"]["temperature"] == temperature and {"ece", "brier"} <= set(scores["test"])
    assert json.loads((project / "metrics/summary.json").read_text())["ece"] == round(scores["calibration"]["test"]["ece"], 4)
    assert scores["calibration"]["val"]["ece"] < scores["val"]["ece"]   # fitted on val: better there
    assert f"evaluate: temperature {temperature:g} fitted on val: test ECE" in out
    assert_picture(project / "plots/eval/reliability.png")

    monkeypatch.chdir(project)
    from classifier.data.artifacts import load_array_set
    from classifier.models.checkpoint import Checkpoint
    from classifier.models.inference import predict_logits
    from tools import export, predict
    checkpoint = Checkpoint.load(project / "models/model.pt")
    test = load_array_set(project / "data/prepared/test")
    images = torch.from_numpy(np.array(test.images[:5])).permute(0, 3, 1, 2)
    logits = predict_logits(checkpoint.build_model(torch.device("cpu")), images,
                            checkpoint.preprocessing.normalizer())
    keys = test.index["source"].iloc[:5].tolist()
    top = [r["predictions"][0]["probability"] for r in predict.predict([Path(k) for k in keys], Path("models/model.pt"), 1)]
    assert "predict: probabilities calibrated: logits / " in capsys.readouterr().err
    np.testing.assert_allclose(top, torch.softmax(logits / temperature, 1).max(1).values.numpy(), rtol=1e-5)
    export.main(["--output", str(tmp_path / "m.pt2")])
    program, _, _ = export.load_exported(tmp_path / "m.pt2")
    torch.testing.assert_close(program(images), logits / temperature, rtol=1e-4, atol=1e-5)
