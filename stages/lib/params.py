"""The one place `params.yaml` is read: validated into typed, frozen dataclasses.

A stage calls `load_params(*PARAMS)` with the sections it declares in `dvc.yaml`. The whole file
is validated (unknown keys, types, ranges), but only the declared sections are handed back: using
another one raises, so a stage cannot silently depend on params DVC does not rerun it for.

Messages name the key, the value and what is allowed, e.g.
    The 'train.lr' parameter must be a float > 0. Got -0.1 instead.
    unknown key 'train.lerning_rate' in params.yaml; did you mean 'train.lr'? valid: batch_size, ...
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from ruamel.yaml import YAML

from .errors import PipelineError
from .paths import DIGITS_SOURCE, PRETRAINED_DIR

PARAMS_FILE = Path("params.yaml")
# DVC's run cache drops every key with these names, at any depth, from a stage's cache key (upstream
# treeverse/dvc#10296): a param so named could change and DVC would restore stale outputs.
RUN_CACHE_BLIND_KEYS = ("size", "nfiles")
RENAMED_KEYS = {"prepare.size": "prepare.image_size"}
# Upper bounds keep every run possible: numpy and torch take seeds below 2^32 alike; the rest are
# far beyond any sensible setting yet small enough not to overflow or exhaust memory at once.
MAX_SEED = 2**32 - 1
MAX_COUNT = 1_000_000       # epochs, patience, step sizes, per-class caps
MAX_WIDTH = 65_536          # dense layer widths, conv filters, batch size

# A check takes the raw YAML value and returns the converted value, or raises _Invalid("a float > 0").
Check = Callable[[Any], Any]


class _Invalid(Exception):
    """Raised by a check with the description of what is allowed."""


def _spec(check: Check, doc: str) -> Any:
    return field(metadata={"check": check, "doc": doc})


def _number(kind: type, *, gt: float | None = None, ge: float | None = None,
            lt: float | None = None, le: float | None = None) -> Check:
    def show(v: float) -> str:
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"
    bounds = [f"{op} {show(v)}" for op, v in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if v is not None]
    what = f"{'an integer' if kind is int else 'a float'}" + (f" {' and '.join(bounds)}" if bounds else "")

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(what)
        try:
            if kind is int and not float(value).is_integer():
                raise _Invalid(what)
            value = kind(value)
        except OverflowError:  # an integer too large for a float
            raise _Invalid(what) from None
        if (not math.isfinite(value) or (gt is not None and not value > gt) or (ge is not None and not value >= ge)
                or (lt is not None and not value < lt) or (le is not None and not value <= le)):
            raise _Invalid(what)
        return value
    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false")
    return value


def _choice(*allowed: str) -> Check:
    def check(value: Any) -> str:
        if value not in allowed:
            raise _Invalid("one of " + ", ".join(allowed))
        return value
    return check


def _device(value: Any) -> str:
    if value in ("auto", "cpu", "cuda") or (isinstance(value, str) and re.fullmatch(r"cuda:\d{1,3}", value)):
        return value
    raise _Invalid("auto, cpu, cuda or cuda:K (K: a GPU index)")


def _endpoint(value: Any) -> str:
    """'' or host:port, the address torchrun's static rendezvous listens on."""
    if value == "" or (isinstance(value, str) and re.fullmatch(r"[\w.\-]+:\d{1,5}", value)
                       and 0 < int(value.rsplit(":", 1)[1]) < 65536):
        return value
    raise _Invalid("host:port (e.g. 10.0.0.1:29400), or \"\" for one machine")


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("a non-empty string")
    return value


def _source(value: Any) -> str:
    """A folder path; the bare word 'digits' of earlier versions is now the folder data/digits."""
    if not isinstance(value, str) or not value.strip() or value.strip() == "digits":
        raise _Invalid(f"'{DIGITS_SOURCE}' (scikit-learn's bundled digits) or the path of a folder of images")
    return value


