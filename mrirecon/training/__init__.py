"""Aliases of the Lightning part's modules under their names before 0.2 (see ``mrirecon.lightning``).

Kept so that configs, scripts and checkpoints made before the layout change keep working.
"""

ALIAS_OF = "mrirecon.lightning"
