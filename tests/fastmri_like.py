"""Files with the real fastMRI download's shapes, layout and header quirks, made in seconds.

The content is a smooth random phantom seen by smooth complex coil maps (not anatomy): what
matters here is every shape, attribute and header field the pipeline reads. Real shapes:

* knee multi-coil: 15 coils, 640 x 368 and 640 x 372 k-space, 320 x 320 RSS targets, a header
  whose phase-encode limits leave unacquired columns at the edge;
* brain multi-coil: 640 x 320 with 16 coils and 768 x 396 with 20 coils, 320 x 320 targets, and
  a "FLAIR_203"-like 640 x 264 file whose 320 x 320 target is wider than its image;
* a non-square target (320 x 288) as some brain volumes have;
* test files: k-space already masked, with ``mask``, ``acceleration`` and
  ``num_low_frequency`` and no target.

``scale`` divides every size, so the default test suite can run the same layout small.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import h5py
import numpy as np
from fastmri.data.subsample import create_mask_for_mask_type

NS = "http://www.ismrm.org/ISMRMRD"


def _header(height: int, width: int, recon: tuple[int, int], enc_y: int, center: int, maximum: int) -> bytes:
    root = ElementTree.Element("ismrmrdHeader", xmlns=NS)
    enc = ElementTree.SubElement(root, "encoding")

    def node(parent, tag, **children):
        el = ElementTree.SubElement(parent, tag)
        for k, v in children.items():
            ElementTree.SubElement(el, k).text = str(v)
        return el

    encoded = ElementTree.SubElement(enc, "encodedSpace")
    node(encoded, "matrixSize", x=height, y=enc_y, z=1)
    recon_space = ElementTree.SubElement(enc, "reconSpace")
    node(recon_space, "matrixSize", x=recon[0], y=recon[1], z=1)
    limits = ElementTree.SubElement(enc, "encodingLimits")
    node(limits, "kspace_encoding_step_1", minimum=0, maximum=maximum, center=center)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def _fft2c(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _ifft2c(k: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _smooth(rng: np.random.Generator, shape: tuple[int, int], knots: int = 6) -> np.ndarray:
    coarse = rng.standard_normal((knots, knots))
    rows = np.linspace(0, knots - 1, shape[0])
    cols = np.linspace(0, knots - 1, shape[1])
    r0, c0 = np.clip(rows.astype(int), 0, knots - 2), np.clip(cols.astype(int), 0, knots - 2)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    return ((1 - fr) * (1 - fc) * coarse[r0][:, c0] + fr * (1 - fc) * coarse[r0 + 1][:, c0]
            + (1 - fr) * fc * coarse[r0][:, c0 + 1] + fr * fc * coarse[r0 + 1][:, c0 + 1])


def write_volume(
    path: Path,
    *,
    slices: int,
    coils: int,
    shape: tuple[int, int],
    target: tuple[int, int] | None,
    challenge: str = "multicoil",
    acquisition: str = "AXT2",
    padding: tuple[int, int] | None = None,
    mask: tuple[float, int] | None = None,
    seed: int = 0,
    write_max: bool = True,
    recon: tuple[int, int] = (320, 320),
) -> None:
    """One fastMRI-format volume.

    Args:
        shape: k-space (H, W).
        target: target (rows, cols), or None for a test file (then ``recon`` is the header's
            reconstruction size).
        padding: (left, right) acquired columns, written into the header (None: all).
        mask: (centre fraction, acceleration): store an equispaced mask and mask the k-space
            with it, as the test/challenge files are.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - height / 2) / (0.3 * height)) ** 2 + ((xx - width / 2) / (0.42 * width)) ** 2 < 1
    kspace = np.zeros((slices, coils, height, width), np.complex64)
    for s in range(slices):
        image = inside * (1.0 + 0.5 * _smooth(rng, shape)) * np.exp(1j * _smooth(rng, shape))
        maps = np.stack([np.exp(_smooth(rng, shape) * 0.5 + 1j * _smooth(rng, shape)) for _ in range(coils)])
        noise = (rng.standard_normal((coils, height, width)) + 1j * rng.standard_normal((coils, height, width))) * 0.02
        kspace[s] = (_fft2c(image[None] * maps) * 1e-4 + noise * 1e-4).astype(np.complex64)
    left, right = padding or (0, width)
    kspace[..., :left] = 0
    kspace[..., right:] = 0
    with h5py.File(path, "w") as hf:
        if target is not None:
            images = np.abs(_ifft2c(kspace))
            rss = np.sqrt((images**2).sum(1))
            rows, cols = target
            top = (height - rows) // 2
            if cols <= width:
                crop = rss[:, top:top + rows, (width - cols) // 2:(width - cols) // 2 + cols]
            else:  # the FLAIR_203 case: a target wider than the image, as the scanner made it
                crop = np.zeros((slices, rows, cols), np.float32)
                crop[:, :, (cols - width) // 2:(cols - width) // 2 + width] = rss[:, top:top + rows]
            key = "reconstruction_rss" if challenge == "multicoil" else "reconstruction_esc"
            hf.create_dataset(key, data=crop.astype(np.float32))
            if write_max:
                hf.attrs["max"] = float(crop.max())
        if mask is not None:
            fraction, acc = mask
            column_mask, num_low = create_mask_for_mask_type("equispaced_fraction", [fraction], [acc])(
                (1, width, 1), seed=tuple(map(ord, path.name)))
            column_mask = column_mask.reshape(-1).numpy()
            kspace = kspace * column_mask
            hf.create_dataset("mask", data=column_mask.astype(np.float32))
            hf.attrs["acceleration"] = acc
            hf.attrs["num_low_frequency"] = int(num_low)
        data = kspace[:, 0] if challenge == "singlecoil" else kspace
        hf.create_dataset("kspace", data=data)
        # fastMRI's reading: left = enc_y // 2 - center, right = left + maximum + 1.
        hf.create_dataset("ismrmrd_header", data=_header(height, width, target or recon, enc_y=width,
                                                         center=width // 2 - left, maximum=right - left - 1))
        hf.attrs["acquisition"] = acquisition
        hf.attrs["patient_id"] = f"fake-{seed}"


def _s(size: int, scale: int) -> int:
    return max(8, size // scale)


def write_download(root: Path, scale: int = 1, slices: int = 2) -> dict[str, Path]:
    """A knee and a brain "download" with the real shapes (divided by ``scale``).

    Returns:
        ``{"knee": root/knee, "brain": root/brain}``, each with ``multicoil_train``,
        ``multicoil_val`` and ``multicoil_test`` (masked files without targets).
    """
    s = lambda n: _s(n, scale)  # noqa: E731
    knee, brain = root / "knee", root / "brain"
    for split in ("train", "val", "test"):
        for top in (knee, brain):
            (top / f"multicoil_{split}").mkdir(parents=True, exist_ok=True)
    coils = {15: max(2, 15 // scale), 16: max(2, 16 // scale), 20: max(2, 20 // scale)}
    seed = 0
    for split in ("train", "val"):
        for name, width, pad in (("file1000001.h5", 368, None), ("file1000002.h5", 372, (s(17), s(356)))):
            seed += 1
            write_volume(knee / f"multicoil_{split}" / f"{split}_{name}", slices=slices, coils=coils[15],
                         shape=(s(640), s(width)), target=(s(320), s(320)), acquisition="CORPD_FBK",
                         padding=pad, seed=seed)
        for name, shape, n, target, acq in (
            ("file_brain_AXT2_200_2000001.h5", (640, 320), 16, (320, 320), "AXT2"),
            ("file_brain_AXT1POST_201_6000001.h5", (768, 396), 20, (320, 320), "AXT1POST"),
            ("file_brain_AXFLAIR_203_6000002.h5", (640, 264), 16, (320, 320), "AXFLAIR"),
            ("file_brain_AXT2_205_2000003.h5", (640, 320), 16, (320, 288), "AXT2"),
        ):
            seed += 1
            write_volume(brain / f"multicoil_{split}" / f"{split}_{name}", slices=slices, coils=coils[n],
                         shape=(s(shape[0]), s(shape[1])), target=(s(target[0]), s(target[1])),
                         acquisition=acq, seed=seed, write_max=(split == "train"))
    for top, shapes in ((knee, [((640, 368), 15)]), (brain, [((640, 320), 16), ((640, 264), 16)])):
        for i, (shape, n) in enumerate(shapes):
            for acc, fraction in ((4, 0.08), (8, 0.04)):
                seed += 1
                write_volume(top / "multicoil_test" / f"test_{i}_{acc}x.h5", slices=slices, coils=coils[n],
                             shape=(s(shape[0]), s(shape[1])), target=None, mask=(fraction, acc), seed=seed,
                             recon=(s(320), s(320)))
    return {"knee": knee, "brain": brain}