def _int_list(item: Check, what: str, *, unique: bool = False) -> Check:
    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise _Invalid(what)
        try:
            items = tuple(item(v) for v in value)
        except _Invalid:
            raise _Invalid(what) from None
        if unique and len(set(items)) != len(items):
            raise _Invalid(what)
        return items
    return check


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and str(v).strip() for v in value):
        raise _Invalid("a list of class names")
    names = tuple(str(v) for v in value)
    if len(set(names)) != len(names):
        raise _Invalid("a list of distinct class names")
    return names


def _class_mapping(value: Any) -> tuple[tuple[str, str], ...]:
    """{old class: new class}, kept as sorted pairs so the dataclass stays frozen and hashable."""
    if not isinstance(value, dict) or not all(
            isinstance(v, (str, int)) and str(k).strip() and str(v).strip() for k, v in value.items()):
        raise _Invalid("a mapping of class name -> new class name")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def _odd_kernel(value: Any) -> int:
    value = _number(int, ge=3, le=4095)(value)  # augment also refuses a kernel wider than the images
    if value % 2 == 0:
        raise _Invalid("odd")
    return value


def _size(value: Any) -> tuple[int, int]:
    """An image size: one integer (square) or [height, width], each 4..4096 pixels."""
    what = "an integer or [height, width] between 4 and 4096"
    side = _number(int, ge=4, le=4096)
    try:
        if isinstance(value, list) and len(value) == 2:
            return side(value[0]), side(value[1])
        return side(value), side(value)
    except _Invalid:
        raise _Invalid(what) from None


# ----------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DataParams:
    source: str = _spec(_source, f"{DIGITS_SOURCE} (scikit-learn's bundled digits), a folder of class subfolders, "
                                 "or a folder split into train/ (val/, test/) class subfolders")
    digits_size: int = _spec(_number(int, ge=8, le=512), "pixels: the 8x8 digits are upscaled to this square size")
    skip_corrupt: bool = _spec(_boolean, "false: a corrupt or empty image stops ingest; true: it is skipped and listed")
    duplicates: str = _spec(_choice("drop", "keep"),
                            "drop: an image whose pixels repeat an earlier one's is listed and left out, and one in "
                            "two given splits is an error; keep: they are listed only")


@dataclass(frozen=True)
class SplitParams:
    train: float = _spec(_number(float, gt=0, lt=1), "fraction of each class for training")
    val: float = _spec(_number(float, gt=0, lt=1), "fraction of each class for validation")
    test: float = _spec(_number(float, gt=0, lt=1), "fraction of each class for the final test")
    seed: int = _spec(_number(int, ge=0, le=MAX_SEED), "seed of the shuffle inside each class and of down-sampling")
    merge: tuple[tuple[str, str], ...] = _spec(_class_mapping, "classes renamed before splitting: {old: new}; "
                                                               "several old names may share a new one")
    drop: tuple[str, ...] = _spec(_string_list, "classes left out (names after merge)")
    max_per_class: int = _spec(_number(int, ge=0, le=10**9), "cap on images per class, randomly down-sampled (0: no cap)")
    balance: bool = _spec(_boolean, "down-sample every class to the smallest class's count")
    min_per_split: int = _spec(_number(int, ge=1, le=MAX_COUNT),
                               "images of every class each split must get; a smaller class is an error")

    def __post_init__(self) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise PipelineError(
                f"The 'split.train', 'split.val' and 'split.test' parameters must sum to 1. "
                f"Got {self.train:g} + {self.val:g} + {self.test:g} = {total:g} instead.")


