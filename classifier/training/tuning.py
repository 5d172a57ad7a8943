"""A tools.tune study as train sees it: where its journal lives, its pruner, and the trial a run
reports to (train depends on this file; the controller, tools/tune.py, imports it too).

The study is Optuna's, kept in one append-only journal file (no database) that every process of the
project shares: the controller asks trials and reads results from it; each trial's train, in a
queued experiment's temporary copy, reports its monitored val score after every epoch, asks the
pruner whether to go on, and tells its end (complete, pruned or failed). The journal lives in the
project's .dvc/tmp/tune/<study>.journal ($TUNE_DIR overrides the folder): git-ignored, since it
changes while trials run and a queued experiment runs in a copy of its baseline commit, which a
tracked journal would fork. Optuna keeps no pruner in a study, so its settings are the study's user
attributes, written once when it is created.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from classifier.runtime.errors import PipelineError
from classifier.params.tune import TuneParams
from classifier.training.resume import project_root

FOLDER_VARIABLE = "TUNE_DIR"
OBJECTIVES = {"val_loss": "minimize", "val_accuracy": "maximize"}
PRUNERS = ("median", "halving", "none")


@dataclass(frozen=True)
class StudySettings:
    """What a study is, written into it when it is created and read back by every trial."""
    objective: str = "val_loss"      # an EpochRecord field measured on val: OBJECTIVES
    pruner: str = "median"           # PRUNERS
    prune_after_trials: int = 4      # median: complete trials before any trial is pruned
    prune_after_epochs: int = 2      # epochs every trial runs before it may be pruned
    sampler: str = "tpe"             # tpe or random
    seed: int = 0

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> StudySettings:
        known = {k: attrs[k] for k in cls.__dataclass_fields__ if k in attrs}
        return cls(**known)


def journal_folder(cwd: Path | None = None) -> Path:
    """$TUNE_DIR, else the project's .dvc/tmp/tune (found from a queued experiment's copy too)."""
    configured = os.environ.get(FOLDER_VARIABLE)
    return Path(configured) if configured else project_root(cwd) / ".dvc" / "tmp" / "tune"


def journal_path(study: str, cwd: Path | None = None) -> Path:
    return journal_folder(cwd) / f"{study}.journal"


def open_storage(path: Path):
    """The study journal at `path` as Optuna storage (several processes append to it under a file lock)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_pruner(settings: StudySettings):
    import optuna
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.prune_after_trials,
                                           n_warmup_steps=settings.prune_after_epochs)
    if settings.pruner == "halving":  # successive halving: rungs at prune_after_epochs × 3^k
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, settings.prune_after_epochs),
                                                      reduction_factor=3)
    return optuna.pruners.NopPruner()


TRAIN_NAMES = ("tune.study '{study}'", "tools.tune makes it; set tune.study to \"\" for a run outside a study")


def load_study(study: str, cwd: Path | None = None, names: tuple[str, str] = TRAIN_NAMES):
    """(the named study from its journal, with its pruner; its settings; its storage); a one-line error
    when there is none, naming it as `names` say (what set it, and what makes a journal)."""
    import optuna
    path = journal_path(study, cwd)
    given, maker = names[0].format(study=study), names[1].format(study=study)
    if not path.is_file():
        raise PipelineError(f"{given}: no study journal at {path} ({maker})")
    try:
        storage = open_storage(path)
        names = optuna.get_all_study_names(storage)  # replays the whole journal: damage shows here
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:  # JSON, UTF-8, a log's fields
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:100]
        raise PipelineError(f"{given}: {path} is not an Optuna study journal ({reason}): damaged, or another file; "
                            f"move it away and run the search again") from None
    if study not in names:
        raise PipelineError(f"{given}: {path} holds no study of that name")
    study_id = storage.get_study_id_from_name(study)
    attrs = storage.get_study_user_attrs(study_id)
    settings = StudySettings.from_attrs(attrs)
    return optuna.load_study(study_name=study, storage=storage, pruner=make_pruner(settings)), settings, storage


