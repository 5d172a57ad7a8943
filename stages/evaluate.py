"""Stage evaluate: score the trained model on train, val and test (never on augmented copies),
and check the run's health. Runs on the device and with the AMP choice training used
(train.device and train.amp, recorded in the checkpoint), so eval.json repeats with them.

    python -m stages.evaluate

Writes metrics/eval.json: per split accuracy, top-k accuracy, loss, macro and weighted
precision/recall/F1 (with evaluate.tta, also val and test accuracy and loss under test-time
augmentation, in `tta`); avoidable bias (evaluate.target_accuracy - train accuracy) and variance
(train - val accuracy); and health flags. metrics/per_class.json: per split and class accuracy,
precision, recall, F1, support (`dvc metrics show metrics/per_class.json`).
plots/eval/: {val,test}_predictions.csv (actual, predicted: DVC's confusion template),
per_class_{train,val,test}.csv, confusion_{val,test}.png (normalised heatmaps with class names),
learning_curves.png (the saved epoch and a fine-tuning phase marked), worst_val.png (the most
confidently wrong val images, with their true and predicted labels and confidence), and inside the
network: weights.png, first_layer.png and feature_maps.png (classifier/evaluation/network_views.py).
metrics/summary.json: the handful of numbers `dvc exp show` compares runs by.

Health checks print one line each: collapsed predictions, a diverging loss, loss spikes,
overfitting, underfitting, with the usual remedies.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from classifier.training.cpu_kernels import pin_for_this_run

if __name__ == "__main__":  # train.cpu_threads's kernels, as train computed, before any tensor operation
    pin_for_this_run()

import numpy as np
import pandas as pd
import torch

from classifier.runtime import paths
from classifier.data.artifacts import ArraySet, load_array_set
from classifier.models.checkpoint import Checkpoint
from classifier.training.device_dataset import DeviceDataset, images_to_tensor
from classifier.training.devices import claim_device
from classifier.runtime.errors import run_stage
from classifier.evaluation.calibration import (calibration_json, calibration_scores, fit_temperature, reliability_bins,
                                               scaled_probabilities)
from classifier.evaluation.charts import plot_confusion, plot_learning_curves, plot_reliability, plot_weight_histograms
from classifier.evaluation import error_page
from classifier.evaluation.health import (Curves, Finding, check_collapse, check_divergence, check_fit, check_spikes,
                               collapse_remedy)
from classifier.models.inference import loss_and_accuracy, predict_logits_and_tta
from classifier.evaluation.network_views import MAX_CHANNELS, feature_maps, first_layer_images, to_uint8, weight_layers
from classifier.runtime.outputs import staged_outputs, write_json
from classifier.params.checks import load_sections
from classifier.params.evaluate import EvaluateParams
from classifier.params.train import TrainParams
from classifier.evaluation.plotting import first_of_each_class, plot_image_grid, rows_of
from classifier.evaluation.scores import (classification_report, comparison_metrics, confusion_counts, per_class_json,
                                          predictions_table, summary_block, top_k_scores)

PARAMS = (EvaluateParams, TrainParams)  # train.cpu_threads: compute as train did
DEPS = (paths.MODEL_FILE, paths.PREPARED_DIR, paths.AUDIT_PLOTS)  # the training record comes inside the checkpoint
OUTS = (paths.SUMMARY_METRICS, paths.EVAL_METRICS, paths.PER_CLASS_METRICS, paths.EVAL_PLOTS, paths.CALIBRATION_FILE)
EVAL_SPLITS = ("train", "val", "test")  # train: the prepared originals, not the augmented copies
TRAIN_SAMPLE_SEED = 0  # evaluate.train_sample draws the same rows every run (stated in eval.json)


def scored_rows(count: int, most: int, seed: int = TRAIN_SAMPLE_SEED) -> np.ndarray | None:
    """Sorted rows of a seeded random sample of `most` of `count` rows; None (all of them) when
    `most` is 0 or the split is no larger."""
    if not most or count <= most:
        return None
    return np.sort(np.random.default_rng(seed).choice(count, most, replace=False))


def worst_mistakes(data: ArraySet, probabilities: np.ndarray, classes: list[str], count: int) -> tuple[list, list]:
    """The `count` wrong predictions made with the highest confidence, as image-grid rows of 8."""
    predicted = probabilities.argmax(1)
    wrong = np.flatnonzero(predicted != data.labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:count]
    images = [data.images[i] for i in wrong]
    titles = [f"true {classes[data.labels[i]]}\npred {classes[predicted[i]]} {probabilities[i, predicted[i]]:.0%}"
              for i in wrong]
    return rows_of(images), rows_of(titles)


def draw_network_views(model: torch.nn.Module, val: ArraySet, classes: list[str], normalize, device: torch.device,
                out) -> None:
    """weights.png (a histogram per layer), first_layer.png (the first layer's filters or unit weights)
    and feature_maps.png (the first conv layer's output for one val image of each of 3 classes)."""
    plot_weight_histograms([(name, w.numpy()) for name, w in weight_layers(model)], out / "weights.png")
    what, images = first_layer_images(model, val.images.shape[3:] + val.images.shape[1:3])
    plot_image_grid(rows_of(images), rows_of([f"{k + 1}" for k in range(len(images))]), out / "first_layer.png",
                    empty="no conv or pixel-reading dense layer", title=what or "first layer")
    picks = first_of_each_class(val.labels, len(classes), most=3)
    name, maps = feature_maps(model, images_to_tensor(val.images[picks], device), normalize)
    rows, titles = [], []
    for r, i in enumerate(picks if name else []):  # an MLP has no maps to draw
        rows.append([val.images[i], *(to_uint8(m)[:, :, None] for m in maps[r][:MAX_CHANNELS])])
        titles.append([f"{classes[val.labels[i]]}: input", *(f"channel {c + 1}" for c in range(len(rows[-1]) - 1))])
    plot_image_grid(rows, titles, out / "feature_maps.png", empty="no conv layer",
                    title=f"feature maps: the first conv layer's output (layer '{name}') for val images")


def health_checks(scores: dict, val_true: np.ndarray, val_pred: np.ndarray, classes: list[str],
                  history: pd.DataFrame, step_losses: list[float], params: EvaluateParams) -> list[Finding]:
    spikes = check_spikes(step_losses, params.spike_factor, len(classes))
    remedy = collapse_remedy(history["train_loss"].tolist(), history["lr"].tolist(), len(classes), spikes.seen)
    collapse = check_collapse(val_true, val_pred, classes, remedy=remedy)
    curves = Curves(*(history[f.name].tolist() for f in dataclasses.fields(Curves)))
    fit = check_fit(curves, scores["train"]["accuracy"], scores["val"]["accuracy"], params.overfit_gap,
                    params.underfit_accuracy, num_classes=len(classes))
    if collapse.seen:  # a collapsed model neither over- nor underfits in any useful sense: say one thing
        fit = [dataclasses.replace(f, seen=False) for f in fit]
    return [collapse, check_divergence(history["train_loss"].tolist()), spikes, *fit]


@dataclass
class SplitScores:
    data: ArraySet          # the split's prepared arrays (memory-mapped), as scored
    scores: dict            # accuracy, top-k, macro/weighted P/R/F1, loss, ECE, Brier, images
    tta: dict | None        # accuracy and loss under evaluate.tta (None: off, or train)
    per_class: dict
    truth: np.ndarray
    logits: np.ndarray      # float32 N×classes, plain (no TTA): what a temperature is fitted on

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(1)


def score_split(split: str, model: torch.nn.Module, normalize, device: torch.device, amp: bool, classes: list[str],
                params: EvaluateParams, out) -> SplitScores:
    """One split scored, its tables and charts written to `out` (plots/eval), its lines printed."""
    data = load_array_set(paths.PREPARED_DIR / split)
    rows = scored_rows(len(data.labels), params.train_sample) if split == "train" else None
    # Streamed from the memory-mapped arrays: one pass either way, and memory bounded by a batch.
    batches = DeviceDataset(data.images, data.labels, device, resident=False, rows=rows)
    tta = params.tta if split != "train" else "none"  # beside the plain scores, which stay the reference
    logits, tta_logits = predict_logits_and_tta(model, batches, normalize, amp=amp, tta=tta)
    loss, _ = loss_and_accuracy(logits, batches.labels)
    probabilities, host_logits = torch.softmax(logits, 1).cpu().numpy(), logits.cpu().numpy()
    y_true, y_pred = batches.host_labels.numpy(), probabilities.argmax(1)
    summary, table = classification_report(y_true, y_pred, classes)
    scores = {**summary, **top_k_scores(probabilities, y_true, params.top_k), "loss": loss,
              **calibration_scores(scaled_probabilities(host_logits, 1.0), y_true), "images": len(y_true)}
    if rows is not None:
        scores.update(sampled_from=len(data.labels), sample_seed=TRAIN_SAMPLE_SEED)
    table.to_csv(out / f"per_class_{split}.csv", index=False)
    if split != "train":
        predictions_table(y_true, y_pred, classes, data.index["source"].tolist()).to_csv(
            out / f"{split}_predictions.csv", index=False)
        plot_confusion(y_true, y_pred, classes, f"{split}: accuracy {summary['accuracy']:.2%}",
                       out / f"confusion_{split}.png")
    if split == "val":
        draw_network_views(model, data, classes, normalize, device, out)
        grid, titles = worst_mistakes(data, probabilities, classes, params.gallery_size)
        plot_image_grid(grid, titles, out / "worst_val.png", empty="no misclassified val image",
                        title="val images predicted wrong with the highest confidence")
    top_k = f"top-{params.top_k} {scores['top_k_accuracy']:.2%}  " if "top_k_accuracy" in scores else ""
    sampled = f" of {len(data.labels)}, a seeded sample (evaluate.train_sample)" if rows is not None else ""
    print(f"evaluate: {split:<5} accuracy {summary['accuracy']:.2%}  {top_k}macro F1 "
          f"{summary['f1_macro']:.4f}  loss {loss:.4f}  ECE {scores['ece']:.4f}  ({len(y_true)} images{sampled})")
    tta_scores = None
    if tta != "none":
        tta_loss, tta_accuracy = loss_and_accuracy(tta_logits, batches.labels)
        tta_scores = {"accuracy": tta_accuracy, "loss": tta_loss}
        print(f"evaluate: {split:<5} accuracy {tta_accuracy:.2%} with test-time augmentation ({params.tta}), "
              f"loss {tta_loss:.4f}")
    return SplitScores(data, scores, tta_scores, per_class_json(table), y_true, host_logits)


def calibrate(results: dict[str, SplitScores], method: str, out) -> dict:
    """evaluate.calibrate: the temperature (fitted on val; 1.0 for none) and the ECE and Brier score of
    the probabilities predict gives for val and test; draws reliability.png (before and after) and
    writes reliability_test.csv (the bins of test's, for `dvc plots`)."""
    temperature = fit_temperature(results["val"].logits, results["val"].truth) if method == "temperature" else 1.0
    calibration, curves, scaled_bins = {"method": method, "temperature": temperature}, {}, {}
    for split in ("val", "test"):
        result = results[split]
        curves[split] = (reliability_bins(scaled_probabilities(result.logits, 1.0), result.truth), result.scores["ece"])
        scaled = scaled_probabilities(result.logits, temperature)
        calibration[split] = calibration_scores(scaled, result.truth)
        scaled_bins[split] = reliability_bins(scaled, result.truth)
        if method != "none":
            curves[f"{split}, logits / {temperature:g}"] = (scaled_bins[split], calibration[split]["ece"])
    plot_reliability(curves, out / "reliability.png")
    scaled_bins["test"].to_csv(out / "reliability_test.csv", index=False)
    if method != "none":
        before, after = results["test"].scores, calibration["test"]
        print(f"evaluate: temperature {temperature:g} fitted on val: test ECE {before['ece']:.4f} -> {after['ece']:.4f}, "
              f"Brier {before['brier']:.4f} -> {after['brier']:.4f} (accuracy unchanged)")
    return calibration


def write_error_page(results: dict[str, SplitScores], calibration: dict, model: torch.nn.Module, normalize,
                     device: torch.device, classes: list[str], name: str, out) -> None:
    """plots/eval/errors.html (classifier/evaluation/error_page.py): the test split's cells with their
    images and Grad-CAM, per-class scores, the reliability diagram and the audit's suspects."""
    test, data = results["test"], results["test"].data
    probabilities = scaled_probabilities(test.logits, calibration["temperature"])  # what predict gives
    cells = error_page.cell_rows(test.truth, probabilities)
    listed = np.unique(np.concatenate(list(cells.values()))) if cells else np.empty(0, int)
    overlays = error_page.grad_cam_overlays(model, normalize(images_to_tensor(data.images[listed], device)),
                                            data.images[listed], probabilities[listed].argmax(1).tolist())
    page_cells = error_page.cell_entries(cells, data.index["source"].tolist(), data.images, probabilities, test.truth,
                                         dict(zip(listed.tolist(), overlays)) if overlays else None)
    issues = paths.AUDIT_PLOTS / "issues.csv"
    suspects = pd.read_csv(issues, dtype=str, keep_default_na=False) if issues.is_file() else pd.DataFrame()
    pictures = {}
    for split in ("train", "val"):  # the suspects' pictures
        prepared = results[split].data
        shown = prepared.index["source"].isin(suspects["key"].head(error_page.SUSPECTS)) if len(suspects) else []
        pictures.update({prepared.index["source"].iloc[r]: error_page.data_uri(prepared.images[r])
                         for r in np.flatnonzero(shown)})
    per_class = pd.DataFrame(test.per_class).T.reset_index(names="class").astype({"support": int})
    scores = test.scores
    summary = (f"{name}: test accuracy {scores['accuracy']:.2%}, macro F1 {scores['f1_macro']:.4f}, "
               f"ECE {calibration['test']['ece']:.4f} (temperature {calibration['temperature']:g}), "
               f"{len(test.truth)} test images")
    cam_note = ("Each image beside its Grad-CAM: where the model looked for the class it predicted (its last conv layer)."
                if overlays else "No Grad-CAM: the model has no conv layer.")
    page = error_page.ErrorPage("What the model gets wrong", summary, classes,
                                confusion_counts(test.truth, probabilities.argmax(1), len(classes)), page_cells,
                                per_class, (out / "reliability.png").read_bytes(), suspects if len(suspects) else None,
                                pictures, cam_note)
    (out / "errors.html").write_text(page.html())


def main() -> None:
    params = load_sections(*PARAMS).evaluate
    checkpoint = Checkpoint.load(paths.MODEL_FILE)
    device, amp = checkpoint.runtime()  # where and how training ran: eval.json repeats with train.device
    device = claim_device(device)  # a GPU no other running experiment holds
    model = checkpoint.build_model(device)
    classes = checkpoint.classes
    normalize = checkpoint.preprocessing.normalizer(device)
    history = pd.DataFrame(checkpoint.record["history"])
    scores, results = {}, {}
    # Every output is written before any is switched in: a failure while writing leaves the last run's, all of them.
    with staged_outputs(files=(paths.EVAL_METRICS, paths.PER_CLASS_METRICS, paths.SUMMARY_METRICS,
                               paths.CALIBRATION_FILE), dirs=(paths.EVAL_PLOTS,)) as staged:
        out = staged[paths.EVAL_PLOTS]
        for split in EVAL_SPLITS:
            results[split] = score_split(split, model, normalize, device, amp, classes, params, out)
            scores[split] = results[split].scores
            if results[split].tta is not None:
                scores.setdefault("tta", {"mode": params.tta})[split] = results[split].tta
        scores["calibration"] = calibrate(results, params.calibrate, out)
        write_error_page(results, scores["calibration"], model, normalize, device, classes, checkpoint.model.name, out)
        plot_learning_curves(history, out / "learning_curves.png", saved_epoch=checkpoint.epoch)
        findings = health_checks(scores, results["val"].truth, results["val"].predicted, classes, history,
                                 checkpoint.record["step_losses"], params)
        scores["avoidable_bias"] = params.target_accuracy - scores["train"]["accuracy"]
        scores["variance"] = scores["train"]["accuracy"] - scores["val"]["accuracy"]
        scores["health"] = {f.check: (f.count if f.check == "loss_spikes" else f.seen) for f in findings}
        summary = comparison_metrics(scores)
        write_json(staged[paths.EVAL_METRICS], scores)
        write_json(staged[paths.PER_CLASS_METRICS], {split: result.per_class for split, result in results.items()})
        write_json(staged[paths.SUMMARY_METRICS], summary)
        staged[paths.CALIBRATION_FILE].write_text(calibration_json(params.calibrate, scores["calibration"]["temperature"],
                                                                   paths.MODEL_FILE))
    print(f"evaluate: avoidable bias {scores['avoidable_bias']:.2%}, variance {scores['variance']:.2%}")
    for finding in findings:
        if finding.seen:
            print(f"health: {finding.message}")
    print(summary_block(scores, checkpoint.record, [f.check.replace("_", " ") for f in findings if f.seen], params.top_k))


if __name__ == "__main__":
    run_stage(main)
