"""A small Calgary-Campinas (CC359) multi-channel download, simulated, so that its reader,
converter, config and challenge metrics run offline: the set folders, file names, ``kspace``
layout, partial Fourier and mask files :mod:`mrirecon.data.cc359` reads, with the anatomy of
the other simulations.

It is not a sagittal 3-D T1 scan: each plane is a slice of the simulated head
(:func:`~mrirecon.data.simulation.synthesis.synthesize_subject`), ``W x W`` inside a ``H x W``
ky-kz plane (218 x 170 at full size), seen by 12 loop coils with complex Gaussian noise, its
k-space stored as the dataset stores it: zero frequency in the middle (``fftshift(fft2(image))``,
so that the dataset's own ``ifft2`` gives the image with a checkerboard phase), real and
imaginary parts interleaved over 24 channels, float32, the last 15 % of kz zero. The
challenge's masks are stood in for by our own Poisson-disc masks (``poisson_sampling/R5_HxW.npy``,
calibration disc scaled from 18 of 170), which the ``Test-R=5|10`` files are undersampled with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
from tqdm import tqdm

from mrirecon.core import atomic
from mrirecon.core.plane_masks import acquired_columns, poisson_disc_mask
from mrirecon.data.anatomy import default_sources, resolve_source
from mrirecon.data.cc359 import ACCELERATIONS, CALIBRATION_RADIUS, MASK_FOLDER, PARTIAL_FOURIER
from mrirecon.data.simulation.synthesis import Head, coil_subject, prepare_head
from mrirecon.errors import UserError

COILS = 12
FULL_PLANE = (218, 170)
SNR = 30.0
MASKS_PER_SHAPE = 4


def plane_of(width: int) -> tuple[int, int]:
    """The ky-kz plane of a simulation ``width`` columns wide: the real 218 rows for the real
    widths, else scaled from 218 x 170 to an even number of rows."""
    if width in (170, 174, 180):
        return FULL_PLANE[0], width
    return 2 * max(1, round(width * FULL_PLANE[0] / FULL_PLANE[1] / 2)), width


def calibration_radius_of(width: int) -> float:
    """The calibration disc of a simulated plane: the challenge's 18 samples, scaled to ``width``."""
    return CALIBRATION_RADIUS * width / FULL_PLANE[1]


def scan_kspace(head: Head, plane: tuple[int, int], slices: int, rng: np.random.Generator) -> np.ndarray:
    """Fully sampled k-space of one scan as the dataset stores it: float32 ``(slices, H, W, 24)``."""
    rows, cols = plane
    subject = coil_subject(head, cols, slices, COILS, SNR, rng)
    images = np.zeros((slices, COILS, rows, cols), dtype=np.complex64)
    top = (rows - cols) // 2
    images[:, :, top:top + cols, :] = (subject.magnitude * np.exp(1j * subject.phase))[:, None] * subject.maps
    kspace = np.fft.fftshift(np.fft.fft2(images, norm="ortho"), axes=(-2, -1))
    noise = rng.standard_normal(kspace.shape + (2,)).astype(np.float32).view(np.complex64)[..., 0]
    kspace = (kspace + subject.sigma * noise).astype(np.complex64)
    kspace[..., acquired_columns(cols, PARTIAL_FOURIER):] = 0
    stored = np.empty((slices, rows, cols, 2 * COILS), dtype=np.float32)
    moved = np.moveaxis(kspace, 1, -1)
    stored[..., 0::2], stored[..., 1::2] = moved.real, moved.imag
    return stored


def _write(path: Path, kspace: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=kspace)


def simulate_cc359_download(out: str | Path, width: int = 42, slices: int = 6, train: int = 4, val: int = 2,
                            test: int = 1, seed: int = 0, sources: Sequence[str] | None = None,
                            progress: bool = True) -> dict:
    """Writes ``<out>/Raw-data/Multi-channel/12-channel/{train,val,Test-R=5,Test-R=10}/*.h5``
    and ``poisson_sampling/R{5,10}_HxW.npy``, built in a staging folder and renamed into place
    whole. Scan ``i`` draws from ``(seed, i)`` alone; names follow the dataset's
    (``e14089s3_P53248.7.h5``).

    Returns:
        A summary: the folder, plane, coils, slices and the files of each set.

    Raises:
        UserError: ``out`` exists, or an argument is out of range.
    """
    out = Path(out)
    if out.exists():
        raise UserError(f"{out}: exists already; a simulated download is written into a new folder")
    for name, value, least in (("train", train, 1), ("val", val, 0), ("test", test, 0), ("slices", slices, 1),
                               ("recon_size", width, 24)):
        if value < least:
            raise UserError(f"{name} {value}: at least {least}")
    if width % 2:
        raise UserError(f"recon_size {width}: even (Calgary-Campinas' 170, 174 and 180 all are)")
    plane = plane_of(width)
    heads = [prepare_head(resolve_source(p)) for p in (default_sources() if sources is None else sources)]
    top = Path("Raw-data") / "Multi-channel" / "12-channel"
    sets = [("train", None)] * train + [("val", None)] * val + [
        (f"Test-R={acc}", acc) for acc in ACCELERATIONS for _ in range(test)]
    radius = calibration_radius_of(width)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.staged_folder(out) as staging:
        banks = {}
        for acc in ACCELERATIONS:
            banks[acc] = np.stack([poisson_disc_mask(plane, acc, radius, PARTIAL_FOURIER, seed=[seed, acc, i])
                                   for i in range(MASKS_PER_SHAPE)])
            (staging / MASK_FOLDER).mkdir(parents=True, exist_ok=True)
            np.save(staging / MASK_FOLDER / f"R{acc}_{plane[0]}x{plane[1]}.npy", banks[acc])
        counts: dict[str, int] = {}
        for index, (folder, acc) in enumerate(tqdm(sets, unit="file", desc="simulating CC359", disable=not progress)):
            rng = np.random.default_rng([seed, index])
            kspace = scan_kspace(heads[index % len(heads)], plane, slices, rng)
            if acc is not None:
                mask = banks[acc][index % MASKS_PER_SHAPE]
                kspace = kspace * mask[None, :, :, None].astype(np.float32)
            name = f"e{14000 + 37 * index + seed % 1000}s3_P{50000 + 1024 * index}.7.h5"
            _write(staging / top / folder / name, kspace)
            counts[folder] = counts.get(folder, 0) + 1
    return {"out": str(out), "plane": list(plane), "coils": COILS, "slices": slices, "calibration_radius": radius,
            "sets": counts}
