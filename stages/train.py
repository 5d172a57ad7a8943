"""Stage train: fit the model named in params on the augmented train split.

    python -m stages.train

With model.freeze: features and train.finetune_epochs, the head is trained first, then every layer
(two-phase fine-tuning, one history). Uses a GPU no other experiment holds when there is one
(train.device: auto; classifier/training/devices.py) and the CPU otherwise. With train.processes (or
train.nodes) > 1 it restarts itself as torchrun's data-parallel processes (classifier/training/distributed.py);
rank 0 writes the outputs. Prints one line per epoch and, as each epoch ends, rewrites
plots/train/history.csv and metrics/time.json (epochs done, seconds), so that `dvc exp show` and
`dvc plots diff` follow a running experiment; until evaluate scores this run, metrics/summary.json
is removed (it held the last run's scores). Keeps the last epoch's weights, or with
train.checkpoint: best the best epoch's by train.monitor on the val split (early stopping with
train.patience). Writes models/model.pt (classifier/models/checkpoint.py: those weights plus everything
evaluate and predict need), metrics/train.json and plots/train/: history.csv (per epoch: lr, train
and val cross-entropy, the train objective, accuracies) and steps.csv (per batch). After every
epoch it keeps the run's whole state (classifier/training/resume.py); an interrupted run (a signal,
kill -9) resumes from it when the same run starts again, with the bytes of a run never stopped.
"""
from __future__ import annotations

import dataclasses
import os

from classifier.training import cpu_kernels
from classifier.runtime.stale_summary import retire_summary

# The stage itself, not one of its torchrun workers (torchrun sets this; distributed.is_worker says the
# same, but importing that module imports torch).
if __name__ == "__main__" and "TORCHELASTIC_RUN_ID" not in os.environ:
    # First thing, before the seconds of importing torch below, in which `dvc exp show` would give a
    # running experiment its baseline's scores: this run's model makes metrics/summary.json stale.
    retire_summary()
if __name__ == "__main__":  # the stage or a torchrun worker: train.cpu_threads's kernels, before any tensor
    cpu_kernels.pin_for_this_run()

import pandas as pd
import torch

from classifier.runtime import paths
from classifier.augment.online import online_augment
from classifier.models.checkpoint import Checkpoint
from classifier.training.device_dataset import DeviceDataset
from classifier.training.devices import CLAIMED_VARIABLE, claim_device, claim_gpus, select_device
from classifier.training.distributed import (TorchrunWorker, World, check_same_inputs, fingerprint, from_environment, join,
                                    launch, launcher_alive, leave, share_from_leader)
from classifier.runtime.errors import PipelineError, run_stage
from classifier.models.registry import InputShape, build_model, count_parameters
from classifier.training.optim import class_weights
from classifier.runtime.outputs import atomic_file, staged_outputs, write_json
from classifier.params.checks import Sections, as_plain, load_sections
from classifier.params.model import ModelParams
from classifier.params.online_augment import OnlineAugmentParams
from classifier.params.train import TrainParams, check_with_model
from classifier.params.tune import TuneParams
from classifier.data.preprocessing import Preprocessing
from classifier.runtime.code_deps import code_digest
from classifier.training.loop import (EpochRecord, FitData, FitResult, Hooks, STEP_COLUMNS, check_kept, fit_phases,
                                      Keeping, kept_within, load_training_inputs, resumed_history, shard_rows)
from classifier.training.resume import Identity, StateKeeper, data_digest, state_every_seconds
from classifier.training.tuning import TrialReport

PARAMS = (ModelParams, TrainParams, OnlineAugmentParams, TuneParams)
DEPS = (paths.AUGMENTED_DIR, paths.PREPARED_DIR, paths.SPLIT_DIR, paths.PRETRAINED_DIR)
OUTS = (paths.MODEL_FILE, paths.TRAIN_METRICS, paths.TIME_METRICS, paths.TRAIN_PLOTS)


