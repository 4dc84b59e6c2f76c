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
    header: bytes | None = None,
    amplitude: float = 1e-4,
    noise_seed: int | None = None,
    noise: float = 0.02,
) -> None:
    """One fastMRI-format volume.

    Args:
        shape: k-space (H, W).
        target: target (rows, cols), or None for a test file (then ``recon`` is the header's
            reconstruction size).
        padding: (left, right) acquired columns, written into the header (None: all).
        header: the ISMRMRD header to store instead (its limits must give ``padding``).
        amplitude: k-space scale (fastMRI's targets are near 1e-4, M4Raw's near 100).
        noise: the noise's standard deviation per coil, relative to the image (about 1).
        noise_seed: draw the noise from its own stream (a repetition: the image and coils of
            ``seed``, noise of its own); None draws it from ``seed``'s.
        mask: (centre fraction, acceleration): store an equispaced mask and mask the k-space
            with it, as the test/challenge files are.
    """
    rng = np.random.default_rng(seed)
    noise_rng = rng if noise_seed is None else np.random.default_rng([seed, noise_seed])
    height, width = shape
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - height / 2) / (0.3 * height)) ** 2 + ((xx - width / 2) / (0.42 * width)) ** 2 < 1
    kspace = np.zeros((slices, coils, height, width), np.complex64)
    for s in range(slices):
        image = inside * (1.0 + 0.5 * _smooth(rng, shape)) * np.exp(1j * _smooth(rng, shape))
        maps = np.stack([np.exp(_smooth(rng, shape) * 0.5 + 1j * _smooth(rng, shape)) for _ in range(coils)])
        noise_image = (noise_rng.standard_normal((coils, height, width)) + 1j * noise_rng.standard_normal((coils, height, width))) * noise
        kspace[s] = (_fft2c(image[None] * maps) * amplitude + noise_image * amplitude).astype(np.complex64)
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
        hf.create_dataset("ismrmrd_header", data=header or _header(height, width, target or recon, enc_y=width,
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


def m4raw_header(stem: str, others: list[str], size: int, center: int, maximum: int, coils: int) -> bytes:
    """M4Raw's header as its files have it (the tutorial prints 2022061003_T201's): ElementTree's
    ``ns0:`` prefixes, 256 x 256 encoded and recon matrices, phase-encode limits 0..195 centred
    at 97 (fastMRI's reading: columns 31..226 acquired), and ``repetitionInformation`` naming
    the other repetitions, with fields the pipeline does not read (vendor, field strength)."""
    tag = lambda name: f"{{{NS}}}{name}"  # noqa: E731
    root = ElementTree.Element(tag("ismrmrdHeader"))

    def add(parent, name, text=None, **children):
        el = ElementTree.SubElement(parent, tag(name))
        if text is not None:
            el.text = str(text)
        for k, v in children.items():
            ElementTree.SubElement(el, tag(k)).text = str(v)
        return el

    study = add(root, "studyInformation", studyUID=stem.split("_")[0])
    del study
    add(root, "measurementInformation", measurementID=stem, patientPosition="HFS", protocolName="FSE(Sat) 5mmT--V")
    add(root, "acquisitionSystemInformation", systemVendor=" XinGaoYi Medical Equipment Co.,Ltd.",
        systemModel="XGY OPER-0.3", systemFieldStrength_T=0.3, acquisitionType="2D", receiverChannels=coils)
    enc = add(root, "encoding")
    for space in ("encodedSpace", "reconSpace"):
        sp = add(enc, space)
        add(sp, "matrixSize", x=size, y=size, z=1)
        add(sp, "fieldOfView_mm", x=240.0, y=240.0, z=5.0)
    limits = add(enc, "encodingLimits")
    add(limits, "kspace_encoding_step_1", minimum=0, maximum=maximum, center=center)
    add(limits, "slice", minimum=0, maximum=18, center=0)
    add(enc, "trajectory", "cartesian")
    dims = add(root, "kspaceDimension")
    for order, name in enumerate(("Slice", "Coil", "PE", "FE")):
        add(dims, "Dim", DimName=name, DimOrder=order)
    rep = add(root, "repetitionInformation", RepetitionGroupID=stem, OtherRepetitions=len(others))
    for i, other in enumerate(others):
        add(rep, "repetitionLabel", repetitionID=i + 2, MeasurementID=other, dataRangeforMetrics=120.0)
    return ElementTree.tostring(root, encoding="utf-8")


# Subjects per split, each with its contrasts' repetitions (M4Raw's: T1 x3, T2 x3, FLAIR x2).
M4RAW_SUBJECTS = {
    "train": {"2022061001": {"T1": 3, "T2": 3, "FLAIR": 2}},
    "val": {"2022061002": {"T1": 2, "FLAIR": 2}},
    "test": {"2022061003": {"T2": 3, "FLAIR": 1}},
}
M4RAW_ACQUISITIONS = {"T1": "AXT1", "T2": "AXT2", "FLAIR": "AXFLAIR"}


def write_m4raw(root: Path, scale: int = 1) -> Path:
    """An M4Raw "download" with its real shapes (divided by ``scale``): ``multicoil_{train,val,
    test}`` of ``<subject>_<contrast><NN>.h5`` files, kspace (18, 4, 256, 256) complex64,
    reconstruction_rss (18, 256, 256), its header and attributes (``acquisition``, ``max``,
    ``patient_id``; no ``norm``), targets near 100 as M4Raw's are. The repetitions of a group
    share their anatomy and coils and have their own noise (a low SNR, as a single low-field
    repetition's), as repeated scans do."""
    size = _s(256, scale)
    center, maximum = 97 // scale, 195 // scale
    left = size // 2 - center
    seed = 100
    for split, subjects in M4RAW_SUBJECTS.items():
        folder = root / f"multicoil_{split}"
        folder.mkdir(parents=True, exist_ok=True)
        for subject, contrasts in subjects.items():
            for contrast, count in contrasts.items():
                seed += 1
                stems = [f"{subject}_{contrast}{k:02d}" for k in range(1, count + 1)]
                for k, stem in enumerate(stems):
                    write_volume(folder / f"{stem}.h5", slices=18, coils=4, shape=(size, size), target=(size, size),
                                 acquisition=M4RAW_ACQUISITIONS[contrast], padding=(left, left + maximum + 1),
                                 seed=seed, noise_seed=k, amplitude=1.0, noise=0.2,
                                 header=m4raw_header(stem, stems[:k] + stems[k + 1:], size, center, maximum, 4))
    return root
