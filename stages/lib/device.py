"""Where a model runs: train.device resolved to a torch device, and a GPU claimed so that no two
running experiments share one (stages/lib/gpus.py). Used by train, evaluate, predict, lr_find and
the checkpoint.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from .errors import PipelineError
from .gpus import CLAIMED_VARIABLE, claim_gpu


def select_device(choice: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' or 'cuda:K' without a GPU is an error naming train.device.
    Which GPU a bare 'cuda' gets is claim_device's choice."""
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"The 'train.device' parameter is '{choice}' but no CUDA GPU is available: use auto or cpu")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda" if choice == "auto" else choice)


def claim_device(device: torch.device, log: Callable[[str], None] = print, local_rank: int = 0) -> torch.device:
    """The CPU as is; a CUDA device as a GPU this process holds alone (stages/lib/gpus.py): its pinned
    index, or the lowest free one, waiting while every GPU is busy with another experiment. A
    data-parallel worker takes the GPU its launcher claimed for its local rank."""
    if device.type != "cuda":
        return device
    claimed = os.environ.get(CLAIMED_VARIABLE)
    if claimed:
        index = int(claimed.split(",")[local_rank])
    else:
        index = claim_gpu(torch.cuda.device_count(), device.index, log=log)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
