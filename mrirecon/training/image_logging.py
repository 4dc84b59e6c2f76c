"""Validation image grids for TensorBoard.

Each row is one fixed validation slice: target | zero-filled | reconstruction | |error|. The three
images share one grey scale, [0, the volume's max]; the error panel uses [0, max / 4] in every
epoch, so brightness changes between epochs are real changes, not rescaling.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.utils import make_grid

ERROR_GAIN = 4.0
GRID_TAG = "val/images"


def validation_grid(rows: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """(3, H', W') image grid from (target, zero_filled, reconstruction, max_value) tuples."""
    tiles = []
    for target, zero_filled, recon, max_value in rows:
        scale = max_value.clamp_min(1e-12)
        error = (recon - target).abs() * ERROR_GAIN
        for image in (target, zero_filled, recon, error):
            tiles.append((image.float() / scale).clamp(0, 1).unsqueeze(0).cpu())
    return make_grid(tiles, nrow=4, padding=2, pad_value=1.0)


def log_validation_grid(logger, rows, step: int) -> None:
    """Add the grid to a TensorBoard logger (other loggers are skipped)."""
    experiment = getattr(logger, "experiment", None)
    if experiment is not None and hasattr(experiment, "add_image"):
        experiment.add_image(GRID_TAG, validation_grid(rows), global_step=step)
