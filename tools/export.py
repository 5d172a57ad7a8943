"""Export the trained model with its normalisation as one self-contained file for serving.

    python -m tools.export [--model models/model.pt] [--output models/model.pt2]

Not a DVC stage (it would add seconds to every experiment): run it on the checkpoint you serve,
the workspace's or one fetched from the registry (`dvc artifacts get . classifier --stage prod`).
Writes a `torch.export` program (no Python class of this project needed to run
it): it takes uint8 images N×C×H×W, already at the prepared size and colour (prepare's params,
recorded beside it), normalises them as training did and returns the logits. Beside the program,
in the same file: classes.json (the class names, in logit order) and preprocessing.json (the
prepare params and normalisation: what to do to a photo before it goes in). Read it with

    from tools.export import load_exported
    program, classes, preprocessing = load_exported("models/model.pt2")
    logits = program(images)        # uint8 N×C×H×W
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import torch
from torch import nn

from classifier import paths
from classifier.checkpoint import Checkpoint
from classifier.errors import PipelineError, run_stage
from classifier.outputs import atomic_file
from classifier.preprocessing import Normalizer

MAX_BATCH = 65_536  # the exported program takes any batch from 1 image to this many


class Served(nn.Module):
    """uint8 N×C×H×W -> logits: the training-time normalisation (the contract's Normalizer: its
    constants, as buffers of the program, and its arithmetic), then the model (in eval mode)."""

    def __init__(self, model: nn.Module, normalize: Normalizer) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("scale", normalize.scale)
        self.register_buffer("shift", normalize.shift)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.float() * self.scale - self.shift)  # Normalizer.__call__


def export_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write `checkpoint`'s model as a torch.export program (CPU, float32) with its classes and preprocessing."""
    served = Served(checkpoint.build_model(torch.device("cpu")), checkpoint.preprocessing.normalizer()).eval()
    example = torch.zeros((2, *checkpoint.preprocessing.input_shape), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        program = torch.export.export(served, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export names the construct it cannot trace
        raise PipelineError(f"{checkpoint.model.name} cannot be exported with torch.export: "
                            f"{' '.join(str(exc).split())[:300]}") from None
    extra = {"classes.json": json.dumps(checkpoint.classes),
             "preprocessing.json": json.dumps(checkpoint.preprocessing.to_dict())}
    buffer = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer; the file is written atomically
    torch.export.save(program, buffer, extra_files=extra)
    with atomic_file(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_exported(path: Path | str) -> tuple[nn.Module, list[str], dict]:
    """The exported program as a callable module, the class names and the preprocessing dict."""
    extra = {"classes.json": "", "preprocessing.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), json.loads(extra["classes.json"]), json.loads(extra["preprocessing.json"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=paths.MODEL_FILE, help="checkpoint (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=paths.EXPORTED_MODEL,
                        help="the program file to write, .pt2 (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    checkpoint = Checkpoint.load(args.model)
    export_checkpoint(checkpoint, args.output)
    print(f"export: {args.output} ({checkpoint.model.name}, {len(checkpoint.classes)} classes, uint8 "
          f"N×{'×'.join(map(str, checkpoint.preprocessing.input_shape))} in, logits out)")


if __name__ == "__main__":
    run_stage(main)
