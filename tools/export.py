"""Export the trained model with its normalisation as one self-contained file for serving.

    python -m tools.export [--model models/model.pt] [--format pt2|onnx] [--output FILE]

Not a DVC stage (it would add seconds to every experiment): run it on the checkpoint you serve,
the workspace's or one fetched from the registry (`dvc artifacts get . classifier --stage prod`).
Either format holds one contract, with no Python class of this project needed to run it: uint8
images N×C×H×W in (any batch size), already at the prepared size and colour (prepare's params,
recorded in the file), normalised inside as training did, logits out (divided by evaluate.calibrate's
temperature when models/calibration.json was fitted for this checkpoint's bytes, so that their
softmax is the calibrated probabilities); and in the same file the class names (in logit order),
the temperature and the preprocessing (the prepare params and normalisation: what to
do to a photo before it goes in).

- pt2 (default, models/model.pt2): a `torch.export` program, for PyTorch;
- onnx (models/model.onnx): ONNX (opset 18, torch.onnx's dynamo exporter), for onnxruntime on CPU,
  GPU, mobile and the web, TorchServe, MLflow; input `images`, output `logits`, the class names
  temperature and preprocessing as JSON in the model's metadata (`classes`, `temperature`, `preprocessing`).

    from tools.export import load_exported, load_onnx
    program, classes, preprocessing = load_exported("models/model.pt2")
    logits = program(images)                                   # uint8 N×C×H×W torch tensor
    session, classes, preprocessing = load_onnx("models/model.onnx")
    logits = session.run(None, {"images": images})[0]          # uint8 N×C×H×W numpy array
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from classifier.runtime import paths
from classifier.models.checkpoint import Checkpoint
from classifier.evaluation.calibration import temperature_for
from classifier.runtime.errors import PipelineError, run_stage
from classifier.runtime.outputs import atomic_file
from classifier.data.preprocessing import Normalizer

MAX_BATCH = 65_536  # the exported program takes any batch from 1 image to this many
ONNX_MODEL = Path("models/model.onnx")  # --format onnx; `dvc add` it to register it (dvc.yaml: classifier-onnx)


class Served(nn.Module):
    """uint8 N×C×H×W -> logits: the training-time normalisation (the contract's Normalizer: its
    constants, as buffers of the program, and its arithmetic), then the model (in eval mode), then
    the division by the calibration temperature (1.0: none)."""

    def __init__(self, model: nn.Module, normalize: Normalizer, temperature: float = 1.0) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("scale", normalize.scale)
        self.register_buffer("shift", normalize.shift)
        self.register_buffer("temperature", torch.tensor(temperature, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.float() * self.scale - self.shift) / self.temperature  # Normalizer.__call__


def served(checkpoint: Checkpoint, temperature: float) -> Served:
    return Served(checkpoint.build_model(torch.device("cpu")), checkpoint.preprocessing.normalizer(), temperature).eval()


def export_checkpoint(checkpoint: Checkpoint, path: Path, temperature: float = 1.0) -> None:
    """Write `checkpoint`'s model as a torch.export program (CPU, float32) with its classes, temperature
    and preprocessing."""
    served_model = served(checkpoint, temperature)
    example = torch.zeros((2, *checkpoint.preprocessing.input_shape), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        program = torch.export.export(served_model, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export names the construct it cannot trace
        raise PipelineError(f"{checkpoint.model.name} cannot be exported with torch.export: "
                            f"{' '.join(str(exc).split())[:300]}") from None
    extra = {"classes.json": json.dumps(checkpoint.classes), "temperature.json": json.dumps(temperature),
             "preprocessing.json": json.dumps(checkpoint.preprocessing.to_dict())}
    buffer = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer; the file is written atomically
    torch.export.save(program, buffer, extra_files=extra)
    with atomic_file(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def export_onnx(checkpoint: Checkpoint, path: Path, temperature: float = 1.0) -> None:
    """Write `checkpoint`'s model as ONNX (CPU, float32, a dynamic batch) with its classes, temperature
    and preprocessing in the model's metadata."""
    served_model = served(checkpoint, temperature)
    example = torch.zeros((2, *checkpoint.preprocessing.input_shape), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # its progress lines
            warnings.simplefilter("ignore")
            program = torch.onnx.export(served_model, (example,), dynamo=True, verbose=False, input_names=["images"],
                                        output_names=["logits"], dynamic_shapes=({0: batch},), opset_version=18)
    except Exception as exc:  # the exporter names the construct it cannot translate
        raise PipelineError(f"{checkpoint.model.name} cannot be exported to ONNX: "
                            f"{' '.join(str(exc).split())[:300]}") from None
    proto = program.model_proto
    for key, value in (("classes", json.dumps(checkpoint.classes)), ("temperature", json.dumps(temperature)),
                       ("preprocessing", json.dumps(checkpoint.preprocessing.to_dict()))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_file(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())


def load_onnx(path: Path | str):
    """An onnxruntime session of the ONNX file (CPU), the class names and the preprocessing dict."""
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    return session, json.loads(metadata["classes"]), json.loads(metadata["preprocessing"])


FORMATS = {"pt2": (export_checkpoint, paths.EXPORTED_MODEL), "onnx": (export_onnx, ONNX_MODEL)}


def load_exported(path: Path | str) -> tuple[nn.Module, list[str], dict]:
    """The exported program as a callable module, the class names and the preprocessing dict."""
    extra = {"classes.json": "", "preprocessing.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), json.loads(extra["classes.json"]), json.loads(extra["preprocessing.json"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=paths.MODEL_FILE, help="checkpoint (default: %(default)s)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="pt2",
                        help="pt2: a torch.export program; onnx: ONNX, for onnxruntime (default: %(default)s)")
    parser.add_argument("--output", type=Path, help=f"the file to write (default: {paths.EXPORTED_MODEL} or "
                                                    f"{ONNX_MODEL})")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    export, default = FORMATS[args.format]
    output = args.output or default
    checkpoint = Checkpoint.load(args.model)
    temperature, said = temperature_for(args.model, paths.CALIBRATION_FILE)
    export(checkpoint, output, temperature)
    print(f"export: {output} ({args.format}; {checkpoint.model.name}, {len(checkpoint.classes)} classes, uint8 "
          f"N×{'×'.join(map(str, checkpoint.preprocessing.input_shape))} in, logits out)" + (f"; {said}" if said else ""))


if __name__ == "__main__":
    run_stage(main)