@dataclass(frozen=True)
class PrepareParams:
    grayscale: bool = _spec(_boolean, "true: one grey channel; false: three RGB channels")
    image_size: tuple[int, int] = _spec(_size, "pixels: the size every image is resized to")
    resize: str = _spec(_choice("stretch", "crop", "pad"),
                        "stretch: change the aspect ratio; crop: centre-crop to the aspect first; pad: letterbox")
    pad_mode: str = _spec(_choice("constant", "reflect"), "pad only: fill with pad_value, or mirror the border")
    pad_value: int = _spec(_number(int, ge=0, le=255), "pad only, constant: the fill grey level")
    interpolation: str = _spec(_choice("auto", "nearest", "linear", "cubic", "area"),
                               "auto: area when shrinking, linear when enlarging")
    normalize: str = _spec(_choice("standard", "minmax", "imagenet", "auto"),
                           "standard: per-channel mean/std of train; minmax: per-channel train min..max to 0..1; "
                           "imagenet: ImageNet's mean/std (pretrained torchvision weights); auto: the mean/std the "
                           "weights were trained with when model.pretrained is set, else standard (train decides)")
    trim: bool = _spec(_boolean, "crop each image's uniform border (rows and columns within 16 grey levels of the "
                                 "border colour) before resizing")
    invert: str = _spec(_choice("none", "dark", "light"),
                        "none; dark or light: invert each image whose border is the other polarity, so every "
                        "background is that one")


@dataclass(frozen=True)
class AugmentParams:
    blur_kernels: tuple[int, ...] = _spec(
        _int_list(_odd_kernel, "a list of distinct odd integers from 3 to 4095", unique=True),
        "box-blur kernel sizes, at most the images' smaller side; each adds one copy")
    hflip: bool = _spec(_boolean, "add a left-right mirrored copy of every image and blur")
    vflip: bool = _spec(_boolean, "add an upside-down copy of every image and blur")
    rotation: float = _spec(_number(float, ge=0, le=180), "degrees: each copy is rotated by a random angle in +-this")
    noise_std: float = _spec(_number(float, ge=0, le=255), "grey levels: Gaussian noise added to each copy")
    clones: int = _spec(_number(int, ge=1, le=1000), "the set of copies is made this many times (new random draws each)")
    classes: tuple[str, ...] = _spec(_string_list, "only these classes get copies ([]: every class)")
    seed: int = _spec(_number(int, ge=0, le=MAX_SEED), "seed of the random rotations and noise")
    online: bool = _spec(_boolean, "train: a random resized crop, shift and (online_hflip) mirror of every training "
                                   "image in every batch, made on the training device (GPU or CPU), on top of the copies")
    online_crop_scale: float = _spec(_number(float, gt=0, le=1),
                                     "online: the smallest crop, as a share of the image's area (1: no crop)")
    online_translate: float = _spec(_number(float, ge=0, le=0.5),
                                    "online: the largest shift, as a share of the image's side (0: none)")
    online_hflip: bool = _spec(_boolean, "online: mirror half of the images left-right")
    online_policy: str = _spec(_choice("none", "trivialaugment", "randaugment"),
                               "train: torchvision's TrivialAugmentWide (one random op per image of every batch) "
                               "or RandAugment (two) (none: off)")
    online_erasing: float = _spec(_number(float, ge=0, le=1),
                                  "train: the share of images of every batch with a random rectangle (2% to 33% of "
                                  "the area) set to the mean (0: off)")


def _pretrained(value: Any) -> str:
    """'', 'hub' or a file in PRETRAINED_DIR (given by name or path): only there is it a dependency of train."""
    what = f"'' (none), 'hub' (torchvision's file name for model.name) or a weights file in {PRETRAINED_DIR}/"
    if not isinstance(value, str):
        raise _Invalid(what)
    if value in ("", "hub") or "/" not in value:
        return value
    path = Path(value)
    if path.is_absolute() or path.parent != PRETRAINED_DIR:
        raise _Invalid(what + ", the folder dvc.yaml declares as train's dependency, so that replacing "
                              "the file reruns train: copy it there")
    return path.name


def _class_weights(value: Any) -> str | tuple[float, ...]:
    what = "none, balanced, or a list of per-class weights > 0"
    if value in ("none", "balanced"):
        return value
    if isinstance(value, list) and value:
        try:
            return tuple(_number(float, gt=0, le=1e6)(v) for v in value)
        except _Invalid:
            pass
    raise _Invalid(what)


