"""A small CMRxRecon 2023 cine download, simulated, so that its reader, converter, config and
ranking run offline: the organisers' tree, MATLAB v7.3 files, variables, types and masks
(:mod:`mrirecon.data.cmrxrecon` reads them), with the anatomy of the other simulations.

It is not a heart: each (slice, frame) image is a slice of the head
(:func:`~mrirecon.data.simulation.synthesis.synthesize_subject`) breathing in and out by a few
per cent over the frames, seen by the simulation's loop coils, with complex Gaussian noise. The
images are ``r x r`` in a k-space of ``(2r, r)`` (kx read out twice oversampled, as CMRxRecon's
512 x 246 are); the masks are uniform along ky with a central band scaled from the real 24 of
246 lines. A CMRxRecon download has short-axis files of about 10 slices and long-axis files of 3
views; here ``slices`` and 3, 12 frames and 10 coils, as there.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from mrirecon.core import atomic
from mrirecon.core.operator import fft2c_numpy
from mrirecon.data.anatomy import default_sources, resolve_source
from mrirecon.data.cmrxrecon import ACCELERATIONS, COIL_FOLDERS, MATLAB_USERBLOCK, kspace_key
from mrirecon.data.simulation.synthesis import Head, coil_subject, prepare_head
from mrirecon.errors import UserError

FRAMES = 12
COILS = 10
LAX_SLICES = 3
# CMRxRecon's central 24 of 246 ky lines (Format_cine.txt), as a fraction.
CALIBRATION_FRACTION = 24 / 246
SNR = 30.0


def matlab_v73_bytes(variables: dict[str, np.ndarray]) -> bytes:
    """A MATLAB v7.3 file in memory: HDF5 after MATLAB's 512-byte text header, each array given
    in MATLAB's dimension order and stored reversed (MATLAB is column-major), complex ones as a
    compound of single-precision ``real`` and ``imag``, masks as doubles, as the download's."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=MATLAB_USERBLOCK) as hf:
        for name, value in variables.items():
            stored = np.ascontiguousarray(value.T)
            if np.iscomplexobj(stored):
                compound = np.empty(stored.shape, dtype=[("real", "<f4"), ("imag", "<f4")])
                compound["real"], compound["imag"] = stored.real, stored.imag
                hf.create_dataset(name, data=compound).attrs["MATLAB_class"] = np.bytes_("single")
            else:
                hf.create_dataset(name, data=stored.astype(np.float64)).attrs["MATLAB_class"] = np.bytes_("double")
    data = bytearray(buffer.getvalue())
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 . Written by mrirecon data simulate."
    data[:128] = header.ljust(116, b" ") + bytes(8) + b"\x00\x02" + b"IM"
    return bytes(data)


