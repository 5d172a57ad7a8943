"""Health checks on a finished training run: the failures that cost the experiment logs most runs,
made loud. Each check is a pure function returning a Finding: whether the problem was seen, a
one-line account of what was seen and the usual remedies.

    collapse      predictions on one class (or 90% on a class far rarer than that), or accuracy equal
                  to the majority class's share
    divergence    the train loss ended higher than it started, or became NaN/infinite
    loss spikes   the (smoothed) step loss jumping far above the lowest level it had reached
    overfitting      from the epoch the val loss turned up while the train loss fell, or a train
                     accuracy above val by more than a threshold
    underfitting     train and val accuracy below a threshold at every epoch
    still improving  the val loss lowest at the last epoch
The fit checks judge the whole history, not only the saved epoch, and never contradict each
other; a collapse makes them moot (evaluate then reports the collapse alone).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SPIKE_WINDOW = 10  # steps averaged before a loss is compared with the lowest level reached
NEAR_COLLAPSE = 0.9  # share of predictions on one class that, well above its true share, is a collapse
FAR_ABOVE = 1.5  # a loss above this × chance level ln(classes) is no plateau: the model was pushed off
RISE_FLOOR = 0.02  # × ln(classes): a val loss rise smaller than this is noise (0.0237 -> 0.0300 at 99% accuracy)


@dataclass(frozen=True)
class Finding:
    check: str
    seen: bool
    message: str = ""
    count: int = 0  # loss spikes: how many


GENERIC_COLLAPSE_REMEDY = ("lower train.lr (train.sam_rho with sam), check the labels and prepare.normalize, try "
                           "train.class_weights: balanced or split.balance")


def collapse_remedy(train_losses: list[float], lrs: list[float], num_classes: int, spiked: bool) -> str:
    """What to do about a collapse, from how the loss went: it rose or spiked (too high a learning rate,
    lower it), it stayed flat near chance level ln(classes) (too low: raise it), or neither."""
    first, last = train_losses[0], train_losses[-1]
    chance = math.log(max(num_classes, 2))
    if not all(math.isfinite(loss) for loss in train_losses) or last > first or spiked or last > FAR_ABOVE * chance:
        how = ("spiked" if spiked and math.isfinite(last) and last <= first else
               f"stayed far above chance level (ln {num_classes} classes = {chance:.3g})"
               if math.isfinite(last) and last <= first else "rose")
        return (f"the train loss {how} ({first:.4g} to {last:.4g}): lower train.lr (now {lrs[0]:g}; train.sam_rho "
                f"with sam), add train.grad_clip_norm")
    flat = flat_at_chance(train_losses, lrs, num_classes)
    return flat + "; if it stays flat, check the labels and prepare.normalize" if flat else GENERIC_COLLAPSE_REMEDY


def flat_at_chance(train_losses: list[float], lrs: list[float], num_classes: int) -> str:
    """When the train loss ended near chance level ln(classes) (not far above it: that is a spike or a
    divergence) and barely below where it began (a learning rate far too low), an account of it with
    the remedy; else ""."""
    chance = math.log(max(num_classes, 2))
    first, last = train_losses[0], train_losses[-1]
    if not (math.isfinite(last) and 0.9 * chance < last <= FAR_ABOVE * chance and 0.9 * first < last <= first):
        return ""
    return (f"the train loss stayed flat near chance level ({first:.4g} to {last:.4g}; ln {num_classes} classes = "
            f"{chance:.3g}): the model barely learnt: raise train.lr (now {lrs[0]:g}) or train longer")


def check_collapse(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], split: str = "val",
                   remedy: str = GENERIC_COLLAPSE_REMEDY) -> Finding:
    """Predictions on a single class, or nearly all on a class far rarer than that (the hand-gesture log's
    sharpness-aware run), or an accuracy no better than always answering the majority class. `remedy`:
    collapse_remedy's reading of the training curves."""
    predicted, counts = np.unique(y_pred, return_counts=True)
    majority_share = np.bincount(y_true).max() / len(y_true)
    accuracy = float(np.mean(y_true == y_pred))
    if len(predicted) == 1:
        return Finding("collapse", True, f"predictions collapsed: every {split} image predicted as "
                                         f"'{class_names[predicted[0]]}' (accuracy {accuracy:.2%}): {remedy}")
    top = int(predicted[counts.argmax()])
    top_share, true_share = counts.max() / len(y_pred), float(np.mean(y_true == top))
    if top_share >= NEAR_COLLAPSE and top_share - true_share > 0.25:
        return Finding("collapse", True, f"predictions nearly collapsed: {top_share:.0%} of {split} images predicted as "
                                         f"'{class_names[top]}', which is {true_share:.0%} of them (accuracy "
                                         f"{accuracy:.2%}): {remedy}")
    if len(np.unique(y_true)) > 1 and math.isclose(accuracy, majority_share, abs_tol=1e-9):
        return Finding("collapse", True, f"predictions collapsed: {split} accuracy {accuracy:.2%} equals the majority "
                                         f"class's share: the model learnt nothing beyond it: {remedy}")
    return Finding("collapse", False)


