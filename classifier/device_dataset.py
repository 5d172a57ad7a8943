"""A data set on the training device: uint8 images resident in its memory when they fit (batches
are index slices), streamed from the memory-mapped array batch by batch when they do not. Used by
train, evaluate, predict and lr_find.
"""
from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 N×H×W×C array (possibly memory-mapped) -> uint8 N×C×H×W tensor on `device`."""
    # np.array copies a read-only memory map into writable memory, which torch requires.
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous().to(device)


def fits_in_memory(nbytes: int, device: torch.device) -> bool:
    """Whether an array of `nbytes` can be resident on `device` with room to spare (half the free memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        import psutil
        free = psutil.virtual_memory().available
    return nbytes < free // 2


class DeviceDataset:
    """Images and labels of one split, served by index: resident on the device when they fit,
    else gathered from the (memory-mapped) array batch by batch. `rows` (sorted) keeps only those
    rows: a data-parallel process holds its shard alone."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, resident: bool | None = None,
                 rows: np.ndarray | None = None):
        self.device = device
        self.rows = rows
        labels = np.asarray(labels, dtype=np.int64)
        self.host_labels = torch.from_numpy(labels if rows is None else labels[rows])
        self.labels = self.host_labels.to(device)
        nbytes = images.nbytes if rows is None else images[:1].nbytes * len(rows)
        self.resident = fits_in_memory(nbytes, device) if resident is None else resident
        if self.resident:
            self.images = images_to_tensor(images if rows is None else images[rows], device)
        else:
            self.images = images

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 N×C×H×W images and labels of rows `index`, on the device. Streamed, `index` should
        be on the CPU (fit keeps the order there), so that gathering a batch never waits for the GPU."""
        if self.resident:
            return self.images[index], self.labels[index]
        rows = np.sort(index.cpu().numpy())  # sorted: sequential reads from the memory map
        stored = rows if self.rows is None else self.rows[rows]
        batch = torch.from_numpy(np.ascontiguousarray(self.images[stored])).permute(0, 3, 1, 2)
        labels = self.host_labels[torch.from_numpy(rows)]
        if self.device.type == "cuda":
            batch, labels = batch.pin_memory(), labels.pin_memory()
        return batch.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