def cine_mask(kx: int, ky: int, acceleration: int) -> np.ndarray:
    """A (kx, ky) 0/1 mask in MATLAB's order: every ``acceleration``-th ky line and the central
    band (an even number of lines, as the download's 24), the same along kx."""
    lines = np.zeros(ky, dtype=bool)
    lines[::acceleration] = True
    band = max(2, 2 * round(CALIBRATION_FRACTION * ky / 2))
    lines[ky // 2 - band // 2: ky // 2 + band // 2] = True
    return np.broadcast_to(lines[None, :], (kx, ky)).astype(np.float64)


def _breathing(image: np.ndarray, scale: float) -> np.ndarray:
    """The image zoomed by ``scale`` about its centre (linear interpolation)."""
    centre = (np.array(image.shape) - 1) / 2
    return ndimage.affine_transform(image, np.full(2, 1 / scale), offset=centre - centre / scale, order=1)


def cine_kspace(head: Head, r: int, slices: int, challenge: str, rng: np.random.Generator) -> np.ndarray:
    """Fully sampled k-space of one view in MATLAB's order, (kx, ky, coils, slices, frames)
    (single-coil: no coil axis), complex64, kx = 2r and ky = r."""
    subject = coil_subject(head, r, slices, COILS if challenge == "multicoil" else None, SNR, rng)
    magnitude, phase, maps, sigma = subject.magnitude, subject.phase, subject.maps, subject.sigma
    coils = COILS if maps is not None else 1
    kspace = np.zeros((2 * r, r, coils, slices, FRAMES), dtype=np.complex64)
    for t in range(FRAMES):
        scale = 1 + 0.04 * np.sin(2 * np.pi * t / FRAMES)
        for z in range(slices):
            image = _breathing(magnitude[z], scale) * np.exp(1j * phase[z])
            coil_images = image[None] * maps[z] if maps is not None else image[None]
            canvas = np.zeros((coils, 2 * r, r), dtype=np.complex64)
            canvas[:, r // 2: r // 2 + r, :] = coil_images
            noise = rng.standard_normal((coils, 2 * r, r, 2)).astype(np.float32).view(np.complex64)[..., 0]
            kspace[..., z, t] = np.moveaxis(fft2c_numpy(canvas) + sigma * noise, 0, -1)
    return kspace if maps is not None else kspace[:, :, 0]


def simulate_cine_download(out: str | Path, challenge: str = "multicoil", patients: int = 4,
                           validation_patients: int = 1, recon_size: int = 32, slices: int = 4,
                           seed: int = 0, sources: Sequence[str] | None = None,
                           progress: bool = True) -> dict:
    """Writes ``<out>/{MultiCoil|SingleCoil}/Cine/TrainingSet/{FullSample,AccFactor04|08|10}/P###/``
    and ``ValidationSet/AccFactorNN/P###/`` (``cine_lax.mat``, ``cine_sax.mat`` and, beside the
    undersampled ones, ``cine_{lax,sax}_mask.mat``), built in a staging folder and renamed into
    place whole. Patient ``i`` draws from ``(seed, i)`` alone.

    Returns:
        A summary: the folder, challenge, sizes and the patients of each set.

    Raises:
        UserError: ``out`` exists, or an argument is out of range.
    """
    out = Path(out)
    if challenge not in COIL_FOLDERS:
        raise UserError(f"challenge {challenge!r}: expected one of {', '.join(COIL_FOLDERS)}")
    if out.exists():
        raise UserError(f"{out}: exists already; a simulated download is written into a new folder")
    for name, value, least in (("patients", patients, 1), ("validation_patients", validation_patients, 0),
                               ("slices", slices, 1), ("recon_size", recon_size, 16)):
        if value < least:
            raise UserError(f"{name} {value}: at least {least}")
    if recon_size % 2:
        raise UserError(f"recon_size {recon_size}: even (CMRxRecon's sizes all are)")
    heads = [prepare_head(resolve_source(p)) for p in (default_sources() if sources is None else sources)]
    r = recon_size
    sizes = {"cine_lax": LAX_SLICES, "cine_sax": slices}
    top = Path(COIL_FOLDERS[challenge]) / "Cine"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.staged_folder(out) as staging:
        total = (patients + validation_patients) * len(sizes)
        with tqdm(total=total, unit="file", desc="simulating cine", disable=not progress) as bar:
            for index in range(patients + validation_patients):
                training = index < patients
                patient = f"P{(index if training else index - patients) + 1:03d}"
                folder = staging / top / ("TrainingSet" if training else "ValidationSet")
                for number, (view, view_slices) in enumerate(sizes.items()):
                    rng = np.random.default_rng([seed, index, number])
                    full = cine_kspace(heads[index % len(heads)], r, view_slices, challenge, rng)
                    files = {}
                    if training:
                        files[folder / "FullSample" / patient / f"{view}.mat"] = {kspace_key(challenge, None): full}
                    for acc in ACCELERATIONS:
                        mask = cine_mask(2 * r, r, acc)
                        sub = full * mask.reshape(mask.shape + (1,) * (full.ndim - 2)).astype(np.complex64)
                        acc_folder = folder / f"AccFactor{acc:02d}" / patient
                        files[acc_folder / f"{view}.mat"] = {kspace_key(challenge, acc): sub}
                        files[acc_folder / f"{view}_mask.mat"] = {f"mask{acc:02d}": mask}
                    for path, variables in files.items():
                        path.parent.mkdir(parents=True, exist_ok=True)
                        atomic.write_bytes(path, matlab_v73_bytes(variables))
                    bar.update()
    return {"out": str(out), "challenge": challenge, "kspace_size": [2 * r, r], "frames": FRAMES,
            "slices": sizes, "coils": COILS if challenge == "multicoil" else 1,
            "training_patients": patients, "validation_patients": validation_patients}
