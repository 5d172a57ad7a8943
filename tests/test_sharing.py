"""The pipeline's results leaving the workspace, through the real dvc on a temporary git repo holding
a copy of the project with tiny params: the model registry (checkpoint and ONNX), shared
experiments through git and DVC remotes, data-parallel training on one machine and on two, and the
recovery command after a failed experiment. (tests/test_pipeline.py: what runs, reruns, shows and
diffs; a file of its own, so that the two run side by side under pytest-xdist.)"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import (ROOT, changed_stages, copy_of, dvc, git, raw_image_files,
                           restore_baseline, run, set_params, stages_run)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory, trained_template) -> Path:
    """A committed project after a first `dvc repro` (test_pipeline.py's, made again for this file)."""
    return copy_of(trained_template, tmp_path_factory.mktemp("project"))


def test_the_model_is_a_registered_artifact_fetched_by_stage(project, tmp_path) -> None:
    """docs/experiments.md "The model registry": register a version, assign it a stage, push the tags
    and the file, and get it by that stage from the git remote, as any clone would: the DVC remote,
    committed in .dvc/config, is what the file comes from."""
    gto = Path(sys.executable).parent / "gto"
    remote, store = tmp_path / "registry.git", tmp_path / "store"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    try:
        dvc("remote", "add", "-d", "registry", str(store), cwd=project)
        git("commit", "-qm", "DVC remote", ".dvc/config", cwd=project)
        git("remote", "add", "registry", str(remote), cwd=project)
        run([str(gto), "register", "classifier", "--version", "v1.0.0"], project)
        run([str(gto), "assign", "classifier", "--version", "v1.0.0", "--stage", "prod"], project)
        show = run([str(gto), "show", "classifier", "--json"], project).stdout
        assert "v1.0.0" in show and "prod" in show
        page = (ROOT / "docs/experiments.md").read_text()
        # The ONNX file as a second artifact, as the docs say: exported, added to DVC, committed, registered.
        onnx_recipe = page.split("# the ONNX file, versioned as its own artifact", 1)[1].splitlines()[1:4]
        assert "gto register classifier-onnx" in onnx_recipe[-1]
        run(["bash", "-ec", "\n".join(line.split("  #")[0].strip() for line in onnx_recipe)], project)
        assert "git push origin main classifier@v1.0.0 'classifier#prod#1' && dvc push" in page
        run(["bash", "-ec", "git push -q registry main classifier@v1.0.0 'classifier#prod#1' classifier-onnx@v1.0.0 "
                            "&& dvc push -q"], project)
    finally:
        git("remote", "remove", "registry", cwd=project)
        git("reset", "-q", "--hard", "HEAD~2", cwd=project)  # this test's two commits: the remote, the ONNX file
        (project / "models/model.onnx").unlink(missing_ok=True)
    dvc("artifacts", "get", str(remote), "classifier", "--stage", "prod", "-o", str(tmp_path / "prod.pt"), cwd=tmp_path)
    assert (tmp_path / "prod.pt").read_bytes() == (project / "models/model.pt").read_bytes()
    threes = raw_image_files(project, "data/raw/3/", 5, tmp_path / "threes")
    result = run([sys.executable, "-m", "tools.predict", "--json", "--model", str(tmp_path / "prod.pt"), *threes],
                 project)
    top = [image["predictions"][0]["class"] for image in json.loads(result.stdout)]
    assert top.count("3") >= 4, top  # the fetched model classifies
    # Exported for serving, the fetched model classifies those images alike (docs/experiments.md "The model registry").
    from tools import export
    export.main(["--model", str(tmp_path / "prod.pt"), "--output", str(tmp_path / "prod.pt2")])
    program, classes, _ = export.load_exported(tmp_path / "prod.pt2")
    from classifier.data.image_files import read_image
    from classifier.data.image_format import format_image
    from classifier.models.checkpoint import Checkpoint
    image_params = Checkpoint.load(tmp_path / "prod.pt").preprocessing.image
    batch = torch.from_numpy(np.stack([format_image(read_image(Path(t)), image_params) for t in threes])).permute(0, 3, 1, 2)
    with torch.no_grad():
        assert [classes[i] for i in program(batch.contiguous()).argmax(1).tolist()] == top
    # The ONNX artifact, fetched by version, classifies them alike in onnxruntime.
    dvc("artifacts", "get", str(remote), "classifier-onnx", "--rev", "v1.0.0",
        "-o", str(tmp_path / "served.onnx"), cwd=tmp_path)
    session, onnx_classes, _ = export.load_onnx(tmp_path / "served.onnx")
    logits = session.run(None, {"images": batch.contiguous().numpy()})[0]
    assert onnx_classes == classes and [classes[i] for i in logits.argmax(1)] == top


def test_a_failed_experiment_after_another_leaves_a_workspace_one_command_restores(project) -> None:
    """An experiment that succeeded leaves its params, dvc.lock and outputs in the workspace; one that
    fails after it deletes the failing stage's outputs. The documented command brings back the last
    commit's params, lock and outputs, with `dvc status` clean."""
    committed = {path: (project / path).read_bytes() for path in
                 ("metrics/train.json", "metrics/time.json", "plots/train/history.csv", "models/model.pt",
                  "dvc.lock", "params.yaml", "metrics/summary.json")}
    try:
        dvc("exp", "run", "-S", "train.epochs=2", cwd=project)
        assert (project / "models/model.pt").read_bytes() != committed["models/model.pt"]
        # Its params set back by hand, its outputs left: the report's workspace row says they do not match.
        run(["bash", "-c", "git show HEAD:params.yaml > params.yaml"], project)
        shown = run([sys.executable, "-m", "tools.report"], project).stdout
        assert any(line.startswith("| workspace | stale |") for line in shown.splitlines()), shown
        (line,) = [line for line in shown.splitlines() if line.startswith("workspace: ")]
        assert line.startswith("workspace: its scores are not those of its params (") and "train" in line, shown
        assert line.endswith("`dvc repro` makes them, `make restore` goes back to the last commit's"), shown
        failed = dvc("exp", "run", "-S", "train.lr=-0.1", cwd=project, check=False)
        assert failed.returncode != 0 and "error: The 'train.lr' parameter must be a float > 0" in failed.stderr
        run(["bash", "-c", RESTORE_COMMAND], project)
        assert {path: (project / path).read_bytes() for path in committed} == committed
        assert "changed" not in dvc("status", cwd=project).stdout
        # Every tracked file hashed afresh (git's index can call a file DVC rewrote unchanged).
        tree = dict(line.split("\t")[::-1] for line in run(["git", "ls-tree", "-r", "HEAD"], project).stdout.splitlines())
        paths = sorted(tree)
        hashed = subprocess.run(["git", "hash-object", "--stdin-paths"], cwd=project, input="\n".join(paths),
                                capture_output=True, text=True, check=True).stdout.split()
        assert [p for p, h in zip(paths, hashed) if not tree[p].endswith(h)] == []
        # The committed model not in DVC's cache (a commit from another machine): said before it is made
        # again, with no ERROR line for what is expected; on the CPU, the same bytes.
        md5 = hashlib.md5(committed["models/model.pt"]).hexdigest()
        (project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).unlink()
        (project / "models/model.pt").unlink()
        again = run(["bash", "-c", RESTORE_COMMAND], project)
        assert "restore: outputs of the last commit are not in DVC's cache: dvc repro makes them" in again.stdout
        assert "ERROR" not in again.stdout + again.stderr, again.stderr
        assert (project / "models/model.pt").read_bytes() == committed["models/model.pt"]
    finally:
        restore_baseline(project)


# docs/interrupted-runs.md and docs/bad-input.md
RESTORE_COMMAND = ("git rm -rq --cached --ignore-unmatch params.yaml dvc.lock metrics plots && git checkout HEAD -- "
                   "params.yaml dvc.lock metrics plots && (dvc checkout --force 2>/dev/null || (echo \"restore: outputs "
                   "of the last commit are not in DVC's cache: dvc repro makes them\" && dvc repro))")


def test_the_docs_give_the_restore_command() -> None:
    for page in ("docs/interrupted-runs.md", "docs/bad-input.md", "Makefile"):  # make restore
        assert RESTORE_COMMAND in (ROOT / page).read_text(), page


@pytest.fixture(scope="module")
def ddp_experiment(project) -> dict:
    """`dvc exp run` of the committed params as two data-parallel processes, before the workspace is restored:
    its test accuracy, its model's bytes, and what `dvc status` says right after it."""
    try:
        result = dvc("exp", "run", "-n", "ddp", "-S", "train.processes=2", "-S", "train.device=cpu", cwd=project)
        return {"result": result, "model": (project / "models/model.pt").read_bytes(),
                "accuracy": json.loads((project / "metrics/summary.json").read_text())["test_acc"],
                "history": pd.read_csv(project / "plots/train/history.csv"),
                "train_metrics": json.loads((project / "metrics/train.json").read_text()),
                "changed_after": changed_stages(project)}
    finally:
        restore_baseline(project)


def test_two_data_parallel_processes_match_one(project, ddp_experiment) -> None:
    assert stages_run(ddp_experiment["result"]) == ["params", "train", "audit", "evaluate"]
    assert "train: starting 2 processes with torchrun" in ddp_experiment["result"].stdout
    assert ddp_experiment["result"].stdout.count("epoch  10/10") == 1  # rank 0 alone reports
    single = json.loads((project / "metrics/summary.json").read_text())["test_acc"]
    assert abs(ddp_experiment["accuracy"] - single) <= 0.01, (ddp_experiment["accuracy"], single)
    # The outputs look as one process's: the same history columns and rows, the same metrics keys.
    single_history = pd.read_csv(project / "plots/train/history.csv")
    assert list(ddp_experiment["history"].columns) == list(single_history.columns)
    assert len(ddp_experiment["history"]) == len(single_history) == 10
    assert set(ddp_experiment["train_metrics"]) == set(json.loads((project / "metrics/train.json").read_text()))
    # Nothing the workers leave behind makes a stage look changed.
    assert ddp_experiment["changed_after"] == set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost_train_one_model(project, ddp_experiment, tmp_path) -> None:
    """Node 0 is the DVC workspace (`python -m stages.train`, as `dvc repro` runs it); node 1 is another
    checkout with the same data, started with the torchrun command docs/scaling-out.md shows."""
    import shutil
    from classifier.models.checkpoint import Checkpoint
    node1 = tmp_path / "node1"
    shutil.copytree(project, node1, ignore=shutil.ignore_patterns(".git", "cache"))
    before = (node1 / "models/model.pt").read_bytes()

    def start_nodes(port: int) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
        from tests.helpers import env
        # train.cpu_threads shared by the 2 processes (at least 1 each), as on one machine: the same arithmetic.
        one_thread = env()
        node0 = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=project, env=one_thread, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        other = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", "1",
                                  "--nproc-per-node", "1", "--rdzv-backend", "static", "--rdzv-endpoint",
                                  f"127.0.0.1:{port}", "-m", "stages.train"], cwd=node1, env=one_thread, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        outputs = [p.communicate(timeout=300) for p in (node0, other)]
        return tuple(subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip((node0, other), outputs))

    two_nodes = {"nodes": 2, "processes": 1, "device": "cpu"}
    try:
        # A node with other params is refused before any step, naming it.
        port = free_port()
        set_params(project, train={**two_nodes, "rendezvous": f"127.0.0.1:{port}"})
        set_params(node1, train={"lr": 0.2, "device": "cpu"})
        refused, _ = start_nodes(port)
        assert refused.returncode == 1
        assert re.fullmatch(r"error: rank 1 \([^)]+\) has other params \(model, train\) or data than rank 0 .*"
                            r"run `dvc pull` or `dvc repro augment` on every node", refused.stderr.strip().splitlines()[-1])
        assert not refused.stderr.count("Traceback")

        port = free_port()
        set_params(project, train={**two_nodes, "rendezvous": f"127.0.0.1:{port}"})
        set_params(node1, train={"lr": 0.1})
        node0, other = start_nodes(port)
        assert node0.returncode == 0 and other.returncode == 0, node0.stderr + other.stderr
        assert "as node 0 of 2 at 127.0.0.1" in node0.stdout and "epoch  10/10" in node0.stdout
        assert (node1 / "models/model.pt").read_bytes() == before  # only rank 0 writes
        two = Checkpoint.load(project / "models/model.pt")
        reference = tmp_path / "ddp.pt"
        reference.write_bytes(ddp_experiment["model"])
        ddp = Checkpoint.load(reference)
        # The same checkpoint format and the same training as one machine with two processes: the same
        # shards, batch order and arithmetic, so the same weights.
        assert two.state_dict.keys() == ddp.state_dict.keys() and two.epoch == ddp.epoch == 10
        for key, tensor in two.state_dict.items():
            assert torch.equal(tensor, ddp.state_dict[key]), key
    finally:
        restore_baseline(project)


