"""A trained network as a method, from its checkpoint alone: reconstruction from Python.

    from mrirecon.methods import TrainedModel

    model = TrainedModel.from_checkpoint("runs/demo/version_0/checkpoints/last.ckpt")
    images = model.reconstruct(kspace, mask, crop_size=(128, 128))  # (slices, 128, 128)

The checkpoint names its network (class and constructor arguments, which ``mrirecon fit``
stores), so no config is needed; it is read with the same checks as everywhere else (see
:mod:`mrirecon.core.checkpoint_files`). ``reconstruct`` takes k-space already undersampled or
not (the mask is applied either way) and runs the chain and the network exactly as ``mrirecon
predict`` does, so the images equal predict's for the same mask.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from mrirecon.core.checkpoint_files import read_checkpoint
from mrirecon.core.operator import centred_sampled_square, contiguous_centre_width
from mrirecon.data.batch import KSpaceBatch, prepare_batch
from mrirecon.errors import UserError
from mrirecon.methods.adaptation import AdaptedMethod, AdaptSettings
from mrirecon.methods.base import as_method


def network_from_checkpoint(checkpoint: dict[str, Any], path: str | Path = "checkpoint") -> nn.Module:
    """The network a checkpoint of ``mrirecon fit`` describes, with its weights.

    Raises:
        UserError: the checkpoint does not describe its network, or the weights do not fit it.
    """
    description = (checkpoint.get("hyper_parameters") or {}).get("net")
    if not isinstance(description, dict) or "class_path" not in description:
        raise UserError(f"{path}: the checkpoint does not name its network (not written by mrirecon fit)")
    module_name, class_name = str(description["class_path"]).rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise UserError(f"{path}: network {description['class_path']} is not available ({err})") from None
    net = cls(**dict(description.get("init_args") or {}))
    weights = {k[len("net."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise UserError(f"{path}: the weights do not fit {class_name} ({str(err).splitlines()[0]})") from None
    return net


class TrainedModel:
    """A trained network that reconstructs k-space (see the module docstring).

    Args:
        net: the network (an image or a k-space network, see :mod:`mrirecon.methods.base`).
        device: where it runs.
    """

    def __init__(self, net: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.method = as_method(self.net)
        self.last_adaptation: AdaptedMethod | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None) -> "TrainedModel":
        """Loads ``path`` (checked first); ``device`` defaults to CUDA when there is one."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(network_from_checkpoint(read_checkpoint(path), path), device)

    @torch.no_grad()
    def reconstruct(
        self,
        kspace: np.ndarray | torch.Tensor,
        mask: np.ndarray | torch.Tensor,
        crop_size: Sequence[int],
        num_low_frequencies: int | None = None,
        batch_size: int = 8,
        adapt: "AdaptSettings | None" = None,
    ) -> np.ndarray:
        """Reconstructs a volume.

        Args:
            kspace: complex ``(slices, H, W)`` (single-coil) or ``(slices, coils, H, W)``.
            mask: ``(W,)`` column mask (sampled columns true), or a 2-D mask ``(H, W)`` of the
                k-space plane (Calgary-Campinas' Poisson-disc masks).
            crop_size: ``(rows, cols)`` of the images (fastMRI's targets are 320 x 320).
            num_low_frequencies: centre columns of the mask (default: the run of sampled
                columns through the centre; a 2-D mask's centred fully sampled square).
            batch_size: slices reconstructed together.
            adapt: fine-tune the network on this volume's own measurement first
                (:class:`~mrirecon.methods.adaptation.AdaptSettings`; all its slices at once),
                then forget the adapted weights; :attr:`last_adaptation` says what it did.

        Returns:
            float32 ``(slices, rows, cols)`` magnitude images in the units of the k-space.
        """
        kspace = torch.as_tensor(kspace)
        if not kspace.is_complex() or kspace.ndim not in (3, 4):
            raise UserError(f"kspace: expected complex (slices, [coils,] H, W), got {kspace.dtype} {tuple(kspace.shape)}")
        if kspace.ndim == 3:
            kspace = kspace[:, None]
        mask = torch.as_tensor(np.array(mask, dtype=bool))  # a copy: drawn masks are cached read-only
        plane = mask.ndim == 2 and mask.shape[0] > 1
        if plane:
            if tuple(mask.shape) != tuple(kspace.shape[-2:]):
                raise UserError(f"mask: a 2-D mask of {tuple(mask.shape)}, kspace planes are {tuple(kspace.shape[-2:])}")
            if adapt is not None and adapt.steps:
                raise UserError("--adapt_steps: adaptation splits column masks only, not a 2-D mask")
        else:
            mask = mask.reshape(-1)
            if mask.shape[0] != kspace.shape[-1]:
                raise UserError(f"mask: {mask.shape[0]} columns, kspace has {kspace.shape[-1]}")
        if num_low_frequencies is not None:
            low = int(num_low_frequencies)
        else:
            low = int(centred_sampled_square(mask) if plane else contiguous_centre_width(mask))
        crop = (int(crop_size[0]), int(crop_size[1]))
        method = self.method
        self.last_adaptation = None
        if adapt is not None and adapt.steps:
            method = self.last_adaptation = AdaptedMethod(self.method, adapt)
            batch_size = kspace.shape[0]  # one adaptation per volume, on all of its slices
        images = []
        for start in range(0, kspace.shape[0], batch_size):
            chunk = kspace[start:start + batch_size].to(self.device, torch.complex64)
            n = chunk.shape[0]
            batch = KSpaceBatch(
                kspace=chunk, mask=mask.to(self.device).expand(n, *mask.shape), num_low_frequencies=torch.full((n,), low, device=self.device),
                crop_size=crop, target=torch.zeros(n, *crop, device=self.device),
                max_value=torch.zeros(n, dtype=torch.float64, device=self.device),
                fname=[""] * n, slice_num=list(range(start, start + n)), acceleration=[0.0] * n,
                has_target=[False] * n, padding=[False] * n,
            )
            images.append(method(prepare_batch(batch, method.needs_kspace)).float().cpu())
        return torch.cat(images).numpy()
