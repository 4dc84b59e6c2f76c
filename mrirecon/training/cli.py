"""Alias (before 0.2): :mod:`mrirecon.lightning.cli`."""

from mrirecon.lightning.cli import MriReconCLI, run_lightning_cli

ALIAS_OF = "mrirecon.lightning.cli"
__all__ = ["MriReconCLI", "run_lightning_cli"]