def main() -> None:
    params = load_sections(*PARAMS)
    check_with_model(params.train, params.model.freeze)
    world = from_environment()
    if world is None and params.train.processes * params.train.nodes > 1:
        load_training_inputs()  # a missing or mismatched input is one message from here, not one per process
        device = select_device(params.train.device)
        if device.type == "cuda":  # one GPU per process, claimed together here and held until all are done
            gpus = claim_gpus(torch.cuda.device_count(), params.train.processes)
            os.environ[CLAIMED_VARIABLE] = ",".join(map(str, gpus))
        print(f"train: starting {params.train.processes} processes with torchrun"
              f"{f' as node 0 of {params.train.nodes} at {params.train.rendezvous}' if params.train.nodes > 1 else ''}")
        try:
            launch(params.train.processes, params.train.nodes, params.train.rendezvous, "stages.train")
        except KeyboardInterrupt as exc:  # its workers' rank 0 kept the state: the last line says which
            # Its identity hashes the data: only now, not on every run beside rank 0, which hashes it too.
            exc.note = run_state(params, device, print).interrupted()
            raise
        return
    world = world or World()
    try:
        train_process(params, world)
    finally:
        leave()


def train_process(params: Sections, world: World) -> None:
    """Train as one process, or as one of torchrun's data-parallel processes (rank 0 writes the outputs)."""
    log = print if world.leader else (lambda _: None)
    device = claim_device(select_device(params.train.device), log, world.local_rank)
    join(world, device)
    classes, preprocessing, train_set, val_set, augment = checked_inputs(params, world)
    _, height, width, channels = train_set.images.shape
    model, train, val = model_and_data(params, world, device, len(classes), train_set, val_set)
    trainable = count_parameters(model)
    where = f"{world.size} processes on {device.type}" if world.distributed else str(device)
    if device.type == "cpu":  # which kernels, and so which CPUs give these bytes
        where += f" ({cpu_kernels.describe()})"
    log(f"train: {params.model.name} ({trainable:,} trainable parameters) on {where}, {len(train_set.labels)} train / "
        f"{len(val_set.labels)} val images of {channels}×{height}×{width}{'' if train.resident else ', streamed'}")
    keeper = run_state(params, device, log) if world.leader else None
    trial = TrialReport(params.tune if world.leader else TuneParams("", 0), log, len(classes))  # tools.tune's, or none
    resume = share_from_leader(keeper.load(check_kept) if keeper else None, world)
    trial.resumed(resumed_history(resume))

    def after_epoch(history: list[EpochRecord]) -> bool:  # rank 0's; True (the pruner's) ends the run
        """The history so far and the epochs done: live rows and curves of a running experiment in
        `dvc exp show` and `dvc plots diff`; the epoch reported to a search."""
        with atomic_file(paths.HISTORY_FILE) as tmp:
            history_table(history).to_csv(tmp, index=False)
        with atomic_file(paths.TIME_METRICS) as tmp:
            write_json(tmp, progress(history))
        return trial.after_epoch(history[-1])

    def keep(state: dict) -> None:  # rank 0's; the others' streams reach it inside fit
        keeper.save(state, *kept_within(state))

    try:
        weights = class_weights(params.train.class_weights, train_set.labels, len(classes))
        result = fit_phases(model, FitData(train, val, preprocessing.normalizer(device), weights, augment), params.train,
                            Hooks(log, after_epoch if world.leader else None, Keeping(keep, state_every_seconds())),
                            world, resume)
        if world.leader:
            saved_epoch = write_outputs(params, result, classes, preprocessing, trainable, len(train_set.labels),
                                        world)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM (a spot instance taken back): its last line says more
        if keeper is not None:
            exc.note = keeper.interrupted()
        raise  # a trial stays running in its study: the same run resumes it
    except PipelineError:  # a NaN loss, an orphaned worker: the study records the trial failed, and goes on
        trial.failed()
        raise
    if world.leader:
        keeper.remove()
        trial.ended(result.pruned, result.history[saved_epoch - 1])


def model_and_data(params: Sections, world: World, device: torch.device, num_classes: int, train_set, val_set):
    """This process's model (the same initial weights on every process) and its device datasets: its
    shard of train, and val on rank 0 (the one that validates)."""
    _, height, width, channels = train_set.images.shape
    torch.manual_seed(params.train.seed)  # weight initialisation: the same on every process
    model = build_model(params.model, InputShape(channels, height, width, num_classes)).to(device)
    if world.rank:
        torch.manual_seed(params.train.seed + world.rank)  # dropout masks of their own
    train = DeviceDataset(train_set.images, train_set.labels, device,
                          rows=shard_rows(len(train_set.labels), world, params.train.seed))
    val = DeviceDataset(val_set.images, val_set.labels, device) if world.leader else None
    return model, train, val


