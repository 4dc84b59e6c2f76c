"""Callbacks that write what evaluation produces."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pytorch_lightning as pl

from mrirecon.evaluation.submission import VolumeAssembler


class ReconstructionWriter(pl.Callback):
    """Writes the reconstructions of ``predict`` (or of ``test``) in the submission format.

    Every process writes the volumes it reconstructed (the batch sampler keeps a volume on one
    process), each volume once and completely, atomically.

    Args:
        output_dir: the folder to write into.
        per_acceleration: one sub-folder per acceleration (see :mod:`mrirecon.evaluation.submission`).
        num_slices: slices per file name.
    """

    def __init__(self, output_dir: str | Path, per_acceleration: bool, num_slices: Mapping[str, int]) -> None:
        self.assembler = VolumeAssembler(output_dir, per_acceleration, num_slices)

    @property
    def output_dir(self) -> Path:
        return self.assembler.output_dir

    def _add(self, outputs: Any) -> None:
        if outputs is not None:
            self.assembler.add(outputs["reconstruction"], outputs["fname"], outputs["slice_num"],
                               outputs["acceleration"], outputs["padding"])

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(outputs)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        self.assembler.finish()

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.assembler.finish()