@dataclass(frozen=True)
class ModelParams:
    name: str = _spec(_string, "architecture: mlp, lenet5, cnn, or a torchvision classifier (resnet18, ...)")
    hidden: tuple[int, ...] = _spec(
        _int_list(_number(int, ge=1, le=MAX_WIDTH), f"a list of integers from 1 to {MAX_WIDTH}"),
        "mlp: hidden layer widths ([] = softmax regression)")
    activation: str = _spec(_choice("relu", "leaky_relu", "tanh", "sigmoid"), "mlp, lenet5, cnn: activation")
    batch_norm: bool = _spec(_boolean, "mlp, cnn: batch normalisation after each layer")
    dropout: float = _spec(_number(float, ge=0, lt=1), "dropout rate before each dense layer")
    filters: tuple[int, ...] = _spec(
        _int_list(_number(int, ge=1, le=MAX_WIDTH), f"a list of integers from 1 to {MAX_WIDTH}"),
        "cnn: output channels of each conv layer")
    kernel_size: int = _spec(_number(int, ge=1, le=15), "cnn: conv kernel size (padded to keep the size)")
    pool_after: tuple[int, ...] = _spec(
        _int_list(_number(int, ge=1, le=1000), "a list of distinct integers from 1 to 1000", unique=True),
        "cnn: conv layers (1 = first) followed by 2x2 max pooling")
    head: tuple[int, ...] = _spec(
        _int_list(_number(int, ge=1, le=MAX_WIDTH), f"a list of integers from 1 to {MAX_WIDTH}"),
        "dense layers that replace the last classifier layer ([]: the architecture's own)")
    pretrained: str = _spec(_pretrained, f"torchvision models and efficientnet_lite0: '' (none), hub (torchvision's "
                                         f"file for model.name) or a weights file, both read from {PRETRAINED_DIR}/")
    freeze: str = _spec(_choice("none", "features", "head"), "none; features: train the head only; head: the features only")
    blurpool: bool = _spec(_boolean, "anti-aliased downsampling: strided convs and max pools blur before subsampling")


