"""Classify new images with the trained model: top-k classes with their probabilities.

    python -m tools.predict IMAGE [IMAGE ...] [--model models/model.pt] [--top-k 3] [--json] [--tta flip]

With evaluate.calibrate: temperature, the probabilities are the calibrated ones: the logits divided
by the temperature evaluate fitted on val for this model's bytes (models/calibration.json; for
another model's file, none, and a line on stderr says so). Applies exactly the training-time preprocessing, read from the checkpoint (the one contract of
classifier/data/preprocessing.py): the prepare params (grayscale, size, resize mode, interpolation,
padding) and the train split's normalisation.
An image is a file, or an image of data/raw named by its key as data/split's file lists name it
(data/raw/<class>/<file>: read from the shards). Every image is read before anything is printed: an
unreadable one stops with a one-line error naming it and exit status 1. Not a DVC stage: it reads
models/model.pt and writes to stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from classifier.runtime import paths
from classifier.models.checkpoint import Checkpoint
from classifier.training.device_dataset import images_to_tensor
from classifier.runtime.errors import PipelineError, printable, run_stage
from classifier.evaluation.calibration import temperature_for
from classifier.data.image_files import decode_image, read_image
from classifier.data.image_format import format_image
from classifier.models.inference import TTA_MODES, predict_logits
from classifier.data.shards import INDEX_NAME, RawImages


def read_any(files: list[Path]) -> list[np.ndarray]:
    """Each image file, or data/raw image key (when no such file exists), decoded."""
    raw = None
    images = []
    for file in files:
        if file.is_file():
            images.append(read_image(file))
            continue
        if paths.RAW_DIR in file.parents and (paths.RAW_DIR / INDEX_NAME).is_file():
            raw = raw or RawImages(paths.RAW_DIR)
            if file.as_posix() in raw:
                images.append(decode_image(raw.bytes(file.as_posix()), file.as_posix()))
                continue
        if file.is_dir():
            raise PipelineError(f"{printable(file)} is a folder: give its image files, e.g. "
                                f"{printable(file / '*.jpg')} (the shell expands it)")
        raise PipelineError(f"{printable(file)}: no such image file")
    return images


def predict(files: list[Path], model_file: Path, top_k: int, tta: str = "none") -> list[dict]:
    """[{"image", "predictions": [{"class", "probability"}, ...]}] in the order of `files`."""
    checkpoint = Checkpoint.load(model_file)
    device, amp = checkpoint.runtime(cpu_fallback=True)  # a GPU-trained model still runs on a CPU-only machine
    images = np.stack([format_image(image, checkpoint.preprocessing.image) for image in read_any(files)])
    # Progress on stderr once every image has been read (an error stays one line); stdout is the answer.
    print(f"predict: {len(files)} image(s) read; classifying with {model_file} ({checkpoint.model.name}, "
          f"{len(checkpoint.classes)} classes) on {device}", file=sys.stderr, flush=True)
    model = checkpoint.build_model(device)
    normalize = checkpoint.preprocessing.normalizer(device)
    logits = predict_logits(model, images_to_tensor(images, device), normalize, amp=amp, tta=tta)
    temperature, said = temperature_for(model_file, paths.CALIBRATION_FILE)
    if said:
        print(f"predict: {said}", file=sys.stderr, flush=True)
    probabilities = torch.softmax(logits / temperature, 1).cpu()
    k = min(top_k, probabilities.shape[1])
    top = probabilities.topk(k, dim=1)
    classes = checkpoint.classes
    return [{"image": printable(file),
             "predictions": [{"class": classes[c], "probability": float(p)} for p, c in zip(values, indices)]}
            for file, values, indices in zip(files, top.values.tolist(), top.indices.tolist())]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path,
                        help="image files (PNG, JPEG, BMP, WebP, TIFF), or data/raw keys (data/raw/<class>/<file>)")
    parser.add_argument("--model", type=Path, default=paths.MODEL_FILE, help="checkpoint (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per image (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of one line per image")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation: average the probabilities over the image and its mirror "
                             "(flip) or four corner crops (crops), as evaluate.tta scores it (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.top_k < 1:
        raise PipelineError(f"--top-k must be >= 1, got {args.top_k}")
    results = predict(args.images, args.model, args.top_k, args.tta)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        ranked = ", ".join(f"{p['class']} {p['probability']:.1%}" for p in result["predictions"])
        print(f"{result['image']}: {ranked}")


if __name__ == "__main__":
    run_stage(main)
