"""evaluate's error page, plots/eval/errors.html: one self-contained offline file (its images inline as
data: URIs, its script inline, no request leaves the page) to look at what the model gets wrong.

- the test split's confusion matrix: a click on a cell lists its images, worst loss first (up to
  PER_CELL of a cell of mistakes, PER_RIGHT_CELL of a right one), each with its probabilities and a
  Grad-CAM overlay (on the last conv layer: where the model looked for the class it predicted; none
  for a model without one);
- per-class precision, recall, F1; the reliability diagram; the audit's suspects (plots/audit/issues.csv,
  when the audit ran) with the label it suggests and the image.
`dvc plots show` links to it (.dvc/plots.html).
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from classifier.data.opencv import cv2

PER_CELL = 24        # images listed per cell of mistakes, worst loss first
MISTAKES_SHOWN = 400 # mistakes listed at most, the worst, over all cells: the page stays a few MB
PER_RIGHT_CELL = 8   # and per cell of right answers, its least sure (the page is committed: ~3 KB an image)
SUSPECTS = 48        # audit suspects shown
CAM_BATCH = 64       # images a Grad-CAM pass holds gradients for (a large model's memory)


def data_uri(image: np.ndarray, kind: str = ".png") -> str:
    """An RGB (or grey) uint8 image as a data: URI."""
    bgr = image if image.ndim == 2 or image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return f"data:image/{kind[1:]};base64," + base64.b64encode(cv2.imencode(kind, bgr)[1].tobytes()).decode()


def last_conv(model: torch.nn.Module) -> torch.nn.Module | None:
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1] if convs else None


def grad_cam(model: torch.nn.Module, layer: torch.nn.Module, inputs: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017), as pytorch-grad-cam's GradCAM computes it (tests/test_error_page.py
    holds the two equal): `layer`'s activations weighted by the mean gradient of each target class's
    score, summed over channels, ReLU, scaled to [0, 1] per image and resized to the input. N×H×W
    float32. Here rather than through that package, whose import costs evaluate 3.3 s a run."""
    kept: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output) -> None:
        kept["activations"] = output
        output.register_hook(lambda grad: kept.__setitem__("gradients", grad))
    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            scores = model(inputs.detach().requires_grad_(True))
            model.zero_grad()
            scores.gather(1, torch.tensor(targets, device=scores.device)[:, None]).sum().backward()
    finally:
        handle.remove()
    weights = kept["gradients"].mean(dim=(2, 3), keepdim=True)
    maps = torch.relu((weights * kept["activations"]).sum(dim=1)).detach().cpu().numpy()
    height, width = inputs.shape[-2:]
    def scaled(heat: np.ndarray) -> np.ndarray:
        heat = heat - heat.min()
        return np.float32(heat / (1e-7 + heat.max()))
    # Scaled, resized, and scaled again: as pytorch-grad-cam does (resizing moves the lowest and highest).
    return np.stack([scaled(cv2.resize(scaled(heat), (width, height))) for heat in maps])


def grad_cam_overlays(model: torch.nn.Module, inputs: torch.Tensor, images: np.ndarray,
                      targets: list[int]) -> list[np.ndarray] | None:
    """Grad-CAM of each input for its target class, as a heat map blended over the image (uint8 RGB);
    None when the model has no conv layer to look through."""
    layer = last_conv(model)
    if layer is None or not len(inputs):
        return None
    model.eval()
    heat_maps = np.concatenate([grad_cam(model, layer, inputs[start:start + CAM_BATCH], targets[start:start + CAM_BATCH])
                                for start in range(0, len(inputs), CAM_BATCH)])
    overlays = []
    for image, heat in zip(images, heat_maps):
        rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
        colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        overlays.append(cv2.addWeighted(rgb, 0.55, colour, 0.45, 0))
    return overlays


