"""params.yaml is validated up front, with messages that name the key, the value and what is allowed."""
from __future__ import annotations

import dataclasses

import pytest

from classifier.runtime.errors import PipelineError
from classifier.params.checks import load_sections, parse_section
from classifier.params.data import DataParams
from classifier.params.train import TrainParams
from classifier.params.whole_file import SECTIONS, load_params, section_keys
from tests.helpers import ROOT, dump_params, read_params, write_params


def test_project_params_load() -> None:
    params = load_params(*SECTIONS, path=ROOT / "params.yaml")
    assert params.data.source == "data/digits" and (ROOT / params.data.source).is_dir()
    assert params.split.train + params.split.val + params.split.test == pytest.approx(1.0)
    assert all(k % 2 == 1 for k in params.augment.blur_kernels)
    assert dataclasses.is_dataclass(params.train) and params.train.lr > 0


def test_sections_are_frozen() -> None:
    params = load_params("train", path=ROOT / "params.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.train.lr = 1.0  # type: ignore[misc]


def test_a_section_a_stage_did_not_read_cannot_be_used() -> None:
    params = load_sections(TrainParams, path=ROOT / "params.yaml")
    with pytest.raises(AttributeError, match="params section 'augment' was not read by this stage"):
        _ = params.augment.blur_kernels


def test_a_stage_reads_its_own_sections_only(tmp_path) -> None:
    """A bad value elsewhere is the params stage's to refuse (it runs first): a stage's own check
    depends only on the modules of the sections it reads, so editing another section's rules reruns
    nothing else."""
    path = _with(tmp_path, "train", lr=0)
    assert load_sections(DataParams, path=path).data.source == "data/digits"
    with pytest.raises(PipelineError, match="'train.lr'"):
        load_sections(TrainParams, path=path)


def _with(tmp_path, section: str, **values):
    path = tmp_path / "params.yaml"
    write_params(path, {section: values})
    return path


def test_unknown_key_suggests_the_close_one(tmp_path) -> None:
    raw = read_params(ROOT / "params.yaml")
    raw["train"]["lerning_rate"] = 0.1
    with pytest.raises(PipelineError, match=r"unknown key 'train.lerning_rate' in params.yaml; did you mean "
                                            r"'train.lr'\? valid: optimizer, lr, momentum"):
        parse_section(TrainParams, raw["train"])


def test_unknown_section(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text() + "\ntrian:\n  lr: 0.1\n")
    with pytest.raises(PipelineError, match="unknown key 'trian' in params.yaml; did you mean 'train'"):
        load_params("train", path=path)


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("train", "lr", -0.1, "The 'train.lr' parameter must be a float > 0 and <= 100. Got -0.1 instead."),
    ("train", "lr", "fast", "The 'train.lr' parameter must be a float > 0 and <= 100. Got 'fast' instead."),
    ("train", "epochs", 0, "The 'train.epochs' parameter must be an integer >= 1 and <= 1000000. Got 0 instead."),
    ("train", "epochs", 2.5, "The 'train.epochs' parameter must be an integer >= 1 and <= 1000000. Got 2.5 instead."),
    ("train", "batch_size", True, "The 'train.batch_size' parameter must be an integer >= 1 and <= 65536. Got True instead."),
    ("train", "momentum", 1.0, "The 'train.momentum' parameter must be a float >= 0 and < 1. Got 1.0 instead."),
    ("train", "optimizer", "rmsprop", "The 'train.optimizer' parameter must be one of sgd, adam, adamw, sam. Got 'rmsprop'"),
    ("train", "scheduler", "cyclic", "The 'train.scheduler' parameter must be one of none, step, exponential, cosine, "
                                     "onecycle."),
    ("train", "grad_clip_norm", -1, "The 'train.grad_clip_norm' parameter must be a float >= 0 and <= 1000000000. Got -1 instead."),
    ("train", "label_smoothing", 1.0, "The 'train.label_smoothing' parameter must be a float >= 0 and < 1."),
    ("train", "class_weights", "inverse", "The 'train.class_weights' parameter must be none, balanced, or a list of "
                                          "per-class weights > 0. Got 'inverse' instead."),
    ("train", "class_weights", [1, 0], "The 'train.class_weights' parameter must be none, balanced, or a list"),
    ("train", "monitor", "loss", "The 'train.monitor' parameter must be one of val_loss, val_accuracy."),
    ("train", "patience", -2, "The 'train.patience' parameter must be an integer >= 0 and <= 1000000. Got -2 instead."),
    ("model", "activation", "gelu", "The 'model.activation' parameter must be one of relu, leaky_relu, tanh, sigmoid."),
    ("model", "freeze", "all", "The 'model.freeze' parameter must be one of none, features, head. Got 'all' instead."),
    ("model", "pretrained", None, "The 'model.pretrained' parameter must be '' (none), 'hub'"),
    ("model", "kernel_size", 0, "The 'model.kernel_size' parameter must be an integer >= 1 and <= 15."),
    ("model", "pool_after", [1, 1], "The 'model.pool_after' parameter must be a list of distinct integers from 1 to 1000, at most 64 of them."),
    ("model", "head", [0], "The 'model.head' parameter must be a list of integers from 1 to 65536, at most 64 of them. Got [0] instead."),
    ("train", "device", "tpu", "The 'train.device' parameter must be auto, cpu, cuda or cuda:K (K: a GPU index)."),
    ("augment", "blur_kernels", [3, 4], "The 'augment.blur_kernels' parameter must be a list of distinct odd "
                                        "integers from 3 to 4095, at most 64 of them. Got [3, 4] instead."),
    ("augment", "blur_kernels", [-3], "'augment.blur_kernels' parameter must be a list of distinct odd"),
    ("augment", "blur_kernels", [3, 3], "'augment.blur_kernels' parameter must be a list of distinct odd"),
    ("augment", "blur_kernels", 3, "'augment.blur_kernels' parameter must be a list"),
    ("augment", "hflip", "yes", "The 'augment.hflip' parameter must be true or false. Got 'yes' instead."),
    ("prepare", "image_size", 2, "The 'prepare.image_size' parameter must be an integer or [height, width] between 4 and 4096"),
    ("prepare", "image_size", [32, 32, 3], "The 'prepare.image_size' parameter must be an integer or [height, width]"),
    ("model", "dropout", 1.0, "The 'model.dropout' parameter must be a float >= 0 and < 1. Got 1.0 instead."),
    ("model", "hidden", [64, 0], "The 'model.hidden' parameter must be a list of integers from 1 to 65536, at most 64"),
    ("split", "seed", -1, "The 'split.seed' parameter must be an integer >= 0 and <= 4294967295. Got -1 instead."),
    ("data", "source", "", "The 'data.source' parameter must be 'data/digits' (scikit-learn's bundled digits), or the path of a folder of images or of a .tar"),
    ("data", "source", "digits", "The 'data.source' parameter must be 'data/digits' (scikit-learn's bundled digits)"),
    ("model", "pretrained", "/elsewhere/w.pth", "in models/pretrained/, the folder dvc.yaml declares as train's "
                                                "dependency, so that replacing the file reruns train: copy it there"),
    ("data", "source", "data/raw", "The 'data.source' parameter must be a folder the pipeline does not write "
                                   "(data/raw is made by ingest)"),
    ("data", "source", "./data/prepared/train", "(data/prepared is made by prepare)"),
    ("model", "pretrained", "efficientnet-lite0-57934424.pth", "The 'model.pretrained' parameter applies to published "
                                                              "architectures (efficientnet_lite0, torchvision's), not"),
    ("data", "skip_corrupt", 1, "The 'data.skip_corrupt' parameter must be true or false. Got 1 instead."),
    # Upper bounds that keep a run possible: these gave tracebacks or exhausted memory.
    ("train", "seed", 2**64, "The 'train.seed' parameter must be an integer >= 0 and <= 4294967295. Got 1844"),
    ("train", "batch_size", 2**63, "The 'train.batch_size' parameter must be an integer >= 1 and <= 65536."),
    ("model", "head", [10**6, 10**6], "The 'model.head' parameter must be a list of integers from 1 to 65536"),
    ("model", "head", [8] * 1000, "The 'model.head' parameter must be a list of integers from 1 to 65536, at most "
                                  "64 of them. Got [8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, "
                                  "8, 8, 8... (1000 entries) instead."),
    ("augment", "blur_kernels", [99999], "The 'augment.blur_kernels' parameter must be a list of distinct odd "
                                         "integers from 3 to 4095, at most 64 of them. Got [99999] instead."),
    ("augment", "seed", 10**400, "The 'augment.seed' parameter must be an integer >= 0 and <= 4294967295."),
    ("data", "duplicates", "remove", "The 'data.duplicates' parameter must be one of drop, keep."),
    ("split", "merge", ["cat"], "The 'split.merge' parameter must be a mapping of class name -> new class name."),
    ("split", "drop", "cat", "The 'split.drop' parameter must be a list of class names, at most 100,000 of them. Got 'cat' instead."),
    ("split", "drop", ["cat", "cat"], "The 'split.drop' parameter must be a list of distinct class names."),
    ("split", "max_per_class", -5, "The 'split.max_per_class' parameter must be an integer >= 0 and <= 1000000000. Got -5 instead."),
    ("split", "min_per_split", 0, "The 'split.min_per_split' parameter must be an integer >= 1 and <= 1000000. Got 0 instead."),
    ("prepare", "resize", "letterbox", "The 'prepare.resize' parameter must be one of stretch, crop, pad."),
    ("prepare", "pad_value", 256, "The 'prepare.pad_value' parameter must be an integer >= 0 and <= 255."),
    ("prepare", "interpolation", "lanczos", "The 'prepare.interpolation' parameter must be one of auto, nearest"),
    ("prepare", "normalize", "zscore", "The 'prepare.normalize' parameter must be one of standard, minmax, imagenet, auto."),
    ("augment", "rotation", -5, "The 'augment.rotation' parameter must be a float >= 0 and <= 180."),
    ("augment", "noise_std", float("nan"), "The 'augment.noise_std' parameter must be a float >= 0 and <= 255."),
    ("augment", "clones", 0, "The 'augment.clones' parameter must be an integer >= 1 and <= 1000."),
    ("augment", "classes", [[1]], "The 'augment.classes' parameter must be a list of class names,"),
])
def test_bad_values_name_key_value_and_rule(tmp_path, section, key, value, message) -> None:
    with pytest.raises(PipelineError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_params(section, path=_with(tmp_path, section, **{key: value}))


def test_split_fractions_must_sum_to_one(tmp_path) -> None:
    path = _with(tmp_path, "split", train=0.7, val=0.2, test=0.2)
    with pytest.raises(PipelineError, match=r"'split.train', 'split.val' and 'split.test' parameters must sum "
                                            r"to 1. Got 0.7 \+ 0.2 \+ 0.2 = 1.1 instead"):
        load_params("split", path=path)


@pytest.mark.parametrize(("values", "message"), [
    ({"device": "gpu"}, r"'train.device' parameter must be auto, cpu, cuda or cuda:K \(K: a GPU index\)\. Got 'gpu'"),
    ({"device": "cuda:x"}, r"'train.device' parameter must be auto, cpu, cuda or cuda:K"),
    ({"processes": 0}, r"'train.processes' parameter must be an integer >= 1"),
    ({"rendezvous": "10.0.0.1"}, r"'train.rendezvous' parameter must be host:port \(e.g. 10.0.0.1:29400\)"),
    ({"rendezvous": "host:70000"}, r"'train.rendezvous' parameter must be host:port"),
    ({"nodes": 2, "rendezvous": ""}, r"'train.rendezvous' parameter must be this machine's host:port when "
                                     r"train.nodes is 2"),
    ({"processes": 2, "device": "cuda:1"}, r"'train.device' parameter pins one GPU \(cuda:1\), but train.processes "
                                           r"is 2"),
    ({"processes": 4, "nodes": 2, "rendezvous": "h:1", "batch_size": 6},
     r"'train.batch_size' parameter must be at least train.processes × train.nodes \(8\)"),
])
def test_scale_out_params_that_cannot_work_are_refused(tmp_path, values, message) -> None:
    with pytest.raises(PipelineError, match=message):
        load_params("train", path=_with(tmp_path, "train", **values))


def test_scale_out_params_that_work(tmp_path) -> None:
    path = _with(tmp_path, "train", device="cuda:3", nodes=2, rendezvous="node0.example:29400", batch_size=2)
    train = load_params("train", path=path).train
    assert (train.device, train.nodes, train.rendezvous) == ("cuda:3", 2, "node0.example:29400")


def test_image_size_accepts_square_and_rectangle(tmp_path) -> None:
    assert load_params("prepare", path=_with(tmp_path, "prepare", image_size=24)).prepare.image_size == (24, 24)
    assert load_params("prepare", path=_with(tmp_path, "prepare", image_size=[20, 40])).prepare.image_size == (20, 40)


def test_pretrained_names_a_file_in_the_declared_folder(tmp_path) -> None:
    for value, expected in [("", ""), ("hub", "hub"), ("w.pth", "w.pth"), ("models/pretrained/w.pth", "w.pth")]:
        path = _with(tmp_path, "model", pretrained=value, name="resnet18")
        assert load_params("model", path=path).model.pretrained == expected


@pytest.mark.parametrize("section,tree,name", [
    ("prepare", {"size": 32}, "prepare.size"),  # the first wave's name for prepare.image_size
    ("split", {"merge": {"nfiles": "other"}}, "split.merge.nfiles"),  # a class so named, at any depth
])
def test_keys_the_run_cache_ignores_are_refused(tmp_path, section, tree, name) -> None:
    raw = read_params(ROOT / "params.yaml")
    raw[section].update(tree)
    path = tmp_path / "params.yaml"
    dump_params(path, raw)
    with pytest.raises(PipelineError, match=rf"^key '{name}' in params.yaml cannot be used: DVC's run cache ignores "
                                            r"keys named size or nfiles \(DVC bug 10296\)"):
        load_params(section, path=path)


def test_the_project_names_no_param_size_or_nfiles() -> None:
    def keys(tree):
        return [k for key, value in tree.items() for k in [key, *(keys(value) if isinstance(value, dict) else [])]]
    assert not {"size", "nfiles"} & set(keys(read_params(ROOT / "params.yaml")))


def test_missing_key_is_named(tmp_path) -> None:
    raw = read_params(ROOT / "params.yaml")
    del raw["train"]["gamma"]
    with pytest.raises(PipelineError, match=r"missing key 'train.gamma' in params.yaml"):
        parse_section(TrainParams, raw["train"])


def test_a_validation_error_in_another_section_is_still_reported(tmp_path) -> None:
    # The params stage validates the whole file: a typo anywhere stops the pipeline before any stage.
    with pytest.raises(PipelineError, match="'train.lr'"):
        load_params("data", path=_with(tmp_path, "train", lr=0))


def test_not_yaml_and_missing_file(tmp_path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(PipelineError, match="params.yaml is not valid YAML"):
        load_params("train", path=bad)
    with pytest.raises(PipelineError, match="nope.yaml not found"):
        load_params("train", path=tmp_path / "nope.yaml")


def test_every_key_has_a_meaning() -> None:
    for section in SECTIONS:
        assert all(doc.strip() for doc in section_keys(section).values()), section


def test_class_mapping_and_lists_are_normalised(tmp_path) -> None:
    path = _with(tmp_path, "split", merge={"dog": "pet", 3: "odd"}, drop=["owl", 7])
    split = load_params("split", path=path).split
    assert dict(split.merge) == {"dog": "pet", "3": "odd"} and split.drop == ("owl", "7")


def test_fine_tuning_needs_frozen_features(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    write_params(path, {"train": {"finetune_epochs": 3}})
    with pytest.raises(PipelineError, match=r"^The 'train.finetune_epochs' parameter needs model.freeze: features .*"
                                            r"Got 3 with model.freeze: none$"):
        load_params("evaluate", path=path)  # whichever stage reads the file
    write_params(path, {"train": {"finetune_epochs": 3}, "model": {"freeze": "features"}})
    assert load_params("model", "train", path=path).train.finetune_epochs == 3


LAUGHS = "".join(f"{a}: &{a} [{', '.join([f'*{b}'] * 9)}]\n" for b, a in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("extra, message", [
    ('a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n' + LAUGHS, r"expands to over 100,000 values \(YAML aliases"),
    ("a: &a [1, *a]\n", r"a YAML alias \(\*name\) refers to a value that holds it"),
    ("a: [" + ",".join(["1"] * 140_000) + "]\n", r"is 2\d\d,\d\d\d bytes, over the 256 KB a params file may be"),
], ids=["billion laughs", "refers to itself", "a 140,000-item list"])
def test_a_params_file_too_big_to_walk_is_refused_at_once(tmp_path, extra, message) -> None:
    """A 'billion laughs' file parsed in 0.06 s and then hung the check (9^9 values once expanded);
    a 1,000,000-item list took 39 s to parse. Each is one line, in well under a second."""
    import time

    from classifier.params.checks import read_yaml
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text() + extra)
    start = time.perf_counter()
    with pytest.raises(PipelineError, match=message):
        read_yaml(path)
    assert time.perf_counter() - start < 10  # not a speed measure: unbounded, these hang for minutes
