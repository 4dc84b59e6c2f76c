"""Alias (before 0.2): :mod:`mrirecon.lightning.datamodule`."""

from mrirecon.lightning.datamodule import ReconDataModule

ALIAS_OF = "mrirecon.lightning.datamodule"
__all__ = ["ReconDataModule"]
