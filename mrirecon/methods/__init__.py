"""Reconstruction methods: each maps a k-space batch to images (see :mod:`mrirecon.methods.base`).

``CONFIG_SECTIONS`` lists the config sections that methods declare for their settings; the
command-line parser adds them to the one config schema (training ignores them).
"""

from mrirecon.methods.adaptation import AdaptedMethod, AdaptSettings
from mrirecon.methods.base import ImageNetworkMethod, KSpaceNetworkMethod, ReconMethod, as_method
from mrirecon.methods.cs_tv import CSTV, CSTVSettings
from mrirecon.methods.trained import TrainedModel, network_from_checkpoint
from mrirecon.methods.zero_filled import ZeroFilled

CONFIG_SECTIONS = {"cs_tv": CSTVSettings, "adapt": AdaptSettings}

__all__ = [
    "AdaptSettings",
    "AdaptedMethod",
    "CONFIG_SECTIONS",
    "CSTV",
    "CSTVSettings",
    "ImageNetworkMethod",
    "KSpaceNetworkMethod",
    "ReconMethod",
    "TrainedModel",
    "ZeroFilled",
    "as_method",
    "network_from_checkpoint",
]
