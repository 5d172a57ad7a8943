"""What the served module computes, without torch.export's seconds: the training-time normalisation
then the model, on uint8 input (the program itself: tests/test_pipeline.py)."""
from __future__ import annotations

import torch
from torch import nn

from classifier.data.preprocessing import Normalizer
from tools.export import Served


def test_the_served_module_normalises_as_training_did() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 4, 7)).eval()
    mean, std = (0.2, 0.5, 0.7), (0.3, 0.25, 0.1)
    images = torch.randint(0, 256, (6, 3, 5, 4), dtype=torch.uint8)
    by_definition = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        served = Served(model, Normalizer(mean, std))(images)
        torch.testing.assert_close(served, model(by_definition), rtol=1e-5, atol=1e-5)
