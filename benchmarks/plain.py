"""The plain alternative the benchmarks compare with: one epoch of the textbook PyTorch loop."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader


def plain_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> None:
    """What the PyTorch tutorials write: train mode, then forward, loss, zero_grad, backward, step per batch."""
    model.train()
    for xb, yb in loader:
        loss = nn.functional.cross_entropy(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
