"""A CMRxRecon 2023 cine download in miniature: its tree, MATLAB v7.3 files and variables.

As ``ChallengeDataFormat/Format_cine.txt`` of the organisers describes them: ``kspace_full`` and
``kspace_subNN`` as a compound of ``real`` and ``imag`` with MATLAB's dimensions (kx, ky, coils,
slices, frames), which an HDF5 writer stores reversed; 10 coils; the central 24 ky lines always
sampled; ``cine_*_mask.mat`` with ``mask04|08|10`` (kx, ky) of 0/1 doubles; a 512-byte MATLAB
header before the HDF5 data. kx and ky vary between scans; these use even sizes (all of
CMRxRecon's are). The content is a smooth random phantom seen by smooth coil maps, moving a
little from frame to frame: what matters here is every shape, key and type the reader meets.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

CALIBRATION_LINES = 24
FRAMES = 12
COILS = 10


def _matlab_header() -> bytes:
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    return text.ljust(116, b" ") + bytes(8) + b"\x00\x02" + b"IM" + bytes(512 - 128)


def write_mat(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file: arrays given in MATLAB's dimension order, stored reversed as MATLAB
    does, complex ones as a compound of ``real`` and ``imag``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as hf:
        for name, value in variables.items():
            stored = np.ascontiguousarray(value.T)  # MATLAB is column-major
            if np.iscomplexobj(stored):
                real = stored.real.astype(np.float32)
                compound = np.empty(stored.shape, dtype=[("real", "<f4"), ("imag", "<f4")])
                compound["real"], compound["imag"] = real, stored.imag.astype(np.float32)
                dataset = hf.create_dataset(name, data=compound)
                dataset.attrs["MATLAB_class"] = np.bytes_("single")
            else:
                dataset = hf.create_dataset(name, data=stored.astype(np.float64))
                dataset.attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as f:
        f.write(_matlab_header())


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], knots: int = 6) -> np.ndarray:
    coarse = rng.standard_normal((*shape[:-2], knots, knots))
    rows = np.linspace(0, knots - 1, shape[-2])
    cols = np.linspace(0, knots - 1, shape[-1])
    r0, c0 = np.floor(rows).astype(int).clip(0, knots - 2), np.floor(cols).astype(int).clip(0, knots - 2)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    g = lambda a, b: coarse[..., a[:, None], b[None, :]]  # noqa: E731
    return g(r0, c0) * (1 - fr) * (1 - fc) + g(r0 + 1, c0) * fr * (1 - fc) + g(r0, c0 + 1) * (1 - fr) * fc + g(r0 + 1, c0 + 1) * fr * fc


def cine_kspace(rng: np.random.Generator, kx: int, ky: int, slices: int, frames: int = FRAMES,
                coils: int | None = COILS) -> np.ndarray:
    """Fully sampled k-space in MATLAB's order: (kx, ky, coils, slices, frames), or without
    the coil axis for single-coil (``coils=None``)."""
    rows, cols = np.meshgrid(np.linspace(-1, 1, kx), np.linspace(-1, 1, ky), indexing="ij")
    body = ((rows / 0.8) ** 2 + (cols / 0.7) ** 2 < 1).astype(np.float64)
    images = np.empty((slices, frames, kx, ky), dtype=np.complex128)
    texture = 1 + 0.5 * _smooth(rng, (slices, kx, ky))
    for z in range(slices):
        for t in range(frames):
            heart = ((rows - 0.1) ** 2 + cols ** 2 < (0.2 + 0.05 * np.sin(2 * np.pi * t / frames)) ** 2)
            images[z, t] = body * texture[z] * (1 + heart) * np.exp(1j * 0.3 * _smooth(rng, (kx, ky)))
    if coils is not None:
        maps = _smooth(rng, (coils, kx, ky)) + 1j * _smooth(rng, (coils, kx, ky)) + 1.5
        images = images[:, :, None] * maps[None, None]
    axes = (-2, -1)
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(images, axes=axes), norm="ortho"), axes=axes)
    # (slices, frames, [coils,] kx, ky) -> MATLAB's (kx, ky, [coils,] slices, frames)
    order = (3, 4, 2, 0, 1) if coils is not None else (2, 3, 0, 1)
    return np.transpose(kspace, order)


def uniform_mask(kx: int, ky: int, acceleration: int) -> np.ndarray:
    """A (kx, ky) 0/1 mask: every ``acceleration``-th ky line and the central 24."""
    lines = np.zeros(ky, dtype=bool)
    lines[::acceleration] = True
    lines[ky // 2 - CALIBRATION_LINES // 2: ky // 2 + CALIBRATION_LINES // 2] = True
    return np.broadcast_to(lines[None, :], (kx, ky)).astype(np.float64)


def write_cine_tree(root: Path, patients: int = 3, sizes: dict[str, tuple[int, int, int]] | None = None,
                    challenge: str = "multicoil", validation_patients: int = 1, seed: int = 0,
                    accelerations: tuple[int, ...] = (4, 8, 10)) -> Path:
    """``root/MultiCoil/Cine/{TrainingSet/{FullSample,AccFactorNN},ValidationSet/AccFactorNN}/PNNN/``.

    Args:
        sizes: view -> (kx, ky, slices); default 512 x 246 x 10 short axis, 448 x 204 x 3 long axis.
    """
    sizes = sizes or {"cine_sax": (512, 246, 10), "cine_lax": (448, 204, 3)}
    multicoil = challenge == "multicoil"
    top = root / ("MultiCoil" if multicoil else "SingleCoil") / "Cine"
    prefix = "kspace_" if multicoil else "kspace_single_"
    rng = np.random.default_rng(seed)
    for index in range(patients + validation_patients):
        training = index < patients
        patient = f"P{index % patients + 1 if training else index - patients + 1:03d}"
        set_folder = top / ("TrainingSet" if training else "ValidationSet")
        for view, (kx, ky, slices) in sizes.items():
            full = cine_kspace(rng, kx, ky, slices, coils=COILS if multicoil else None)
            if training:
                write_mat(set_folder / "FullSample" / patient / f"{view}.mat", {f"{prefix}full": full})
            masks = {}
            for acc in accelerations:
                mask = uniform_mask(kx, ky, acc)
                masks[f"mask{acc:02d}"] = mask
                shape = (kx, ky) + (1,) * (full.ndim - 2)
                write_mat(set_folder / f"AccFactor{acc:02d}" / patient / f"{view}.mat",
                          {f"{prefix}sub{acc:02d}": full * mask.reshape(shape)})
            for acc in accelerations:
                write_mat(set_folder / f"AccFactor{acc:02d}" / patient / f"{view}_mask.mat", {f"mask{acc:02d}": masks[f"mask{acc:02d}"]})
    return root


def organisers_images(path, key, challenge="multicoil"):
    """The organisers' reference images (``Evaluation/loadFun.py``'s multicoilkdata2img and
    kdata2img written out in NumPy): transpose the h5py array back to MATLAB's (kx, ky, coils,
    slices, frames), combine ``real`` and ``imag``, ``ifftshift(ifft2(fftshift(.)))`` over (kx, ky)
    scaled by sqrt(kx * ky), RSS over coils. Returns (kx, ky, slices, frames)."""
    with h5py.File(path, "r") as hf:
        raw = hf[key][()]
    order = [4, 3, 2, 1, 0] if challenge == "multicoil" else [3, 2, 1, 0]
    k = np.transpose(raw, order)
    k = k["real"] + 1j * k["imag"]
    s = k.shape
    flat = k.reshape(s[0], s[1], -1)
    images = np.stack([np.sqrt(s[0] * s[1]) * np.fft.ifftshift(np.fft.ifft2(np.fft.fftshift(flat[:, :, n])))
                       for n in range(flat.shape[2])], axis=2).reshape(s)
    if challenge == "multicoil":
        images = np.sqrt((np.abs(images) ** 2).sum(axis=2))
    return np.abs(images)  # (kx, ky, slices, frames)


def _matlab_round(x):
    return int(np.floor(x + 0.5))


def organisers_ranking_images(img):
    """``run4Ranking.m`` (its last version) written out in NumPy on MATLAB's (sx, sy, sz, t)
    array, 1-based indices translated term by term: the central 2 slices (all of fewer than 3),
    frames 1:3, Lustig's ``crop.m`` to [round(sx/3), round(sy/2), 2, 3] (the slices it kept, for
    1: MATLAB's crop to 2 of 1 would fail), single precision."""
    sx, sy, sz, t = img.shape
    if sz < 3:
        recon = img[:, :, :, 0:3]
    else:
        first = _matlab_round(sz / 2) - 1  # 1-based round(sz/2)-1 : round(sz/2)
        recon = img[:, :, first - 1:first + 1, 0:3]
    target = [_matlab_round(sx / 3), _matlab_round(sy / 2)] + list(recon.shape[2:])
    index = []
    for m, s in zip(recon.shape, target):
        # crop.m: idx = floor(m/2)+1+ceil(-s/2) : floor(m/2)+ceil(s/2), 1-based and inclusive
        lo, hi = m // 2 + 1 + int(np.ceil(-s / 2)), m // 2 + int(np.ceil(s / 2))
        index.append(slice(lo - 1, hi))
    return np.abs(recon[tuple(index)]).astype(np.float32)


def organisers_calmetric(pred, gt):
    """``Evaluation.py``'s calmetric on two ranked (sx/3, sy/2, slices, frames) arrays, then the
    mean over the file's images as ``Main_Score.py``'s CalValue takes it: (psnr, ssim, nmse)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr, ssim, nmse = [], [], []
    for i in range(gt.shape[-2]):
        for j in range(gt.shape[-1]):
            p, g = pred[:, :, i, j], gt[:, :, i, j]
            g, p = g / g.max(), p / p.max()
            psnr.append(peak_signal_noise_ratio(g, p, data_range=g.max()))
            ssim.append(structural_similarity(g, p, data_range=g.max()))
            nmse.append(np.linalg.norm(g - p) ** 2 / np.linalg.norm(g) ** 2)
    return float(np.mean(psnr)), float(np.mean(ssim)), float(np.mean(nmse))