def check_divergence(epoch_losses: list[float]) -> Finding:
    """The train loss ended above where it started, or became NaN or infinite."""
    if not all(math.isfinite(loss) for loss in epoch_losses):
        return Finding("divergence", True, "loss diverging: the train loss became NaN or infinite: "
                                           "lower train.lr, add train.grad_clip_norm")
    if len(epoch_losses) > 1 and epoch_losses[-1] > epoch_losses[0]:
        return Finding("divergence", True,
                       f"loss diverging: train loss rose from {epoch_losses[0]:.4g} (epoch 1) to {epoch_losses[-1]:.4g} "
                       f"(epoch {len(epoch_losses)}): lower train.lr, add train.grad_clip_norm")
    return Finding("divergence", False)


def find_spikes(step_losses: list[float], factor: float, num_classes: int, window: int = SPIKE_WINDOW) -> list[int]:
    """Steps where a loss spike starts: the loss averaged over `window` steps rises above `factor` ×
    the lowest such average reached before, and by more than a tenth of the chance-level loss
    ln(classes) (so that the noise of a nearly-zero loss is no spike). Consecutive steps are one spike."""
    losses = np.asarray(step_losses, dtype=float)
    if len(losses) < 2 * window:
        return []
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")  # smooth[j]: steps j .. j+window-1
    lowest = np.minimum.accumulate(smooth)
    floor = 0.1 * math.log(max(num_classes, 2))
    flagged = [j for j in range(window, len(smooth))
               if smooth[j] > factor * lowest[j - window] and smooth[j] - lowest[j - window] > floor]
    return [j + window - 1 for k, j in enumerate(flagged) if k == 0 or flagged[k - 1] != j - 1]


def check_spikes(step_losses: list[float], factor: float, num_classes: int) -> Finding:
    spikes = find_spikes(step_losses, factor, num_classes)
    if not spikes:
        return Finding("loss_spikes", False)
    return Finding("loss_spikes", True,
                   f"{len(spikes)} loss spike(s): the loss averaged over {SPIKE_WINDOW} steps rose above {factor:g}× its "
                   f"lowest level, first at step {spikes[0] + 1}: lower train.lr, add train.grad_clip_norm, or raise "
                   f"train.batch_size", len(spikes))


@dataclass(frozen=True)
class Curves:
    """The per-epoch history (plots/train/history.csv) as lists."""
    epoch: list[int]
    lr: list[float]
    train_loss: list[float]
    train_accuracy: list[float]
    val_loss: list[float]
    val_accuracy: list[float]