def checked_inputs(params: Sections, world: World):
    """Train's inputs and its batch augmentation, checked to be the same on every process."""
    classes, preprocessing, train_set, val_set = load_training_inputs(params.model)
    augment = online_augment(params.augment, params.train, len(classes))
    topology = {"processes", "nodes", "rendezvous"}  # may differ between nodes; torchrun checks them
    check_same_inputs(world, fingerprint(
        as_plain(params.model), {k: v for k, v in as_plain(params.train).items() if k not in topology},
        augment, classes,
        preprocessing.to_dict(), train_set.images.shape, train_set.labels, val_set.images.shape, val_set.labels))
    return classes, preprocessing, train_set, val_set, augment


def run_state(params: Sections, device: torch.device, log) -> StateKeeper:
    """The keeper of this run's state (classifier/training/resume.py): its identity is the params train
    reads (torchrun's meeting address aside), its input folders' bytes, its code and the device kind."""
    sections = {"model": as_plain(params.model), "augment": as_plain(params.augment),
                "train": {k: v for k, v in as_plain(params.train).items() if k != "rendezvous"}}
    identity = Identity(sections, data_digest(DEPS), code_digest("stages.train"), device.type)
    return StateKeeper(identity, params.train.epochs + params.train.finetune_epochs, log)


def history_table(records: list[EpochRecord]) -> pd.DataFrame:
    """plots/train/history.csv: one row per epoch."""
    return pd.DataFrame([dataclasses.asdict(r) for r in records])


def progress(records: list[EpochRecord]) -> dict:
    """metrics/time.json, a column pair of `dvc exp show`: epochs done and training wall time so far."""
    return {"epoch": records[-1].epoch if records else 0, "seconds": round(sum(r.seconds for r in records), 1)}


def write_outputs(params: Sections, result: FitResult, classes: list[str], preprocessing: Preprocessing, trainable: int,
                  train_images: int, world: World) -> int:
    """models/model.pt, metrics/train.json and time.json, plots/train: all written, then switched in; the
    saved epoch."""
    state, saved_epoch = result.saved(params.train.checkpoint)
    history = history_table(result.history)
    steps = pd.DataFrame(result.steps, columns=list(STEP_COLUMNS))
    # What evaluate judges the run by; no wall times, so that the same run writes the same bytes.
    record = {"history": history.drop(columns="seconds").to_dict(orient="list"), "step_losses": steps["loss"].tolist(),
              "best_epoch": result.best_epoch}
    seconds = float(history["seconds"].sum())
    if not launcher_alive():  # an orphan of a killed run: these outputs belong to no run
        raise PipelineError("the launcher of this data-parallel run is gone: outputs not written")
    saved = result.history[saved_epoch - 1]
    # Every output is written before any is switched in: a failure while writing leaves the last run's, all of them.
    with staged_outputs(files=(paths.MODEL_FILE, paths.TRAIN_METRICS, paths.TIME_METRICS),
                        dirs=(paths.TRAIN_PLOTS,)) as out:
        Checkpoint(state, params.model, classes, preprocessing, saved_epoch, params.train.device,
                   params.train.amp, record).save(out[paths.MODEL_FILE])
        write_json(out[paths.TRAIN_METRICS], {
            "epochs": len(result.history),
            "saved_epoch": saved_epoch,
            "best_epoch": result.best_epoch,  # by train.monitor; its val scores are in plots/train/history.csv
            "stopped_early": result.stopped_early,
            "pruned": result.pruned,  # a tools.tune trial its study's pruner stopped (after `epochs`)
            "parameters": trainable,
            "params_per_sample": trainable / train_images,
            # At the saved epoch, averaged over its steps in train mode; val scores: metrics/eval.json.
            "train_loss": saved.train_loss, "train_accuracy": saved.train_accuracy,
            # Wall time (each epoch's: plots/train/history.csv) and the training steps' throughput.
            "seconds": seconds,
            "images_per_second": result.images_per_second,
            "processes": world.size,
        })
        # Declared metrics: columns of dvc exp show (a tools.tune trial's row says whether it was pruned).
        write_json(out[paths.TIME_METRICS], {**progress(result.history), "pruned": result.pruned})
        history.to_csv(out[paths.TRAIN_PLOTS] / paths.HISTORY_FILE.name, index=False)
        steps.to_csv(out[paths.TRAIN_PLOTS] / "steps.csv", index=False)
    which = f"the best by {params.train.monitor}" if params.train.checkpoint == "best" else "the last"
    print(f"train: saved epoch {saved_epoch} ({which}; best {params.train.monitor}: epoch {result.best_epoch}) "
          f"to {paths.MODEL_FILE}")
    return saved_epoch


if __name__ == "__main__":
    run_stage(main, worker=TorchrunWorker())
