"""Validation images for TensorBoard: one labelled figure per fixed validation slice.

Each figure shows target | zero-filled | reconstruction | |error| x4 for one slice, titled with
its file, slice and acceleration, under the tag ``val/images/<file>/slice<N>/<acc>x`` so that
TensorBoard's step slider walks through the epochs of that slice. The three images share one
grey scale, [0, the volume's data range]; the error panel uses [0, range / 4] in every epoch,
so brightness changes between epochs are real changes, not rescaling. Each slice is its own
figure at its own size: validation sets of the real download mix image sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ERROR_GAIN = 4.0
TAG = "val/images"


@dataclass
class ImageRow:
    """One validation slice to show."""

    fname: str
    slice_num: int
    acceleration: float
    target: torch.Tensor  # (h, w) image units
    zero_filled: torch.Tensor
    reconstruction: torch.Tensor
    max_value: float

    @property
    def tag(self) -> str:
        return f"{TAG}/{self.fname}/slice{self.slice_num}/{self.acceleration:g}x"


def row_figure(row: ImageRow, method_name: str):
    """A matplotlib figure of one row, labelled (panels, file, slice, acceleration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = max(float(row.max_value), 1e-12)
    images = [row.target, row.zero_filled, row.reconstruction, (row.reconstruction - row.target).abs() * ERROR_GAIN]
    titles = ["target", "zero-filled", method_name, f"|{method_name} - target| x{ERROR_GAIN:g}"]
    height, width = row.target.shape[-2:]
    fig, axes = plt.subplots(1, 4, figsize=(4 * 2.4, 2.4 * height / width + 0.5), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles):
        ax.imshow(np.clip(image.detach().float().cpu().numpy() / scale, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"{row.fname}  slice {row.slice_num}  {row.acceleration:g}x", fontsize=9)
    fig.tight_layout()
    return fig


def log_validation_images(logger, rows: list[ImageRow], method_name: str, step: int) -> None:
    """Adds one figure per row to a TensorBoard logger (other loggers are skipped)."""
    experiment = getattr(logger, "experiment", None)
    if experiment is None or not hasattr(experiment, "add_figure"):
        return
    for row in rows:
        experiment.add_figure(row.tag, row_figure(row, method_name), global_step=step, close=True)