CHANCE_ACCURACY = 2.0   # a val accuracy under this many times 1/classes, with the loss of a uniform guess: no learning


def at_chance_level(record, classes: int) -> bool:
    """An epoch that learnt nothing: a val loss no better than guessing every class alike (ln classes,
    less 1%) and a val accuracy under CHANCE_ACCURACY / classes (a model that knows its classes but is
    overconfident can have the loss; not also that accuracy)."""
    return (classes > 1 and record.val_loss >= 0.99 * math.log(classes)
            and record.val_accuracy < CHANCE_ACCURACY / classes)


class TrialReport:
    """Train's side of a trial: after each epoch, report the objective and ask the pruner; at the end,
    tell the study how the trial ended. Inactive (never prunes) for a run outside a study. With a
    pruner, a trial at chance level after the epochs every trial runs (prune_after_epochs) is pruned
    whatever the other trials, before the pruner has any to compare with (`classes`: 0 never judges)."""

    def __init__(self, tune: TuneParams, log: Callable[[str], None], classes: int = 0) -> None:
        self.trial, self.log, self.classes = None, log, classes
        if not tune.study:
            return
        import optuna
        study, self.settings, storage = load_study(tune.study)
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(tune.study), tune.trial)
        except KeyError:
            raise PipelineError(f"tune.trial {tune.trial}: study '{tune.study}' has no such trial") from None
        frozen = storage.get_trial(trial_id)
        if frozen.state.is_finished():
            log(f"train: trial {tune.trial} of study '{tune.study}' already ended ({frozen.state.name.lower()}): "
                f"this run reports nothing to it and is never pruned")
            return
        self.study, self.number, self.reported = study, tune.trial, set(frozen.intermediate_values)
        self.trial = optuna.trial.Trial(study, trial_id)
        log(f"train: trial {tune.trial} of study '{tune.study}' (objective: {self.settings.objective}, "
            f"pruner: {self.settings.pruner})")

    @property
    def active(self) -> bool:
        return self.trial is not None

    def after_epoch(self, record) -> bool:
        """Report this epoch's objective; True when the pruner ends the trial here, or it learnt nothing."""
        if self.trial is None:
            return False
        self._report(record)
        settings = self.settings
        if (settings.pruner != "none" and record.epoch >= max(1, settings.prune_after_epochs)
                and at_chance_level(record, self.classes)):
            self.log(f"train: val loss {record.val_loss:.4g} (a uniform guess: {math.log(self.classes):.4g}) and val "
                     f"accuracy {record.val_accuracy:.1%} after epoch {record.epoch}: at chance level, nothing "
                     f"learnt; pruned whatever the other trials")
            return True
        return self.trial.should_prune()

    def _report(self, record) -> None:
        value = float(getattr(record, self.settings.objective))
        if record.epoch not in self.reported and math.isfinite(value):  # a resumed run reported its first epochs
            self.trial.report(value, record.epoch)
            self.reported.add(record.epoch)

    def resumed(self, history: list) -> None:
        """A run resumed from a kept state (this trial's, or another's with the same params): the epochs
        it did not run itself are reported too, so that the pruner compares whole curves."""
        if self.trial is not None:
            for record in history:
                self._report(record)

    def ended(self, pruned: bool, saved) -> None:
        """Tell the study: pruned, or complete with the objective of the saved epoch (its EpochRecord)."""
        if self.trial is None:
            return
        import optuna
        if pruned:
            self.study.tell(self.number, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(self.number, float(getattr(saved, self.settings.objective)))

    def failed(self) -> None:
        """The run failed (a NaN loss, a bad input): the trial is recorded failed, and the search goes on."""
        if self.trial is not None:
            import optuna
            self.study.tell(self.number, state=optuna.trial.TrialState.FAIL)