def faded_learning_rate(curves: Curves) -> str:
    """When the schedule held the learning rate below a hundredth of where it began for the last
    epochs (at least 2, and a tenth of the run), an account of it naming the settings; else "".
    A cosine schedule, which reaches its low only at its last epoch, is no such limit."""
    low = [lr < curves.lr[0] / 100 for lr in curves.lr]
    tail = next((i for i, faded in enumerate(reversed(low)) if not faded), len(low))  # epochs faded at the end
    if tail < max(2, len(low) // 10) or tail == len(low):
        return ""
    faded = curves.epoch[len(low) - tail]
    return (f"the learning rate is what limits the run: the schedule took it from {curves.lr[0]:.3g} to "
            f"{curves.lr[-1]:.3g} by epoch {faded} and its last {tail} epochs learnt almost nothing, so more epochs "
            f"alone change little: raise train.step_size or train.gamma, or use train.scheduler: cosine, which "
            f"stretches over train.epochs")


def check_fit(curves: Curves, train_accuracy: float, val_accuracy: float, max_gap: float, low: float,
              rise: float = 0.1, num_classes: int = 0) -> list[Finding]:
    """Overfitting, underfitting and a run still improving at its end, judged on the whole history,
    never two that contradict each other: underfitting (the best train and val accuracy of any epoch
    both below `low`) rules out overfitting, which rules out "still improving".

    Overfitting: after its lowest epoch the val loss rose, beyond noise, while the train loss kept
    falling, or the saved model's train accuracy (`train_accuracy`, eval mode) beats its val accuracy
    by more than `max_gap`. Beyond noise: by more than `rise` × its lowest value, more than twice its
    typical change from one epoch to the next, and more than RISE_FLOOR × ln(classes)."""
    last = len(curves.epoch) - 1
    best = min(range(len(curves.val_loss)), key=curves.val_loss.__getitem__)
    best_train, best_val = max(curves.train_accuracy), max(curves.val_accuracy)
    under = best_train < low and best_val < low
    noise = 2 * float(np.median(np.abs(np.diff(curves.val_loss)))) if last > 0 else 0.0
    floor = RISE_FLOOR * math.log(num_classes) if num_classes > 1 else 0.0
    rose = (best < last and curves.val_loss[last] - curves.val_loss[best] > max(rise * curves.val_loss[best], noise, floor)
            and curves.train_loss[last] < curves.train_loss[best])
    gap = train_accuracy - val_accuracy
    over = not under and (rose or gap > max_gap)
    still = not under and not over and best == last and len(curves.epoch) > 1
    faded = faded_learning_rate(curves)
    flat = flat_at_chance(curves.train_loss, curves.lr, num_classes) if num_classes else ""
    remedy = ("more regularisation (train.weight_decay, model.dropout, augment), early stopping (train.patience), "
              "a smaller model or more data")
    seen = []
    if rose:
        seen.append(f"the val loss rose from {curves.val_loss[best]:.4g} (epoch {curves.epoch[best]}) to "
                    f"{curves.val_loss[last]:.4g} (epoch {curves.epoch[last]}) while the train loss fell from "
                    f"{curves.train_loss[best]:.4g} to {curves.train_loss[last]:.4g}")
    if gap > max_gap:
        seen.append(f"the saved model's train accuracy {train_accuracy:.2%} beats val {val_accuracy:.2%} by "
                    f"{gap:.2%} (> evaluate.overfit_gap {max_gap:.2%})")
    start = f"from epoch {curves.epoch[best] + 1}" if rose else "at the saved epoch"
    return [
        Finding("overfitting", over, f"overfitting {start}: {'; '.join(seen)}: {remedy}"),
        Finding("underfitting", under,
                f"underfitting: the best train accuracy of any epoch was {best_train:.2%} and the best val accuracy "
                f"{best_val:.2%}, both below evaluate.underfit_accuracy {low:.2%}: "
                + (flat if flat else f"{faded}; then tune train.lr, a bigger model or less regularisation" if faded else
                   "train longer (train.epochs), tune train.lr, use a bigger model or less regularisation")),
        Finding("still_improving", still,
                f"still improving at the end: the val loss was lowest at the last epoch ({curves.epoch[last]}): "
                + (faded if faded else "more epochs (train.epochs) may help")),
    ]
