"""Can the model's confidence be trusted? Expected calibration error, the Brier score, the reliability
diagram's bins, and temperature scaling (Guo et al. 2017: one number T, fitted on val, that divides
the logits; the predicted class never changes, only how sure the model says it is).

evaluate scores every split and, with evaluate.calibrate: temperature, fits T and writes it to
models/calibration.json beside the model it was fitted for (its SHA-256): tools.predict and
tools.export divide that model's logits by it, and no other model's.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

BINS = 15                      # equal-width confidence bins, as in Guo et al.
TEMPERATURES = (0.05, 20.0)    # the range T is searched in (a log scale)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """The gap between confidence and accuracy, averaged over equal-width bins of the top class's
    probability, each weighted by its share of the images: 0 is perfectly calibrated."""
    table = reliability_bins(probabilities, labels, bins)
    return float((table["images"] * (table["accuracy"] - table["confidence"]).abs()).sum() / max(len(labels), 1))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean over images of the squared distance between the probabilities and the one-hot label
    (0 is perfect, 2 the worst)."""
    if not len(labels):
        return 0.0
    onehot = np.zeros_like(probabilities, dtype=np.float64)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """One row per non-empty bin of the top class's probability: its bounds, mean confidence,
    accuracy and image count (the reliability diagram's points)."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    right = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)   # (k/bins, (k+1)/bins]
    counts = np.bincount(which, minlength=bins)
    filled = counts > 0
    sums = {name: np.bincount(which, weights=values, minlength=bins)[filled]
            for name, values in (("confidence", confidence), ("accuracy", right))}
    edges = np.arange(bins + 1) / bins
    return pd.DataFrame({"bin_low": edges[:-1][filled], "bin_high": edges[1:][filled],
                         **{name: total / counts[filled] for name, total in sums.items()}, "images": counts[filled]})


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in TEMPERATURES that minimises the cross-entropy of logits / T on these labels (a
    bounded 1-D search on log T, in float64: the same T for the same logits)."""
    from scipy.optimize import minimize_scalar   # here: predict and export read only the file
    logits = logits.astype(np.float64)
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t))[rows, labels].mean())
    found = minimize_scalar(loss, bounds=tuple(np.log(TEMPERATURES)), method="bounded", options={"xatol": 1e-6})
    return round(float(np.exp(found.x)), 4)


def scaled_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    return np.exp(log_softmax(logits.astype(np.float64) / temperature))


def calibration_scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"ece": expected_calibration_error(probabilities, labels), "brier": brier_score(probabilities, labels)}


# ------------------------------------------------------------------ models/calibration.json
def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def calibration_json(method: str, temperature: float, model_file: Path) -> str:
    """models/calibration.json's text: the method, T (1.0 for none) and the model file's SHA-256."""
    return json.dumps({"method": method, "temperature": temperature, "model_sha256": file_sha256(model_file)},
                      indent=2) + "\n"


def temperature_for(model_file: Path, calibration_file: Path) -> tuple[float, str]:
    """The temperature to divide `model_file`'s logits by, and a line saying why: 1.0 and '' when
    there is no calibration file or it says none; 1.0 and a warning when it is unreadable or was
    fitted for another model's bytes."""
    try:
        stored = json.loads(Path(calibration_file).read_text())
        method, temperature, fitted_for = str(stored["method"]), float(stored["temperature"]), stored["model_sha256"]
    except FileNotFoundError:
        return 1.0, ""
    except (ValueError, KeyError, TypeError) as exc:
        return 1.0, f"{calibration_file} is unreadable ({type(exc).__name__}): probabilities not calibrated"
    if method == "none":
        return 1.0, ""
    if fitted_for != file_sha256(model_file):
        return 1.0, (f"{calibration_file} was fitted for another model than {model_file}: probabilities not "
                     "calibrated (`dvc repro evaluate` fits it for this one)")
    return temperature, f"probabilities calibrated: logits / {temperature:g} (evaluate.calibrate, {calibration_file})"
