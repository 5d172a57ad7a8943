"""Benchmark: from an image folder to a test accuracy, the pipeline against a plain PyTorch script.

    python -m benchmarks.folder [--train-images 50000] [--test-images 10000] [--epochs 3] [--packed]
                                [--side 32] [--prepare-size SIDE] [--seeds 1] [--skip-plain] [--until STAGE]
                                [--cpu-threads 0]

Makes a folder of JPEGs as a user's would be (32×32 colour, 10 classes, given as train/ and test/,
like CIFAR), then, side by side on it, with the same augmentation (pad-and-crop: a shift of up to
an eighth of the side, borders repeated) and both training on all of train/:
- the pipeline: a scratch git + DVC repo of this project, `dvc repro` with data.source set to the
  folder (or, with --packed, to its `python -m tools.pack` shards), a small CNN for --epochs;
  the wall time of each stage and of DVC's own work around them;
- the plain script: torchvision's ImageFolder, a DataLoader with 2 workers, the same CNN, SGD and
  schedule, the same epochs, then the test accuracy.
Then DVC's bookkeeping: a `dvc status` with nothing changed, and one re-encoded image: `dvc status`
and the `dvc repro` it starts. With --seeds N, both sides train N times (train.seed 0..N-1; the
pipeline reruns train and evaluate only) and the test accuracies' mean and spread are compared.
Results in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import PROJECT_FILES
from benchmarks.harness import command_env, edit_params, per_stage, set_param, sh, timed_repro

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10
SIDE = 32
MODEL = {"name": "cnn", "filters": [32, 64, 64], "pool_after": [1, 2, 3], "batch_norm": True, "dropout": 0.0,
         "head": [], "activation": "relu", "kernel_size": 3}
TRAIN = {"epochs": 3, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "optimizer": "sgd", "scheduler": "cosine",
         "weight_decay": 5e-4, "device": "cpu"}


def make_folder(root: Path, train: int, test: int, side: int = SIDE, seed: int = 0) -> None:
    """root/{train,test}/<class>/<i>.jpg: each class a colour blob at its own place, shifted and noisy."""
    import cv2
    rng = np.random.default_rng(seed)
    scale = side / SIDE
    centres = rng.uniform(8, 24, (CLASSES, 2)) * scale
    colours = rng.uniform(60, 255, (CLASSES, 3))
    yy, xx = np.mgrid[:side, :side]
    for split, count in (("train", train), ("test", test)):
        for c in range(CLASSES):
            (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
        labels = np.arange(count) % CLASSES
        for i, label in enumerate(labels):
            cy, cx = centres[label] + rng.normal(0, 3 * scale, 2)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (rng.uniform(3, 6) * scale) ** 2))
            image = blob[:, :, None] * colours[label] + rng.normal(0, 40, (side, side, 3)) + rng.uniform(0, 60)
            data = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
            (root / split / f"class{label}" / f"{i:06d}.jpg").write_bytes(data.tobytes())


class PeakMemory:
    """Each stage process's peak resident memory (VmHWM, which counts the pages of memory-mapped
    arrays the kernel may drop at will) and peak anonymous memory (RssAnon: what it allocated), read
    from /proc every 0.2 s while it runs."""

    def __init__(self) -> None:
        import threading
        self.peaks: dict[str, int] = {}
        self.anonymous: dict[str, int] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        while not self.done.wait(0.2):
            for proc in Path("/proc").iterdir():
                try:
                    found = re.search(rb"-m\0stages\.(\w+)", (proc / "cmdline").read_bytes())
                    if found:
                        status = (proc / "status").read_text()
                        peak = int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) * 1024
                        anonymous = int(re.search(r"RssAnon:\s+(\d+) kB", status)[1]) * 1024
                        name = found[1].decode()
                        self.peaks[name] = max(self.peaks.get(name, 0), peak)
                        self.anonymous[name] = max(self.anonymous.get(name, 0), anonymous)
                except (OSError, TypeError):
                    continue

    def stop(self) -> str:
        """The peaks as a line, MB."""
        self.done.set()
        self.thread.join()
        return ("peak resident memory (MB; anonymous in brackets): "
                + ", ".join(f"{name} {peak / 2**20:.0f} ({self.anonymous[name] / 2**20:.0f})"
                            for name, peak in self.peaks.items()))


def scratch_repo(work: Path, source: Path, epochs: int, size: int, cpu_threads: int, env: dict) -> None:
    for name in PROJECT_FILES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
    edit_params(work, {"data": {"source": str(source)},
                       "split": {"missing_val": "test"},  # all of train/ trains, as in the plain script
                       "prepare": {"grayscale": False, "image_size": size},
                       "augment": {"blur_kernels": [], "online": True, "online_crop_scale": 1.0,
                                   "online_translate": 0.125, "online_hflip": False},
                       "model": MODEL, "train": {**TRAIN, "epochs": epochs, "cpu_threads": cpu_threads}})
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "b@e.nch"], ["git", "config", "user.name", "b"],
                    [sys.executable, "-m", "dvc", "init", "-q"]):
        sh(command, work, env)
    shutil.copytree(ROOT / ".dvc" / "plots", work / ".dvc" / "plots", dirs_exist_ok=True)
    sh(["git", "add", "-A"], work, env)
    sh(["git", "commit", "-qm", "scratch"], work, env)


def test_accuracy(repro_output: str) -> float:
    return float(re.search(r"test accuracy +([\d.]+)%", repro_output)[1]) / 100


def plain_script(folder: Path, epochs: int, size: int, seed: int = 0) -> tuple[float, float]:
    """What a user writes without the pipeline: its wall time and test accuracy (in a fresh process)."""
    code = f"""
