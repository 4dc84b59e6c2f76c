"""Alias (before 0.2): :mod:`mrirecon.commands.study`; ``mrirecon.study.BatchStatsProbe`` is the
class path that study runs before 0.2 saved in their configs."""

from mrirecon.commands.study import *  # noqa: F401,F403
from mrirecon.commands.study.probe import BatchStatsProbe  # noqa: F401

ALIAS_OF = "mrirecon.commands.study"
