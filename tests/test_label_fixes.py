"""Label fixes as versioned data (issue 39, item 2): data/labels.csv, applied by the split stage, written
by tools.relabel; every bad file is one line naming the file and the line, with nothing written.
The real `dvc exp run` of a relabelled set: tests/test_pipeline.py."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from classifier.data.label_fixes import (LabelFix, apply_label_fixes, check_label_fixes, format_label_fixes,
                                         parse_label_fixes)
from classifier.runtime.errors import PipelineError
from tests.helpers import copy_project, make_image_folder, run_stage_in_process

PATH = Path("data/labels.csv")
FILES = pd.DataFrame({"path": ["data/raw/cat/a.png", "data/raw/cat/b.png", "data/raw/dog/c.png"],
                      "label": ["cat", "cat", "dog"]})


def refusal(text: bytes) -> str:
    with pytest.raises(PipelineError) as caught:
        parse_label_fixes(text, PATH)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(PATH)), message
    return message


def test_a_labels_file_reads_its_fixes_with_notes_quoted_commas_and_blank_lines() -> None:
    text = b'\xef\xbb\xbfkey,label,note\ndata/raw/cat/a.png,dog,"looks like a dog, ears"\n\n data/raw/cat/b.png ,drop\n'
    fixes = parse_label_fixes(text, PATH)
    assert fixes == {"data/raw/cat/a.png": LabelFix("data/raw/cat/a.png", "dog", "looks like a dog, ears", 2),
                     "data/raw/cat/b.png": LabelFix("data/raw/cat/b.png", "drop", "", 4)}
    # What tools.relabel writes reads back as the same fixes.
    again = parse_label_fixes(format_label_fixes(list(fixes.values())).encode(), PATH)
    assert [(f.key, f.label, f.note) for f in again.values()] == [(f.key, f.label, f.note) for f in fixes.values()]


@pytest.mark.parametrize("text, said", [
    (b"key,label,note\ndata/raw/cat/a.png,d\xf6g,\n", "not UTF-8 text (byte 0xf6 at offset 35): save it as UTF-8"),
    (b"path,label\n", "its first line must be the header key,label,note"),
    (b"", "its first line must be the header key,label,note"),
    (b"key,label,note\ndata/raw/cat/a.png,dog,a,b\n", "line 2: 4 fields, expected key,label,note"),
    (b"key,label,note\n,dog,\n", "line 2: the key is empty"),
    (b"key,label,note\ndata/raw/cat/a.png,,\n", "line 2: the label is empty"),
    (b"key,label,note\ndata/raw/cat/a.png,dog\ndata/raw/cat/b.png,dog\ndata/raw/cat/a.png,drop\n",
     "line 4: data/raw/cat/a.png is fixed twice (line 2 too)"),
])
def test_a_bad_labels_file_is_one_line_naming_the_line(text, said) -> None:
    assert said in refusal(text)


def test_fixes_relabel_and_drop_and_say_how_many() -> None:
    fixes = parse_label_fixes(b"key,label,note\ndata/raw/cat/a.png,dog\ndata/raw/dog/c.png,drop\n"
                              b"data/raw/cat/b.png,cat\ndata/raw/cat/z.png,cat\n", PATH)   # z: in another split
    fixed, relabelled, dropped = apply_label_fixes(FILES, fixes)
    assert fixed.to_dict("list") == {"path": ["data/raw/cat/a.png", "data/raw/cat/b.png"], "label": ["dog", "cat"]}
    assert (relabelled, dropped) == ({"data/raw/cat/a.png"}, {"data/raw/dog/c.png"})
    # A fix names the source's class; split.merge renames it, split.drop leaves it out, as it does any image.
    merged, relabelled, dropped = apply_label_fixes(FILES, fixes, lambda label: {"dog": "pet", "cat": None}[label])
    assert merged.to_dict("list") == {"path": ["data/raw/cat/a.png"], "label": ["pet"]}
    assert (len(relabelled), len(dropped)) == (1, 2)
    assert apply_label_fixes(FILES, {}) == (FILES, set(), set())


@pytest.mark.parametrize("line, said", [
    (b"data/raw/cat/z.png,dog", "line 2: data/raw/cat/z.png is not an image of data/raw"),
    (b"data/raw/cat/a.png,wolf", "line 2: class 'wolf' does not exist; classes: cat, dog (or drop)"),
])
def test_a_fix_of_an_unknown_image_or_class_is_refused(line, said) -> None:
    fixes = parse_label_fixes(b"key,label,note\n" + line + b"\n", PATH)
    with pytest.raises(PipelineError, match=re.escape(f"{PATH}, {said}")):
        check_label_fixes(fixes.values(), dict(zip(FILES["path"], FILES["label"])), str(PATH))


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_relabel_writes_the_fix_that_split_applies_and_a_bad_one_writes_nothing(tmp_path, monkeypatch, capsys) -> None:
    source = make_image_folder(tmp_path / "photos", {"cat": 10, "dog": 10}, size=(16, 16))
    project = copy_project(tmp_path / "project", {"data": {"source": str(source)}})
    for stage in ("ingest", "split"):
        run_stage_in_process(stage, project)
    monkeypatch.chdir(project)
    before = {path.name: path.read_bytes() for path in (project / "data/split").iterdir()}
    train = pd.read_csv("data/split/train.csv")
    cat, dog = (train[train["label"] == name]["path"].iloc[0] for name in ("cat", "dog"))
    from tools import relabel

    # A typo in a key or a class: refused before the file is written.
    for argv, said in (([cat + "x", "--to", "dog"], f"relabel: {cat}x is not an image of data/raw"),
                       ([cat, "--to", "dgo"], "relabel: class 'dgo' does not exist; classes: cat, dog (or drop)"),
                       ([cat, "--undo"], f"data/labels.csv has no line for {cat}: nothing to undo")):
        with pytest.raises(PipelineError, match=re.escape(said)):
            relabel.main(argv)
        assert (project / "data/labels.csv").read_text() == "key,label,note\n"

    relabel.main([cat, "--to", "cat", "--note", "first thought"])
    relabel.main([cat, "--to", "dog", "--note", "ears"])   # fixed again: its line replaced
    relabel.main([dog, "--to", "drop"])
    assert "relabel: 1 image(s) now drop in data/labels.csv (2 fix(es) in all)" in capsys.readouterr().out
    assert (project / "data/labels.csv").read_text() == f"key,label,note\n{cat},dog,ears\n{dog},drop,\n"
    run_stage_in_process("split", project)
    assert "split: label fixes in data/labels.csv: 1 relabelled, 1 dropped" in capsys.readouterr().out
    lists = pd.concat(pd.read_csv(f"data/split/{s}.csv") for s in ("train", "val", "test"))
    assert lists.set_index("path")["label"][cat] == "dog" and dog not in set(lists["path"]) and len(lists) == 19
    # Each image stays in the split it was drawn in: the others' lists are as before.
    assert pd.read_csv("data/split/train.csv").set_index("path")["label"][cat] == "dog"
    for split in ("val", "test"):
        assert (project / f"data/split/{split}.csv").read_bytes() == before[f"{split}.csv"]

    # A bad line stops split before it writes: the last split stays whole.
    fixed = {path.name: path.read_bytes() for path in (project / "data/split").iterdir()}
    assert fixed != before
    (project / "data/labels.csv").write_text(f"key,label,note\n{cat},dog\n{cat},cat\n")
    with pytest.raises(PipelineError, match=f"^data/labels.csv, line 3: {cat} is fixed twice"):
        run_stage_in_process("split", project)
    assert {path.name: path.read_bytes() for path in (project / "data/split").iterdir()} == fixed

    # Fixes that leave a split without a class (split.min_per_split): refused, naming it; the split stays.
    test_dogs = pd.read_csv("data/split/test.csv").query("label == 'dog'")["path"].tolist()
    (project / "data/labels.csv").write_text("key,label,note\n" + "".join(f"{k},cat,\n" for k in test_dogs))
    with pytest.raises(PipelineError, match=r"^data/labels.csv: with its fixes the test split has fewer than 1 "
                                            r"image\(s\) \(split.min_per_split\) of class\(es\) dog"):
        run_stage_in_process("split", project)
    assert {path.name: path.read_bytes() for path in (project / "data/split").iterdir()} == fixed
    (project / "data/labels.csv").write_text(f"key,label,note\n{cat},dog,ears\n{dog},drop,\n")
    relabel.main([cat, dog, "--undo"])
    run_stage_in_process("split", project)
    assert {path.name: path.read_bytes() for path in (project / "data/split").iterdir()} == before


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_class_split_merge_makes_is_written_as_one_it_merges(tmp_path, monkeypatch, capsys) -> None:
    """With split.merge {dog: canine, fox: canine}, the audit suggests `canine`, which is no class of
    data/raw: --from-audit (and --to) write `dog`, which split applies and then merges into canine."""
    source = make_image_folder(tmp_path / "photos", {"cat": 10, "dog": 10, "fox": 10}, size=(16, 16))
    project = copy_project(tmp_path / "project", {"data": {"source": str(source)},
                                                  "split": {"merge": {"fox": "canine", "dog": "canine"}}})
    for stage in ("ingest", "split"):
        run_stage_in_process(stage, project)
    monkeypatch.chdir(project)
    train = pd.read_csv("data/split/train.csv")
    first, second = train[train["label"] == "cat"]["path"].iloc[:2]
    (project / "plots/audit").mkdir(parents=True)
    (project / "plots/audit/issues.csv").write_text("key,given,suggested,label_quality,issues\n"
                                                    f"{first},cat,canine,0.01,label\n")
    from tools import relabel
    relabel.main(["--from-audit", "--below", "0.5"])
    relabel.main([second, "--to", "canine"])
    assert "now canine (written dog, which split.merge makes canine)" in capsys.readouterr().out
    lines = (project / "data/labels.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in lines[1:]] == [[first, "dog"], [second, "dog"]]
    run_stage_in_process("split", project)
    assert pd.read_csv("data/split/train.csv").set_index("path")["label"][[first, second]].tolist() == ["canine"] * 2
    with pytest.raises(PipelineError, match="class 'wolf' does not exist"):
        relabel.main([second, "--to", "wolf"])