import time; start = time.perf_counter()
import torch, torchvision
from torch import nn
from torchvision import transforms as T
sys_path = {str(ROOT)!r}
import sys; sys.path.insert(0, sys_path)
from classifier.models.registry import InputShape, build_model
from classifier.params.checks import parse_section
from classifier.params.model import ModelParams
from benchmarks.harness import plain_epoch
torch.manual_seed({seed})
normal = T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
resize = [T.Resize({size})] if {size} != {SIDE} else []
pad_and_crop = T.RandomCrop({size}, padding={size} // 8, padding_mode="edge")
train = torchvision.datasets.ImageFolder({str(folder / 'train')!r}, T.Compose([*resize, pad_and_crop, T.ToTensor(), normal]))
test = torchvision.datasets.ImageFolder({str(folder / 'test')!r}, T.Compose([*resize, T.ToTensor(), normal]))
loader = torch.utils.data.DataLoader(train, batch_size={TRAIN['batch_size']}, shuffle=True, num_workers=2, persistent_workers=True)
params = parse_section(ModelParams, {{**{MODEL!r}, "pretrained": "", "freeze": "none", "blurpool": False, "hidden": []}})
model = build_model(params, InputShape(3, {size}, {size}, {CLASSES}))
optimizer = torch.optim.SGD(model.parameters(), lr={TRAIN['lr']}, momentum={TRAIN['momentum']}, weight_decay={TRAIN['weight_decay']})
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, {epochs})
for _ in range({epochs}):
    plain_epoch(model, loader, optimizer)
    schedule.step()
model.eval(); right = 0
with torch.no_grad():
    for xb, yb in torch.utils.data.DataLoader(test, batch_size=512, num_workers=2):
        right += (model(xb).argmax(1) == yb).sum().item()
print(time.perf_counter() - start, right / len(test))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode:
        sys.exit("the plain script failed:\n" + result.stderr[-3000:])
    seconds, accuracy = map(float, result.stdout.split()[-2:])
    return seconds, accuracy