@dataclass(frozen=True)
class TrainParams:
    optimizer: str = _spec(_choice("sgd", "adam", "adamw", "sam"),
                           "sgd, adam, adamw, or sam (sharpness-aware minimisation over sgd: two passes per step)")
    lr: float = _spec(_number(float, gt=0, le=100), "learning rate (onecycle: the peak)")
    momentum: float = _spec(_number(float, ge=0, lt=1), "sgd, sam: momentum")
    nesterov: bool = _spec(_boolean, "sgd, sam: Nesterov momentum")
    sam_rho: float = _spec(_number(float, gt=0, le=100), "sam: radius of the weight perturbation")
    weight_decay: float = _spec(_number(float, ge=0, le=100), "L2 weight decay (adamw: decoupled)")
    l1: float = _spec(_number(float, ge=0, le=100), "L1 penalty: this times the sum of |weights| is added to the loss")
    epochs: int = _spec(_number(int, ge=1, le=MAX_COUNT), "passes over the training set (at most, with early stopping)")
    finetune_epochs: int = _spec(_number(int, ge=0, le=MAX_COUNT),
                                 "model.freeze: features only: epochs of a second phase with every layer unfrozen (0: none)")
    finetune_lr: float = _spec(_number(float, gt=0, le=100), "the second phase's learning rate (its schedule starts afresh)")
    features_lr_factor: float = _spec(_number(float, gt=0, le=1),
                                      "the features' learning rate as a fraction of the head's (discriminative rates "
                                      "for fine-tuning a pretrained model; 1: one rate)")
    batch_size: int = _spec(_number(int, ge=1, le=MAX_WIDTH), "images per optimisation step")
    scheduler: str = _spec(_choice("none", "step", "exponential", "cosine", "onecycle"), "learning-rate schedule")
    step_size: int = _spec(_number(int, ge=1, le=MAX_COUNT), "step: epochs between learning-rate drops")
    gamma: float = _spec(_number(float, gt=0, le=1), "step, exponential: factor of each learning-rate drop")
    warmup_epochs: int = _spec(_number(int, ge=0, le=MAX_COUNT),
                               "epochs of linear learning-rate warm-up (from lr/(n+1) up to lr) before the "
                               "schedule, which then runs over the remaining epochs (0: none; not with onecycle)")
    grad_clip_norm: float = _spec(_number(float, ge=0, le=1e9), "clip the gradients' total norm to this (0: off)")
    grad_clip_value: float = _spec(_number(float, ge=0, le=1e9), "clip each gradient element to +-this (0: off)")
    label_smoothing: float = _spec(_number(float, ge=0, lt=1), "cross-entropy label smoothing")
    mixup_alpha: float = _spec(_number(float, ge=0, le=100),
                               "mixup: each batch blended with a shuffled copy, weight ~ Beta(α, α), soft targets "
                               "alike (0: off; 0.2 to 0.4 is usual)")
    cutmix_alpha: float = _spec(_number(float, ge=0, le=100),
                                "cutmix: a box of a shuffled copy pasted, its share ~ Beta(α, α), soft targets "
                                "alike (0: off; 1 is usual; with mixup, each half of the batches)")
    ema_decay: float = _spec(_number(float, ge=0, lt=1),
                             "exponential moving average of the weights, updated every step; when on (> 0) the "
                             "averaged weights are the ones validated, saved and evaluated (0: off; 0.99 to 0.999)")
    class_weights: Any = _spec(_class_weights, "loss weight per class: none, balanced (inverse frequency) or a list")
    patience: int = _spec(_number(int, ge=0, le=MAX_COUNT),
                          "early stopping: epochs without improvement before stopping (0: off)")
    monitor: str = _spec(_choice("val_loss", "val_accuracy"), "what picks the best epoch and drives early stopping")
    checkpoint: str = _spec(_choice("last", "best"),
                            "the epoch models/model.pt keeps: the last, or the best by train.monitor")
    min_delta: float = _spec(_number(float, ge=0, le=1e9), "early stopping: the least change that counts as improvement")
    seed: int = _spec(_number(int, ge=0, le=MAX_SEED), "seed of weight init and batch order")
    device: str = _spec(_device, "auto (a free GPU when there is one, else the CPU), cpu, cuda (a free GPU), "
                               "or cuda:K (GPU K)")
    processes: int = _spec(_number(int, ge=1, le=1024),
                           "data-parallel processes per machine, started by torchrun (CUDA: one GPU each)")
    nodes: int = _spec(_number(int, ge=1, le=1024), "machines training together (the others run torchrun: README)")
    rendezvous: str = _spec(_endpoint, "nodes > 1: host:port of this machine, where the other nodes meet it")

    def __post_init__(self) -> None:
        if self.nodes > 1 and not self.rendezvous:
            raise PipelineError(f"The 'train.rendezvous' parameter must be this machine's host:port when "
                                f"train.nodes is {self.nodes}. Got \"\" instead.")
        if self.processes > 1 and self.device.startswith("cuda:"):
            raise PipelineError(f"The 'train.device' parameter pins one GPU ({self.device}), but train.processes "
                                f"is {self.processes} (one GPU each): use cuda or auto")
        if self.batch_size < self.processes * self.nodes:
            raise PipelineError(f"The 'train.batch_size' parameter must be at least train.processes × train.nodes "
                                f"({self.processes * self.nodes}): it is the batch of all processes together. "
                                f"Got {self.batch_size} instead.")
    amp: bool = _spec(_boolean, "CUDA only: bf16 autocast and channels_last")
    compile: bool = _spec(_boolean, "torch.compile the model (slow start, faster steps on a GPU)")