def recipe_part(recipe: str, part: str) -> str:
    """The shell lines under `# <part>` in docs/scaling-out.md's recipe, up to the next `# ` line or
    the end of the code block."""
    lines = recipe.split(f"# {part}", 1)[1].splitlines()[1:]
    return "\n".join(line.strip() for line in itertools.takewhile(
        lambda line: line.startswith("    ") and not line.strip().startswith("# "), lines))


def test_experiments_shared_through_git_and_dvc_remotes_as_the_docs_say(project, tmp_path) -> None:
    """docs/scaling-out.md's recipe, run as written but for the two remotes' addresses: machine A
    pushes an experiment, the DVC remote then holds its files, and machine B, a fresh clone, pulls
    it and sees, compares and restores it."""
    remote, store = tmp_path / "project.git", tmp_path / "dvc-store"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    page = (ROOT / "docs/scaling-out.md").read_text()
    recipe = page.split("**Experiments shared between machines.**", 1)[1]
    recipe = recipe.replace("ssh://host/srv/project.git", str(remote)).replace("/mnt/shared/dvc-store", str(store))
    try:
        run(["bash", "-ec", recipe_part(recipe, "once")], project)
        run(["bash", "-ec", recipe_part(recipe, "machine A")], project)
        model = (project / "models/model.pt").read_bytes()
        accuracy = json.loads((project / "metrics/summary.json").read_text())["test_acc"]
    finally:
        restore_baseline(project)
    stored = {p.name for p in store.rglob("*") if p.is_file()}
    assert hashlib.md5(model).hexdigest()[2:] in stored, "the experiment's model is not on the DVC remote"

    machine_b = tmp_path / "b"
    machine_b.mkdir()
    shown = run(["bash", "-ec", recipe_part(recipe, "machine B")], machine_b).stdout
    assert (machine_b / "project/models/model.pt").read_bytes() == model
    assert any(line.startswith("| lr-001 |") for line in shown.splitlines()), shown  # tools.report's row
    rows = json.loads(dvc("exp", "show", "--json", cwd=machine_b / "project").stdout)
    pulled = [r for row in rows for e in row.get("experiments") or [] for r in e["revs"] if r.get("name") == "lr-001"]
    assert pulled and pulled[0]["data"]["metrics"]["metrics/summary.json"]["data"]["test_acc"] == accuracy
