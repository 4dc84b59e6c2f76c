"""A callback of every study run: the validation loss with batch norm using batch statistics."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

class BatchStatsProbe(pl.Callback):
    """Logs ``val/loss_batch_stats``: the validation loss with batch norm in train mode.

    Each validation batch is passed a second time with every batch-norm layer normalising by
    the batch's own statistics. Running statistics are restored afterwards and dropout stays
    off, so training is unaffected. Other normalisation layers behave identically in both
    modes, so for them the value equals ``val/loss``.
    """

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._total, self._count = 0.0, 0

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        norms = [m for m in pl_module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
        for m in norms:
            m.train()
        with torch.no_grad():
            # The module's own loss, so that this compares like for like with val/loss.
            loss = pl_module._loss(pl_module(batch), batch)
        for m, state in zip(norms, saved):
            m.load_state_dict(state)
            m.eval()
        size = batch.size
        self._total += float(loss) * size
        self._count += size

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._count and not trainer.sanity_checking:
            pl_module.log("val/loss_batch_stats", self._total / self._count)
