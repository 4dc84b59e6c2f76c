"""The zero-filled reconstruction: the inverse FFT of the masked k-space, coil-combined."""

from __future__ import annotations

import torch
from torch import nn

from mrirecon.data.batch import KSpaceBatch


class ZeroFilled(nn.Module):
    """The zero-filled image the batch already carries (RSS of the coil images, cropped)."""

    needs_kspace = False

    def forward(self, batch: KSpaceBatch) -> torch.Tensor:
        return batch.zero_filled
