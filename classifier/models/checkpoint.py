"""models/model.pt, defined once: what train saves and evaluate and predict load.

A checkpoint holds the saved epoch's weights (train.checkpoint: the last, by default, or the best
by train.monitor) and everything needed to use them: the model params
(to rebuild the architecture, without the pretrained file), the class names, the preprocessing
contract (classifier/data/preprocessing.py), the device and AMP choice training ran with, so evaluation
runs the same arithmetic, and the training record evaluate judges the run by (its only input from
train, so that `dvc exp show` has one train output among its columns, not three). It is a plain dict of tensors, strings and numbers, stamped with FORMAT:
`torch.load(path, weights_only=True)` reads it, and a checkpoint of another format, a truncated
file or a foreign one stops with one line saying so.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from classifier.training.devices import select_device
from classifier.runtime.errors import PipelineError, printable
from classifier.models.registry import InputShape, build_model
from classifier.runtime.outputs import atomic_file
from classifier.params.checks import as_plain, parse_section
from classifier.params.model import ModelParams
from classifier.data.preprocessing import Preprocessing

FORMAT = 3  # 1: the first wave's layout (no format stamp, prepare params under "preprocess"); 2: no record


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    model: ModelParams
    classes: list[str]
    preprocessing: Preprocessing
    epoch: int          # the saved epoch (train.checkpoint: last or best)
    device: str         # train.device: auto, cpu or cuda
    amp: bool           # train.amp
    # history: {column: per-epoch values} as plots/train/history.csv but the wall times;
    # step_losses: per batch; best_epoch (by train.monitor)
    record: dict = field(default_factory=dict, repr=False)
    path: str = ""      # the file it was read from, for messages

    @property
    def input_shape(self) -> InputShape:
        return InputShape(*self.preprocessing.input_shape, num_classes=len(self.classes))

    def save(self, path: Path) -> None:
        content = {"format": FORMAT, "state_dict": self.state_dict, "model": as_plain(self.model),
                   "classes": list(self.classes), "preprocessing": self.preprocessing.to_dict(),
                   "epoch": self.epoch, "train": {"device": self.device, "amp": self.amp}, "record": self.record}
        buffer = io.BytesIO()  # saving to the random temporary name would put that name in the archive
        torch.save(content, buffer)
        with atomic_file(path) as tmp:
            tmp.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read a checkpoint onto the CPU; every way it can be wrong is one PipelineError naming `path`."""
        path = Path(path)
        if path.is_dir():
            raise PipelineError(f"{path} is a folder, not a checkpoint file (give the models/model.pt inside a run)")
        if not path.is_file():
            raise PipelineError(f"{path} not found: run `dvc repro` (or `make repro`) first")
        try:
            with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them: our line says it
                warnings.simplefilter("ignore")
                content = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, a pickle of other objects, not a torch file at all
            raise PipelineError(f"{path}: not a readable checkpoint ({' '.join(str(exc).split())[:160]}): "
                                f"retrain with `dvc repro`") from None
        if isinstance(content, dict) and "format" not in content and "preprocess" not in content:
            bare = content and all(isinstance(v, torch.Tensor) for v in content.values())
            what = "a bare state_dict (weights only)" if bare else "a dict of other keys"
            raise PipelineError(f"{path}: {what}, not a checkpoint of this pipeline (which also holds the model "
                                f"params, classes and preprocessing): give a models/model.pt that train wrote"
                                + ("; to start from these weights, see model.pretrained" if bare else ""))
        if not isinstance(content, dict):
            raise PipelineError(f"{path}: a {type(content).__name__}, not a checkpoint of this pipeline: give a "
                                f"models/model.pt that train wrote")
        version = content.get("format", 1)  # the first wave's had no stamp, its prepare params as "preprocess"
        if version != FORMAT or type(version) is not int:
            raise PipelineError(f"{path}: checkpoint format {version!r}, but this code reads format {FORMAT!r}: "
                                f"retrain with `dvc repro` (or `dvc repro -f -s train` for a file DVC does not track)")
        expected = {"state_dict": dict, "model": dict, "classes": list, "preprocessing": dict, "epoch": int,
                    "train": dict, "record": dict}
        for key, kind in expected.items():
            if key not in content:
                raise PipelineError(f"{path}: checkpoint lacks '{key}': retrain with `dvc repro`")
            if not isinstance(content[key], kind):
                raise PipelineError(f"{path}: checkpoint field '{key}' is {type(content[key]).__name__}, not "
                                    f"{kind.__name__}: retrain with `dvc repro`")
        for name, tensor in content["state_dict"].items():
            if not isinstance(tensor, torch.Tensor):
                raise PipelineError(f"{path}: checkpoint weight '{name}' is not a tensor: retrain with `dvc repro`")
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise PipelineError(f"{path}: checkpoint weight '{name}' holds NaN or infinite values (the run "
                                    f"diverged): retrain with a lower train.lr")
        try:
            return cls(content["state_dict"], parse_section(ModelParams, content["model"]), list(content["classes"]),
                       Preprocessing.from_dict(content["preprocessing"], str(path)), int(content["epoch"]),
                       str(content["train"]["device"]), bool(content["train"]["amp"]), dict(content["record"]),
                       printable(path))
        except (KeyError, TypeError) as exc:
            raise PipelineError(f"{path}: checkpoint lacks {exc}: retrain with `dvc repro`") from None

    def runtime(self, cpu_fallback: bool = False) -> tuple[torch.device, bool]:
        """The device and AMP setting training ran with (train.device, train.amp), so that evaluation
        repeats its arithmetic: `cpu` stays on the CPU on a GPU machine. `cpu_fallback` (predict)
        runs a `cuda` model on the CPU of a machine without a GPU instead of refusing."""
        choice = "cuda" if self.device.startswith("cuda") else self.device  # any GPU: the same arithmetic
        device = select_device("auto" if cpu_fallback and choice == "cuda" else choice)
        return device, self.amp and device.type == "cuda"

    def build_model(self, device: torch.device) -> nn.Module:
        """The trained model on `device`, in eval mode."""
        model = build_model(self.model, self.input_shape, with_weights=False)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise PipelineError(f"{self.path or 'the checkpoint'}: its weights do not fit {self.model.name} "
                                f"({' '.join(str(exc).split())[:160]}): retrain with `dvc repro`") from None
        return model.to(device).eval()