def one_image_edit(photos: Path, work: Path, env: dict, target: str = "") -> float:
    """Re-encode one source JPEG: `dvc status`, then the `dvc repro [target]` it starts (its seconds)."""
    import cv2
    edited = next((photos / "train" / "class0").iterdir())
    image = cv2.imdecode(np.frombuffer(edited.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    edited.write_bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    status, _ = sh([sys.executable, "-m", "dvc", "status"], work, env)
    rerun, rerun_stages, _ = timed_repro(work, env, target)
    print(f"one image re-encoded: dvc status {status:.1f} s; dvc repro {target}{' ' if target else ''}{rerun:.1f} s "
          f"({per_stage(rerun_stages)})", flush=True)
    return rerun


def plain_runs(photos: Path, args: argparse.Namespace, size: int, wall: float) -> list[float]:
    """The plain script once per seed, its first run timed against the pipeline's `wall`; its accuracies."""
    accuracies = []
    for seed in range(args.seeds):
        seconds, accuracy = plain_script(photos, args.epochs, size, seed)
        accuracies.append(accuracy)
        if seed == 0:
            print(f"plain script: {seconds:.1f} s from folder to test accuracy {accuracy:.2%}", flush=True)
            print(f"ratio: the pipeline took {wall / seconds:.2f}× the plain script's time", flush=True)
    return accuracies


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=50_000)
    parser.add_argument("--test-images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--packed", action="store_true", help="data.source: the folder packed by tools.pack")
    parser.add_argument("--side", type=int, default=SIDE, help="the folder's images: side × side pixels")
    parser.add_argument("--prepare-size", type=int, help="prepare.image_size (default: --side)")
    parser.add_argument("--seeds", type=int, default=1, help="train each side this many times, seeds 0..N-1")
    parser.add_argument("--cpu-threads", type=int, default=0,
                        help="train.cpu_threads (default 0: the fastest kernels, as the plain script has; 2: portable)")
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--until", default="", metavar="STAGE",
                        help="`dvc repro STAGE`: the stages up to it alone (no accuracy, no plain script)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    size = args.prepare_size or args.side
    env = command_env(DVC_NO_ANALYTICS="1", PYTHONPATH="")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        env["IMAGE_PIPELINE_CACHE"] = str(scratch / "decode-cache")  # ingest's, empty at the start
        start = time.perf_counter()
        make_folder(scratch / "photos", args.train_images, args.test_images, args.side)
        total = args.train_images + args.test_images
        print(f"folder: {total} JPEGs of {args.side}×{args.side} in {CLASSES} classes, train/ and test/ "
              f"({time.perf_counter() - start:.0f} s to make)", flush=True)
        source = scratch / "photos"
        if args.packed:
            seconds, _ = sh([sys.executable, "-m", "tools.pack", str(source), str(scratch / "packed")], ROOT, env)
            print(f"tools.pack: {seconds:.1f} s", flush=True)
            source = scratch / "packed"
        work = scratch / "work"
        work.mkdir()
        scratch_repo(work, source, args.epochs, size, args.cpu_threads, env)
        memory = PeakMemory()
        wall, stages, output = timed_repro(work, env, args.until)
        peaks = memory.stop()
        if args.until:
            print(f"pipeline up to {args.until}: {wall:.1f} s; per stage (s): {per_stage(stages)}")
            print(peaks)
            if not args.packed:
                rerun = one_image_edit(scratch / "photos", work, env, args.until)
                print(f"one image re-encoded: {rerun / wall:.2f}× the time of the whole run up to {args.until}")
            return
        accuracy = test_accuracy(output)
        print(f"pipeline: {wall:.1f} s from folder to test accuracy {accuracy:.2%}; per stage (s): "
              f"{per_stage(stages)}", flush=True)
        fixed = sum(stages.get(s, 0) for s in ("params", "ingest", "split", "prepare", "augment"))
        print(f"pipeline: params + ingest + split + prepare + augment {fixed:.1f} s; "
              f"DVC around the stages {wall - sum(stages.values()):.1f} s", flush=True)
        print(peaks, flush=True)
        files = sum(1 for _ in (work / ".dvc" / "cache").rglob("*") if _.is_file())
        print(f"DVC cache: {files} files for {total} images", flush=True)
        status, _ = sh([sys.executable, "-m", "dvc", "status"], work, env)
        print(f"dvc status, nothing changed: {status:.1f} s", flush=True)
        accuracies = [accuracy]
        for seed in range(1, args.seeds):  # before the edit below: every seed trains on the same data
            set_param(work, "train", "seed", seed)
            accuracies.append(test_accuracy(timed_repro(work, env)[2]))
        set_param(work, "train", "seed", 0)
        if not args.packed:  # a loose folder: one re-encoded image in it
            one_image_edit(scratch / "photos", work, env)
        plain_accuracies = [] if args.skip_plain else plain_runs(scratch / "photos", args, size, wall)
        if args.seeds > 1:
            for name, values in (("pipeline", accuracies), ("plain script", plain_accuracies)):
                if values:
                    print(f"{name:>12}: test accuracy {np.mean(values):.2%} ± {np.std(values, ddof=1):.2%} over "
                          f"{len(values)} seeds ({', '.join(f'{v:.2%}' for v in values)})", flush=True)


if __name__ == "__main__":
    main()