@dataclass(frozen=True)
class EvaluateParams:
    top_k: int = _spec(_number(int, ge=1, le=1000), "top-k accuracy: the true class among the k highest scores")
    target_accuracy: float = _spec(_number(float, gt=0, le=1),
                                   "the accuracy aimed at (e.g. human level): avoidable bias = this - train accuracy")
    overfit_gap: float = _spec(_number(float, ge=0, le=1), "health: train - val accuracy above this is overfitting")
    underfit_accuracy: float = _spec(_number(float, ge=0, le=1),
                                     "health: train and val accuracy both below this is underfitting")
    spike_factor: float = _spec(_number(float, gt=1, le=1e6), "health: the loss (averaged over 10 steps) rising above this × "
                                                      "its lowest level is a spike")
    gallery_size: int = _spec(_number(int, ge=0, le=256), "worst misclassified val images shown in worst_val.png")
    tta: str = _spec(_choice("none", "flip", "crops"),
                     "test-time augmentation, scored beside the plain scores: flip (and the mirror image), crops "
                     "(and four corner crops); none: off")


SECTIONS: dict[str, type] = {
    "data": DataParams, "split": SplitParams, "prepare": PrepareParams,
    "augment": AugmentParams, "model": ModelParams, "train": TrainParams, "evaluate": EvaluateParams,
}


def as_plain(params: Any) -> dict[str, Any]:
    """A section's dataclass as plain YAML-like values (tuples -> lists): what parse_section reads back,
    and what torch.load(weights_only=True) accepts inside a checkpoint."""
    def plain(value: Any) -> Any:
        return [plain(v) for v in value] if isinstance(value, tuple) else value
    return {f.name: plain(getattr(params, f.name)) for f in fields(params)}


def describe(section: str) -> dict[str, str]:
    """key -> meaning of every key of a section (used by the README test and error messages)."""
    return {f.name: f.metadata["doc"] for f in fields(SECTIONS[section])}


def _unknown_key(key: str, valid: list[str], prefix: str = "") -> PipelineError:
    guess = difflib.get_close_matches(key, valid, n=1)
    if not guess:  # an abbreviation spelt out: learning_rate -> lr
        initials = "".join(word[:1] for word in key.split("_"))
        guess = [name for name in valid if name == initials]
    hint = f"; did you mean '{prefix}{guess[0]}'?" if guess else ";"
    return PipelineError(f"unknown key '{prefix}{key}' in params.yaml{hint} valid: {', '.join(valid)}")


def refuse_run_cache_blind_keys(tree: Any, prefix: str = "") -> None:
    """Raise on a key named 'size' or 'nfiles' anywhere in `tree`: DVC's run cache ignores it."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(tree, dict) and key in RUN_CACHE_BLIND_KEYS:
            hint = f"; it is now '{RENAMED_KEYS[name]}'" if name in RENAMED_KEYS else ": rename it"
            raise PipelineError(f"key '{name}' in params.yaml cannot be used: DVC's run cache ignores keys named "
                                f"{' or '.join(RUN_CACHE_BLIND_KEYS)} (DVC bug 10296), so changing it would restore "
                                f"stale outputs{hint}")
        refuse_run_cache_blind_keys(value, name)


def parse_section(section: str, raw: Any) -> Any:
    """Validate one section's mapping into its dataclass; raises PipelineError naming the key."""
    cls = SECTIONS[section]
    if not isinstance(raw, dict):
        raise PipelineError(f"params.yaml: '{section}' must be a mapping of keys, got {raw!r}")
    valid = [f.name for f in fields(cls)]
    for key in raw:
        if key not in valid:
            raise _unknown_key(str(key), valid, f"{section}.")
    values = {}
    for f in fields(cls):
        if f.name not in raw:
            raise PipelineError(f"missing key '{section}.{f.name}' in params.yaml ({f.metadata['doc']})")
        try:
            values[f.name] = f.metadata["check"](raw[f.name])
        except _Invalid as exc:
            raise PipelineError(
                f"The '{section}.{f.name}' parameter must be {exc}. Got {raw[f.name]!r} instead.") from None
    return cls(**values)


class _Undeclared:
    """Stands in for a section a stage did not declare: any use of it is a bug in the stage."""

    def __init__(self, section: str) -> None:
        self._section = section

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"params section '{self._section}' is not declared by this stage: add it to the stage's "
            f"PARAMS and to its params in dvc.yaml, or DVC will not rerun the stage when it changes")


