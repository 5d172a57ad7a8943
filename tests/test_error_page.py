"""Looking at the errors (issue 39, item 4): evaluate's offline page plots/eval/errors.html, opened in a real
headless browser (Debian's chromium through playwright; skipped, saying so, where none is installed),
and `tools.report --errors A B`."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classifier.evaluation import error_page
from classifier.experiments.error_diff import right_and_wrong
from classifier.runtime.errors import PipelineError
from tests.helpers import copy_project, run_stage_in_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_each_cell_lists_its_worst_losses_first_and_a_few_of_the_right_answers() -> None:
    truth = np.array([0] * 12 + [1] * 3)
    probabilities = np.zeros((15, 2))
    probabilities[:, 0] = np.r_[np.linspace(0.99, 0.6, 12), [0.9, 0.7, 0.2]]   # class 0's probability
    probabilities[:, 1] = 1 - probabilities[:, 0]
    cells = error_page.cell_rows(truth, probabilities)
    assert cells[(0, 0)].tolist() == list(range(11, 3, -1))   # the 8 least sure right answers, worst first
    assert cells[(1, 0)].tolist() == [12, 13]                 # mistakes: all, the surest wrong one first
    assert cells[(1, 1)].tolist() == [14]
    # However many mistakes, the worst MISTAKES_SHOWN are listed (the page stays a few MB).
    many = np.random.default_rng(0).dirichlet(np.ones(100), 20_000)
    truth = np.arange(20_000) % 100
    cells = error_page.cell_rows(truth, many)
    wrong = np.concatenate([rows for (i, j), rows in cells.items() if i != j])
    assert len(wrong) == error_page.MISTAKES_SHOWN
    worst = -np.log(many[np.arange(20_000), truth])
    assert worst[wrong].min() >= np.sort(worst[many.argmax(1) != truth])[-error_page.MISTAKES_SHOWN]


def test_the_page_holds_everything_inline_and_forbids_any_request() -> None:
    image = np.zeros((8, 8, 1), np.uint8)
    cells = {"0,1": [{"key": "data/raw/a/1.png", "image": error_page.data_uri(image), "cam": "", "predicted": 0.9,
                      "true": 0.1, "loss": 2.3}]}
    suspects = pd.DataFrame({"key": ["data/raw/a/2.png"], "split": ["train"], "issues": ["label"], "given": ["a"],
                             "suggested": ["b"], "label_quality": ["0.01"], "detail": [""]})
    page = error_page.ErrorPage("t", "s", ["a", "b</script>"], np.array([[3, 1], [0, 2]]), cells,
                                pd.DataFrame({"class": ["a"], "f1": [0.5]}), b"png", suspects,
                                {"data/raw/a/2.png": error_page.data_uri(image)}, "note").html()
    assert "default-src 'none'" in page and not re.search(r"(src|href)=\"(https?:)?//", page)
    assert page.count("<script") == 3 and "b<\\/script>" in page   # the data cannot close its script
    assert 'data-cell="0,1">1<' in page and "data/raw/a/2.png" in page


def test_two_runs_are_compared_image_by_image() -> None:
    keys = [f"data/raw/c/{i}.png" for i in range(4)]
    a = pd.DataFrame({"actual": list("0011"), "predicted": list("0111")}, index=keys)   # wrong on 1
    said_by_b = {keys[0]: "0", keys[1]: "0", keys[2]: "0", keys[3]: "1"}                 # wrong on 2
    b = pd.DataFrame({"actual": list("1100"), "predicted": [said_by_b[k] for k in keys[::-1]]}, index=keys[::-1])
    report = right_and_wrong(a, b, "A", "B")   # matched by key, not by row
    assert report.startswith("4 test images: A gets 3 right, B 3")
    assert f"A right, B wrong: 1\n  {keys[2]}  actual 1: A said 1, B said 0" in report
    assert f"B right, A wrong: 1\n  {keys[1]}  actual 0: A said 1, B said 0" in report
    assert "both wrong: 0" in report
    with pytest.raises(PipelineError, match="different test sets"):
        right_and_wrong(a, a.iloc[:3], "A", "B")


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A LeNet-5 (a conv layer: Grad-CAM) trained for 2 epochs on the tiny digits, through evaluate."""
    project = copy_project(tmp_path_factory.mktemp("page") / "p", {
        "model": {"name": "lenet5"}, "prepare": {"image_size": 32}, "augment": {"blur_kernels": []}})
    for stage in ("ingest", "split", "prepare", "augment", "audit", "train", "evaluate"):
        run_stage_in_process(stage, project)
    return project / "plots/eval/errors.html"


@pytest.mark.slow
def test_evaluate_writes_the_page_with_grad_cam_for_every_listed_image(page) -> None:
    text = page.read_text()
    cells = __import__("json").loads(re.search(r'id="cells">(.*?)</script>', text, re.S).group(1))
    assert cells and all(entry["cam"].startswith("data:image/jpg;base64,") for v in cells.values() for entry in v)
    assert "The audit is off" in text and "Grad-CAM" in text


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium for the browser test: apt-get install chromium")
def test_the_page_in_a_browser_lists_a_cells_images_on_a_click_and_asks_nothing_of_the_network(page) -> None:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM)
        try:
            tab = browser.new_page()
            requests = []
            tab.on("request", lambda request: requests.append(request.url))
            tab.goto(page.as_uri())
            mistake = tab.query_selector("#confusion td.wrong") or tab.query_selector("#confusion td.right")
            cell = mistake.get_attribute("data-cell")
            mistake.click()
            shown = tab.locator("#cell-images figure.cell-image")
            cells = tab.evaluate("JSON.parse(document.getElementById('cells').textContent)")
            assert shown.count() == len(cells[cell]) > 0
            assert tab.locator("#cell-images figure.cell-image img").count() == 2 * shown.count()   # image, Grad-CAM
            assert cells[cell][0]["key"] in shown.first.inner_text()
            assert tab.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        finally:
            browser.close()
    assert [url for url in requests if not url.startswith("data:")] == [page.as_uri()]


@pytest.mark.slow  # pytorch-grad-cam's import: about 3 s
def test_our_grad_cam_is_pytorch_grad_cams() -> None:
    """error_page.grad_cam computes what the pinned pytorch-grad-cam's GradCAM does, without its import."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from classifier.models.registry import InputShape, build_model
    from classifier.params.whole_file import load_params
    torch.manual_seed(0)
    model = build_model(load_params("model").model, InputShape(1, 32, 32, 10)).eval()   # params.yaml's: LeNet-5
    inputs = torch.randn(6, 1, 32, 32)
    targets = [0, 3, 5, 9, 1, 1]
    layer = error_page.last_conv(model)
    with GradCAM(model=model, target_layers=[layer]) as reference:
        expected = reference(input_tensor=inputs, targets=[ClassifierOutputTarget(t) for t in targets])
    np.testing.assert_allclose(error_page.grad_cam(model, layer, inputs, targets), expected, atol=1e-5)
