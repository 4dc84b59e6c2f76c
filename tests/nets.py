"""Networks for tests, importable by class path (``nets.<Name>``) from configs."""

from __future__ import annotations

import torch

from mrirecon.models import Unet


class DivergesAtStep(Unet):
    """A U-Net whose output turns NaN from its ``step``-th training forward pass on."""

    def __init__(self, step: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        output = super().forward(image)
        if self.training:
            self.calls += 1
            if int(self.calls) > self.step:
                return output * torch.nan
        return output
