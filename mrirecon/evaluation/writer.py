"""Writes reconstructions in fastMRI's submission format: one HDF5 per volume, key ``reconstruction``.

With masks drawn by mrirecon (one fixed mask per volume and acceleration) each acceleration gets
its own folder, ``<out>/<acc>x/<file>.h5``; with the files' own masks (the real test/challenge
split) the folder is flat, as fastMRI's leaderboard expects.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
from pytorch_lightning.callbacks import BasePredictionWriter

from mrirecon.evaluation.results import acceleration_label


def write_reconstruction(path: Path, reconstruction: np.ndarray, attrs: Mapping[str, Any] | None = None) -> None:
    """Atomically write one volume (slices, h, w) as float32 under ``reconstruction``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".h5.tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as hf:
            hf.create_dataset("reconstruction", data=reconstruction.astype(np.float32))
            for key, value in (attrs or {}).items():
                hf.attrs[key] = value
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def volume_output_path(out_dir: Path, fname: str, acceleration: float, per_acceleration: bool) -> Path:
    return Path(out_dir) / acceleration_label(acceleration) / fname if per_acceleration else Path(out_dir) / fname


class ReconstructionWriter(BasePredictionWriter):
    """Collects predicted slices and writes each volume once all its slices arrived.

    Args:
        output_dir: the folder to write into.
        per_acceleration: one sub-folder per acceleration (see the module docstring).
        num_slices: slices per file name, to write a volume as soon as it is complete.
    """

    def __init__(self, output_dir: str | Path, per_acceleration: bool = True, num_slices: Mapping[str, int] | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.per_acceleration = per_acceleration
        self.num_slices = dict(num_slices or {})
        self._slices: dict[tuple[str, float], dict[int, np.ndarray]] = defaultdict(dict)
        self.written: list[Path] = []

    def add(self, reconstruction, fname: list[str], slice_num, acceleration) -> None:
        """Take a batch of (B, h, w) reconstructions; write each volume that is now complete."""
        for i, name in enumerate(fname):
            key = (name, float(acceleration[i]))
            self._slices[key][int(slice_num[i])] = reconstruction[i].float().cpu().numpy()
            if len(self._slices[key]) == self.num_slices.get(name, -1):
                self._flush(key)

    def finish(self) -> None:
        """Write every volume still held (volumes whose slice count was not known)."""
        for key in list(self._slices):
            self._flush(key)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0) -> None:
        self.add(prediction["reconstruction"], prediction["fname"], prediction["slice_num"], prediction["acceleration"])

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        self.finish()

    def _flush(self, key: tuple[str, float]) -> None:
        slices = self._slices.pop(key)
        volume = np.stack([slices[s] for s in sorted(slices)])
        path = volume_output_path(self.output_dir, key[0], key[1], self.per_acceleration)
        write_reconstruction(path, volume, {"acceleration": key[1]})
        self.written.append(path)
