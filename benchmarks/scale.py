"""Benchmark: scaling out, measured where it can be on this machine.

1. Data-parallel processes: the train stage (`python -m stages.train`, torchrun + DDP on the CPU with
   gloo) with train.processes = 1 and 2 on the same synthetic arrays, side by side: the training
   steps' throughput (metrics/train.json images_per_second) and the stage's wall time, startup included.
2. Streamed vs resident data: one epoch of `fit` over a memory-mapped array of 360,000 64×64 grey
   images (the seed experiment's augmented set), once with the array copied to the device
   (resident) and once gathered batch by batch from the memory map (streamed): images/s and peak
   memory, each in a fresh process. Peak anonymous memory (RssAnon: what the process allocated)
   and peak resident size (VmHWM, which also counts the memory map's pages held in the page cache).

    python -m benchmarks.scale [--images 20000] [--epochs 3] [--stream-images 360000]

Results in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from benchmarks.harness import edit_params, set_param

ROOT = Path(__file__).resolve().parents[1]


def write_arrays(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", labels.astype(np.int64))
    pd.DataFrame({"source": [f"synthetic/{i}" for i in range(len(labels))], "split": "train",
                  "augmentation": "original"}).to_csv(folder / "index.csv", index=False)


def synthetic_project(root: Path, images: int, size: int, epochs: int) -> None:
    """A copy of the project whose train inputs are `images` random size×size grey images of 10 classes."""
    from classifier.runtime import paths
    from classifier.params.whole_file import load_params
    from classifier.data.preprocessing import Preprocessing
    for name in ("stages", "classifier", "params.yaml"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, root / name)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, images)
    # Class-dependent brightness, so the model learns something and the loss stays finite.
    pixels = np.clip(rng.normal(60 + 12 * labels[:, None, None, None], 40, (images, size, size, 1)), 0, 255)
    write_arrays(root / paths.AUGMENTED_DIR / "train", pixels.astype(np.uint8), labels)
    write_arrays(root / paths.PREPARED_DIR / "val", pixels[:500].astype(np.uint8), labels[:500])
    (root / paths.SPLIT_DIR).mkdir(parents=True, exist_ok=True)
    (root / paths.CLASSES_FILE).write_text(json.dumps([str(c) for c in range(10)]))
    prepare = load_params("prepare", path=ROOT / "params.yaml").prepare
    prepare = dataclasses.replace(prepare, image_size=(size, size), grayscale=True)
    Preprocessing(prepare, (0.3,), (0.3,)).write(root / paths.STATS_FILE, {})
    edit_params(root, {"prepare": {"image_size": size}, "model": {"name": "lenet5"},
                       "train": {"epochs": epochs, "device": "cpu", "scheduler": "none"}})


def train_stage(root: Path, processes: int) -> tuple[float, float]:
    """(images/s of the training steps, wall seconds of the whole stage) with train.processes = `processes`."""
    set_param(root, "train", "processes", processes)
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    subprocess.run([sys.executable, "-m", "stages.train"], cwd=root, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - started
    return json.loads((root / "metrics/train.json").read_text())["images_per_second"], wall


def processes_benchmark(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthetic_project(root, args.images, 32, args.epochs)
        print(f"train stage, lenet5 on {args.images:,} 1×32×32 images, batch 64, {args.epochs} epochs, CPU "
              f"({os.cpu_count()} cores), best of {args.repeats}")
        best: dict[int, tuple[float, float]] = {}
        for _ in range(args.repeats):  # interleaved, so both see the same machine state
            for processes in (1, 2):
                speed, wall = train_stage(root, processes)
                old = best.get(processes, (0.0, float("inf")))
                best[processes] = (max(old[0], speed), min(old[1], wall))
        for processes, (speed, wall) in best.items():
            print(f"  processes={processes}: {speed:>8,.0f} images/s in the training steps, stage {wall:.1f}s")
        print(f"  ratio (2 vs 1): {best[2][0] / best[1][0]:.2f}× throughput, {best[2][1] / best[1][1]:.2f}× stage time")


STREAM_CHILD = """
import sys, threading, time, dataclasses
import numpy as np, torch
from classifier.training.device_dataset import DeviceDataset
from classifier.models.registry import InputShape, build_model
from classifier.params.whole_file import load_params
from classifier.data.preprocessing import Normalizer
from classifier.training.loop import FitData, Hooks, fit

path, resident = sys.argv[1], sys.argv[2] == "resident"
peak = {"anon": 0}
def watch():
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak["anon"] = max(peak["anon"], int(line.split()[1]))
        time.sleep(0.02)
threading.Thread(target=watch, daemon=True).start()
images = np.load(path + "/images.npy", mmap_mode="r")
labels = np.load(path + "/labels.npy")
model = build_model(dataclasses.replace(load_params("model").model, name="mlp", hidden=(), dropout=0.0),
                    InputShape(1, images.shape[1], images.shape[2], 10))
train = dataclasses.replace(load_params("train").train, epochs=1, batch_size=256, scheduler="none", device="cpu")
started = time.perf_counter()
data = DeviceDataset(images, labels, torch.device("cpu"), resident=resident)
val = DeviceDataset(images[:1000], labels[:1000], torch.device("cpu"))
result = fit(model, FitData(data, val, Normalizer((0.3,), (0.3,))), train, Hooks(log=lambda _: None))
total = time.perf_counter() - started
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(result.images_per_second, total, peak["anon"] / 1024, hwm / 1024)
"""


def stream_benchmark(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (args.stream_images, 64, 64, 1))
        for start in range(0, args.stream_images, 20000):  # written in blocks: no 1.4 GiB array in this process
            stop = min(start + 20000, args.stream_images)
            images[start:stop] = rng.integers(0, 256, (stop - start, 64, 64, 1), dtype=np.uint8)
        images.flush()
        del images
        np.save(folder / "labels.npy", rng.integers(0, 10, args.stream_images))
        print(f"one epoch of fit, softmax regression (the data path dominates), batch 256, over "
              f"{args.stream_images:,} 64×64 grey images ({args.stream_images * 4096 / 2**30:.2f} GiB memory-mapped), CPU")
        results = {}
        for mode in ("resident", "streamed"):
            subprocess.run(["sync"], check=False)
            out = subprocess.run([sys.executable, "-c", STREAM_CHILD, str(folder), mode], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout.split()
            speed, total, anon, hwm = map(float, out)
            results[mode] = (speed, total, anon, hwm)
            print(f"  {mode:>8}: {speed:>8,.0f} images/s in the steps, {total:.1f}s with loading; "
                  f"peak anonymous memory {anon:,.0f} MiB, peak resident {hwm:,.0f} MiB")
        (rs, rt, ra, _), (ss, st, sa, _) = results["resident"], results["streamed"]
        print(f"  ratio (streamed vs resident): {ss / rs:.2f}× step throughput, {st / rt:.2f}× time with loading, "
              f"{sa / ra:.3f}× peak anonymous memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stream-images", type=int, default=360000)
    parser.add_argument("--skip", choices=("processes", "stream"), help="leave one part out")
    args = parser.parse_args()
    if args.skip != "processes":
        processes_benchmark(args)
    if args.skip != "stream":
        stream_benchmark(args)


if __name__ == "__main__":
    main()
