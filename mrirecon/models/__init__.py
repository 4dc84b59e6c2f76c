"""mrirecon.models."""

from mrirecon.models.norms import NORM_CHOICES, NormKind, make_norm
from mrirecon.models.unet import Unet

__all__ = ["NORM_CHOICES", "NormKind", "Unet", "make_norm"]
