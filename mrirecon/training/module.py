"""Alias (before 0.2): :mod:`mrirecon.lightning.module`."""

from mrirecon.lightning.module import ReconModule, describe_network

ALIAS_OF = "mrirecon.lightning.module"
__all__ = ["ReconModule", "describe_network"]