def true_class_loss(y_true: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Each image's cross-entropy: -log of its true class's probability."""
    return -np.log(np.clip(probabilities[np.arange(len(y_true)), y_true], 1e-12, 1))


def cell_rows(y_true: np.ndarray, probabilities: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """(true, predicted) -> its rows listed, worst loss (lowest probability of the true class) first:
    PER_RIGHT_CELL of a diagonal cell; of the mistakes, the worst MISTAKES_SHOWN overall, at most
    PER_CELL a cell (a cell left out shows its count, and no pictures)."""
    predicted = probabilities.argmax(1)
    order = np.argsort(-true_class_loss(y_true, probabilities), kind="stable")
    cells: dict[tuple[int, int], list[int]] = {}
    mistakes = 0
    for row in order.tolist():
        cell = (int(y_true[row]), int(predicted[row]))
        listed = cells.setdefault(cell, [])
        wrong = cell[0] != cell[1]
        if len(listed) < (PER_CELL if wrong else PER_RIGHT_CELL) and (not wrong or mistakes < MISTAKES_SHOWN):
            listed.append(row)
            mistakes += wrong
    return {cell: np.array(rows, dtype=np.int64) for cell, rows in sorted(cells.items())}


def cell_entries(cells: dict, keys: list[str], images: np.ndarray, probabilities: np.ndarray, y_true: np.ndarray,
                 overlays: dict[int, np.ndarray] | None) -> dict[str, list[dict]]:
    """The page's data: "i,j" -> one entry per listed image (key, picture, Grad-CAM, probabilities, loss)."""
    out, loss = {}, true_class_loss(y_true, probabilities)
    for (i, j), rows in cells.items():
        out[f"{i},{j}"] = [{"key": keys[r], "image": data_uri(images[r]),
                            "cam": data_uri(overlays[r], ".jpg") if overlays else "",
                            "predicted": round(float(probabilities[r, j]), 4),
                            "true": round(float(probabilities[r, y_true[r]]), 4),
                            "loss": round(float(loss[r]), 4)} for r in rows]
    return out


def confusion_html(counts: np.ndarray, classes: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    rows = []
    for i, name in enumerate(classes):
        cells = "".join(f'<td class="{"right" if i == j else "wrong" if counts[i, j] else "empty"}" '
                        f'data-cell="{i},{j}">{counts[i, j] or ""}</td>' for j in range(len(classes)))
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return (f'<table id="confusion"><tr><th>actual \\ predicted</th>{head}</tr>{"".join(rows)}</table>')


def table_html(table: pd.DataFrame, picture: dict[str, str] | None = None) -> str:
    """A DataFrame as an HTML table; `picture`: key -> data URI, shown before the row's key."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for _, row in table.iterrows():
        cells = []
        for column, value in row.items():
            text = f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))
            if column == "key" and picture and value in picture:
                text = f'<img class="thumb" src="{picture[value]}" alt=""> {text}'
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table>{'<tr>' + head + '</tr>'}{''.join(rows)}</table>"


STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}#confusion td{cursor:pointer;min-width:2em}
#confusion td.right{background:#e3eefb}#confusion td.wrong{background:#fbe3e3}#confusion td.selected{outline:3px solid #333}
img{image-rendering:pixelated}img.thumb{width:32px;height:32px;vertical-align:middle}
figure{display:inline-block;margin:4px;text-align:center;font-size:11px}figure img{width:96px;height:96px}
.note{color:#666;font-size:90%}"""

SCRIPT = """const cells = JSON.parse(document.getElementById('cells').textContent);
const classes = JSON.parse(document.getElementById('classes').textContent);
document.querySelectorAll('#confusion td[data-cell]').forEach(td => td.addEventListener('click', () => {
  document.querySelectorAll('#confusion td.selected').forEach(t => t.classList.remove('selected'));
  td.classList.add('selected');
  const [i, j] = td.dataset.cell.split(',').map(Number);
  const shown = cells[td.dataset.cell] || [];
  const panel = document.getElementById('cell-images');
  panel.innerHTML = '';
  const title = document.createElement('h3');
  title.textContent = `actual ${classes[i]}, predicted ${classes[j]}: ${shown.length} image(s) shown, worst loss first`;
  panel.appendChild(title);
  for (const e of shown) {
    const f = document.createElement('figure');
    f.className = 'cell-image';
    f.innerHTML = `<img src="${e.image}" alt="image">` + (e.cam ? `<img src="${e.cam}" alt="Grad-CAM">` : '') +
      `<figcaption></figcaption>`;
    f.querySelector('figcaption').textContent =
      `${e.key} | p(${classes[j]}) ${e.predicted} | p(${classes[i]}) ${e.true} | loss ${e.loss}`;
    panel.appendChild(f);
  }
}));"""


@dataclass(frozen=True)
class ErrorPage:
    """What the page shows; html() is its whole text (inline CSS, data and script)."""
    title: str
    summary: str
    classes: list[str]
    counts: np.ndarray                  # the test split's confusion counts, actual × predicted
    cells: dict[str, list[dict]]        # cell_entries
    per_class: pd.DataFrame
    reliability_png: bytes
    suspects: pd.DataFrame | None       # plots/audit/issues.csv; None: the audit is off
    suspect_pictures: dict[str, str]    # key -> data URI
    cam_note: str

    def html(self) -> str:
        title, summary, classes, cells, suspects = self.title, self.summary, self.classes, self.cells, self.suspects
        reliability = "data:image/png;base64," + base64.b64encode(self.reliability_png).decode()
        data = {name: json.dumps(value).replace("</", "<\\/") for name, value in (("cells", cells), ("classes", classes))}
        audit = ("<p class='note'>The audit is off (audit.folds: 0): <code>dvc exp run -S audit.folds=5</code> lists "
                 "the labels to check.</p>" if suspects is None else
                 f"<p class='note'>{len(suspects)} suspects (plots/audit/issues.csv; the first {SUSPECTS} shown), worst "
                 "label quality first; fix with <code>python -m tools.relabel KEY --to CLASS</code>.</p>"
                 + table_html(suspects.head(SUSPECTS), self.suspect_pictures))
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>
<h2>Confusion matrix (test): click a cell</h2>{confusion_html(self.counts, classes)}
<p class="note">{html.escape(self.cam_note)}</p><div id="cell-images"></div>
<h2>Per class (test)</h2>{table_html(self.per_class)}
<h2>Reliability (is the model as sure as it is right?)</h2><img src="{reliability}" alt="reliability diagram" style="width:420px">
<h2>Label audit</h2>{audit}
<script type="application/json" id="cells">{data["cells"]}</script>
<script type="application/json" id="classes">{data["classes"]}</script>
<script>{SCRIPT}</script></body></html>
"""
