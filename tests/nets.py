"""Networks for tests, importable by class path (``nets.<Name>``) from configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytorch_lightning as pl
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


class MaskRecorder(pl.Callback):
    """Appends every training slice's (file, slice, mask) to ``$MRIRECON_TEST_MASKS/rank<r>.jsonl``."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        path = Path(os.environ["MRIRECON_TEST_MASKS"]) / f"rank{trainer.global_rank}.jsonl"
        with open(path, "a") as f:
            for fname, slice_num, mask in zip(batch.fname, batch.slice_num, batch.mask.cpu()):
                f.write(json.dumps([fname, slice_num, mask.int().tolist()]) + "\n")
