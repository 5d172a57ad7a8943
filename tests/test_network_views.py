"""Inside the network: the first layer's weights and feature maps show what they are."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from classifier.evaluation.charts import plot_weight_histograms
from classifier.evaluation.network_views import feature_maps, first_layer_images, to_uint8, weight_layers
from classifier.data.preprocessing import Normalizer
from tests.helpers import assert_picture


def test_conv_filters_are_drawn_as_they_are() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    vertical = torch.tensor([[-1.0, 2.0, -1.0]] * 3)
    with torch.no_grad():
        model[0].weight[1, 0] = vertical
    what, images = first_layer_images(model, (1, 8, 8))
    assert what == "first layer (conv 0): 4 filters of 1×3×3" and len(images) == 4 and images[1].shape == (3, 3, 1)
    np.testing.assert_array_equal(images[1][:, :, 0], [[0, 255, 0]] * 3)  # the bright middle column


def test_an_mlps_first_layer_is_drawn_over_the_pixels_it_reads() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 6), nn.ReLU(), nn.Linear(6, 2))
    pattern = torch.zeros(3, 4, 5)
    pattern[0, 1, 2] = 1.0  # one red pixel
    with torch.no_grad():
        model[1].weight[2] = pattern.flatten()
    what, images = first_layer_images(model, (3, 4, 5))
    assert what.startswith("first layer (dense 1): the weights of 6 units over the 3×4×5 pixels") and images[2].shape == (4, 5, 3)
    assert images[2][1, 2, 0] == 255 and images[2].sum() == 255


def test_feature_maps_are_the_first_conv_layers_output() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0, 0, 1, 1] = 1.0   # channel 1: the input itself
        model[0].weight[1, 0, 1, 1] = -1.0  # channel 2: its negative
    images = torch.randint(0, 255, (3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    normalize = Normalizer((0.5,), (0.25,))
    name, maps = feature_maps(model, images, normalize)
    assert name == "0" and maps.shape == (3, 2, 8, 8)
    np.testing.assert_allclose(maps[:, 0], normalize(images)[:, 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(maps[:, 1], -maps[:, 0])
    drawn, pixels = to_uint8(maps[2, 0]).astype(int), to_uint8(images[2, 0].numpy().astype(float)).astype(int)
    assert np.abs(drawn - pixels).max() <= 1  # the input's own picture, to float rounding
    assert feature_maps(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), images, normalize)[0] == ""  # no conv layer


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_every_weight_layer_gets_a_histogram(tmp_path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.Linear(8, 2))
    layers = weight_layers(model)
    assert [name for name, _ in layers] == ["conv 0", "dense 3", "dense 4"] and layers[1][1].shape == (8, 144)
    import matplotlib.pyplot as plt
    saved = []
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kwargs):  # the figure as drawn: its titles and axis labels
        saved.append([(ax.get_title(), ax.get_ylabel(), ax.get_xlabel()) for ax in fig.axes if ax.axison])
        return real_savefig(fig, *args, **kwargs)
    plt.Figure.savefig = keep
    try:
        plot_weight_histograms([(n, w.numpy()) for n, w in layers], tmp_path / "weights.png")
    finally:
        plt.Figure.savefig = real_savefig
    (axes,) = saved
    assert [title.split("\n")[0] for title, _, _ in axes] == ["conv 0: 4×1×3×3", "dense 3: 8×144", "dense 4: 2×8"]
    assert {(y, x) for _, y, x in axes} == {("weights", "weight value")}
    assert_picture(tmp_path / "weights.png", min_side=200)


@pytest.mark.slow  # over 0.15 s: `make test` runs it, `make test-fast` does not
def test_a_deep_network_shows_twelve_layers_from_first_to_last(tmp_path, monkeypatch) -> None:
    import classifier.evaluation.charts as metrics
    drawn = []
    real = metrics.pyplot

    def spy():
        plt = real()
        original = plt.subplots

        def subplots(rows, cols, **kwargs):
            fig, axes = original(rows, cols, **kwargs)
            for ax in axes.flat:
                ax.hist = lambda values, _hist=ax.hist, **kw: (drawn.append(len(values)), _hist(values, **kw))[1]
            return fig, axes
        monkeypatch.setattr(plt, "subplots", subplots)
        return plt
    monkeypatch.setattr(metrics, "pyplot", spy)
    layers = [(str(i), np.full((i + 1,), float(i))) for i in range(40)]
    plot_weight_histograms(layers, tmp_path / "deep.png")
    assert len(drawn) == 12 and drawn[0] == 1 and drawn[-1] == 40  # the first layer and the last
