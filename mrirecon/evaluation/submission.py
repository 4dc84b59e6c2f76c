"""Reconstructions in fastMRI's submission format: one HDF5 per volume, key ``reconstruction``.

With masks drawn by mrirecon (one fixed mask per volume and acceleration) each acceleration gets
its own folder, ``<out>/<acc>x/<file>.h5``; with the files' own masks (the real test/challenge
split) the folder is flat, as fastMRI's leaderboard expects.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
import torch

from mrirecon.core import atomic
from mrirecon.errors import UserError
from mrirecon.evaluation.results import acceleration_label


def write_reconstruction(path: Path, reconstruction: np.ndarray, attrs: Mapping[str, Any] | None = None) -> None:
    """Atomically write one volume (slices, h, w) as float32 under ``reconstruction``."""
    # Built in memory and written with one plain write: when the disk fills under HDF5's own
    # writes, h5py reports nothing, closes a file with holes (which would be renamed into place
    # as a partly zeroed reconstruction) and can crash the interpreter at exit; a plain write
    # fails with an OSError that atomic_path reports in one line.
    image = io.BytesIO()
    with h5py.File(image, "w") as hf:
        hf.create_dataset("reconstruction", data=reconstruction.astype(np.float32))
        for key, value in (attrs or {}).items():
            hf.attrs[key] = value
    atomic.write_bytes(path, image.getbuffer())


def volume_output_path(out_dir: Path, fname: str, acceleration: float, per_acceleration: bool) -> Path:
    return Path(out_dir) / acceleration_label(acceleration) / fname if per_acceleration else Path(out_dir) / fname


class VolumeAssembler:
    """Collects reconstructed slices and writes each volume once all its slices arrived.

    Slices may come in any order and batching. A volume whose slices all arrived is written at
    once (memory holds only unfinished volumes); :meth:`finish` writes the rest and fails for a
    volume that is still incomplete, which would be a truncated submission.

    Args:
        output_dir: the folder to write into.
        per_acceleration: one sub-folder per acceleration (see the module docstring).
        num_slices: slices per file name.
    """

    def __init__(self, output_dir: str | Path, per_acceleration: bool, num_slices: Mapping[str, int]) -> None:
        self.output_dir = Path(output_dir)
        self.per_acceleration = per_acceleration
        self.num_slices = dict(num_slices)
        self._slices: dict[tuple[str, float], dict[int, np.ndarray]] = defaultdict(dict)
        self.written: list[Path] = []

    def add(
        self,
        reconstruction: torch.Tensor,
        fname: Sequence[str],
        slice_num: Sequence[int],
        acceleration: Sequence[float],
        padding: Sequence[bool] | None = None,
    ) -> None:
        """Takes a batch of (B, h, w) reconstructions; padding repeats are ignored."""
        images = reconstruction.detach().float().cpu().numpy()
        for i, name in enumerate(fname):
            if padding is not None and padding[i]:
                continue
            key = (name, float(acceleration[i]))
            self._slices[key][int(slice_num[i])] = images[i]
            if len(self._slices[key]) == self.num_slices[name]:
                self._flush(key)

    def finish(self) -> None:
        """Checks that every volume that was started has been written completely."""
        if self._slices:
            (name, acc), slices = next(iter(self._slices.items()))
            raise RuntimeError(f"{name} at {acceleration_label(acc)}: {len(slices)} of {self.num_slices[name]} slices reconstructed")

    def _flush(self, key: tuple[str, float]) -> None:
        slices = self._slices.pop(key)
        volume = np.stack([slices[s] for s in sorted(slices)])
        if not np.isfinite(volume).all():
            raise UserError(f"{key[0]}: the reconstruction contains NaN or Inf values (a diverged or damaged model)")
        path = volume_output_path(self.output_dir, key[0], key[1], self.per_acceleration)
        write_reconstruction(path, volume, {"acceleration": key[1]})
        self.written.append(path)
