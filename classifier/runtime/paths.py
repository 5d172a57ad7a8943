"""Every artifact path of the pipeline, named once. `tests/test_dvc_yaml.py` checks that
`dvc.yaml` declares exactly these as each stage's deps and outs. Paths are relative to the
project root, where DVC runs every stage."""
from pathlib import Path

PARAMS_OK = Path("data/params.ok")          # the params stage: params.yaml passed every check (constant bytes)
DIGITS_SOURCE = Path("data/digits")         # data.source of the embedded default: a tracked folder (a DVC dep)
PRETRAINED_DIR = Path("models/pretrained")  # weights files model.pretrained names: a DVC dep of train
RAW_DIR = Path("data/raw")                  # shard-NNNN.bin, index.csv, ingest.json (classifier/data/shards.py)
LABEL_FIXES = Path("data/labels.csv")      # committed label fixes (key,label,note) split applies: a DVC dep
SPLIT_DIR = Path("data/split")              # {train,val,test}.csv (path,label) + classes.json
PREPARED_DIR = Path("data/prepared")        # {train,val,test}/ arrays + stats.json
AUGMENTED_DIR = Path("data/augmented")      # train/ arrays: prepared train + augmented copies
MODEL_FILE = Path("models/model.pt")        # checkpoint: weights, classes, input shape, normalisation
EXPORTED_MODEL = Path("models/model.pt2")   # python -m tools.export: a torch.export program (no DVC stage)
SUMMARY_METRICS = Path("metrics/summary.json")  # the handful dvc exp show compares runs by (declared metrics)
TIME_METRICS = Path("metrics/time.json")    # training wall time (declared metrics)
TRAIN_METRICS = Path("metrics/train.json")  # the detail: `dvc metrics show metrics/<file>` reads each
EVAL_METRICS = Path("metrics/eval.json")     # per split: accuracy, loss, macro precision/recall/F1
PER_CLASS_METRICS = Path("metrics/per_class.json")  # per split and class: precision, recall, F1, support
CALIBRATION_FILE = Path("models/calibration.json")  # evaluate.calibrate's temperature, with the model's SHA-256
DATA_METRICS = Path("metrics/data.json")     # images per split, before and after augmentation
DATA_PLOTS = Path("plots/data")             # class_counts.{csv,png}, augment_preview.png
TRAIN_PLOTS = Path("plots/train")           # history.csv: per-epoch loss, accuracy, learning rate
LR_FIND_PLOTS = Path("plots/lr_find")      # python -m tools.lr_find: lr_find.{csv,png} (no DVC stage)
EVAL_PLOTS = Path("plots/eval")             # {val,test}_predictions.csv, per_class_{val,test}.csv, PNGs
AUDIT_METRICS = Path("metrics/audit.json")   # the label audit's counts (declared metrics; {} when audit.folds is 0)
AUDIT_PLOTS = Path("plots/audit")           # issues.csv (suspects, worst first), out_of_fold.csv (every image's probabilities)

INGEST_REPORT = RAW_DIR / "ingest.json"     # layout (splits of a pre-split source), skipped files
CLASSES_FILE = SPLIT_DIR / "classes.json"
STATS_FILE = PREPARED_DIR / "stats.json"
HISTORY_FILE = TRAIN_PLOTS / "history.csv"
SPLITS = ("train", "val", "test")

# Which stage makes each input of another: a missing one is `dvc repro <stage>` away.
MADE_BY = {RAW_DIR: "ingest", SPLIT_DIR: "split", PREPARED_DIR: "prepare", AUGMENTED_DIR: "augment",
           MODEL_FILE: "train", AUDIT_PLOTS: "audit"}
