"""Networks: fastMRI's U-Net and E2E-VarNet with a selectable normalisation layer, and the U-Net
with data consistency (one or a cascade)."""

from mrirecon.models.cascade import DataConsistentUnet
from mrirecon.models.norms import NORM_CHOICES, NormKind, make_norm
from mrirecon.models.unet import Unet
from mrirecon.models.varnet import VarNet

__all__ = ["DataConsistentUnet", "NORM_CHOICES", "NormKind", "Unet", "VarNet", "make_norm"]