@dataclass(frozen=True)
class Params:
    data: DataParams
    split: SplitParams
    prepare: PrepareParams
    augment: AugmentParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise PipelineError(f"{path} not found: run the stage from the project root")
    try:
        return YAML(typ="safe").load(path.read_text())
    except Exception as exc:  # ruamel raises many parser error types
        raise PipelineError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None


class _Partial:
    """A section of which a stage declared some keys (dvc.yaml: `- augment.online`): those read
    through, any other is a bug in the stage, as for an undeclared section."""

    def __init__(self, section: str, values: Any, keys: set[str]) -> None:
        self._section, self._values, self._keys = section, values, keys

    def __getattr__(self, name: str) -> Any:
        if name not in self._keys:
            raise AttributeError(
                f"params key '{self._section}.{name}' is not declared by this stage: add it to the stage's "
                f"PARAMS and to its params in dvc.yaml, or DVC will not rerun the stage when it changes")
        return getattr(self._values, name)


def section_keys(section: str, *, online: bool) -> tuple[str, ...]:
    """The augment stage's keys (online=False) or train's (online=True) as dvc.yaml declares them:
    online augmentation happens in train, so changing it reruns train and not augment."""
    return tuple(f"{section}.{key}" for key in describe(section) if key.startswith("online") == online)


def load_params(*sections: str, path: Path = PARAMS_FILE) -> Params:
    """Read and validate the whole params file; hand back only `sections`, the stage's declared ones
    (a whole section, or 'section.key' for single keys)."""
    keys: dict[str, set[str]] = {}
    for name in sections:
        section, _, key = name.partition(".")
        if section not in SECTIONS or (key and key not in describe(section)):
            raise ValueError(f"no params section or key {name!r}")  # a programming error, not a user one
        if key:
            keys.setdefault(section, set()).add(key)
    checked = validate(read_yaml(path), path)
    parsed = {name: (checked[name] if name in sections else _Partial(name, checked[name], keys[name])
                     if name in keys else _Undeclared(name)) for name in SECTIONS}
    return Params(**parsed)


def validate(raw: Any, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Every rule of the params file, cross-field ones included: section name -> its dataclass.
    The stages (load_params) and the sweep (each drawn combination) check with this one function."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} must be a mapping of sections, got {raw!r}")
    refuse_run_cache_blind_keys(raw)
    for key in raw:
        if key not in SECTIONS:
            raise _unknown_key(str(key), list(SECTIONS))
    checked = {}
    for name in SECTIONS:
        if name not in raw:
            raise PipelineError(f"missing section '{name}' in {path}")
        checked[name] = parse_section(name, raw[name])
    train, model = checked["train"], checked["model"]
    if train.finetune_epochs and model.freeze != "features":
        raise PipelineError(f"The 'train.finetune_epochs' parameter needs model.freeze: features (the head is trained "
                            f"first, then every layer). Got {train.finetune_epochs} with model.freeze: {model.freeze}")
    if train.warmup_epochs and train.scheduler == "onecycle":
        raise PipelineError(f"The 'train.warmup_epochs' parameter does not apply to train.scheduler: onecycle, which "
                            f"warms up by itself. Got {train.warmup_epochs} instead.")
    if train.warmup_epochs >= train.epochs:
        raise PipelineError(f"The 'train.warmup_epochs' parameter must be less than train.epochs ({train.epochs}): "
                            f"the schedule runs after the warm-up. Got {train.warmup_epochs} instead.")
    height, width = checked["prepare"].image_size
    too_wide = [k for k in checked["augment"].blur_kernels if k > min(height, width)]
    if too_wide:  # a box blur wider than the image averages it into one grey level (and costs k² per pixel)
        raise PipelineError(f"The 'augment.blur_kernels' parameter must list kernels no wider than the "
                            f"{height}×{width} prepared images (prepare.image_size: {min(height, width)} px). "
                            f"Got {list(checked['augment'].blur_kernels)} instead.")
    return checked
