"""Calgary-Campinas (CC359) multi-channel: reading its volumes and converting them to
fastMRI-layout volumes of 2-D ky-kz planes.

The download (Calgary-Campinas-359 v1.0, ``Raw-data/Multi-channel/12-channel``, as the MC-MRRec
challenge distributed it) holds ``train/`` and ``val/`` (fully sampled), ``Test-R=5/`` and
``Test-R=10/`` (undersampled, no reference) and the challenge's masks
``poisson_sampling/R5_218x170.npy`` (and 174, 180; R10), each ``(masks, 218, W)``. Every file is
one 3-D T1 scan, ``kspace`` float32 ``(slices, 218, W, 24)``: the readout already inverse
Fourier transformed into the 256 sagittal ``slices``, the ky-kz plane of each, and 12 coils with
their real and imaginary parts interleaved on the last axis (DIRECT's ``CalgaryCampinasDataset``
reads it so). Its zero frequency lies in the middle of the plane (the challenge's masks centre
their calibration disc of radius 18 there) and its own code reconstructs with the uncentred
inverse FFT, ``ifft2(kspace)``; the last 15 % of kz (columns from ``ceil(0.85 W)``) is never
acquired (partial Fourier), and is zeroed as DIRECT zeroes it.

Conversion writes each scan as a fastMRI-layout volume, ``kspace`` complex64 ``(slices, 12,
218, W)`` in mrirecon's centred convention: the k-space whose centred inverse FFT has the
magnitude of the image the dataset's own uncentred ``ifft2`` gives (for these even sizes, the
same samples up to a sign each, :func:`to_centred_kspace`: the masks' points stay where they are). The reference is the RSS of those
coil images (the challenge's), the header's phase-encode limits end at ``ceil(0.85 W)`` so that
no mask samples the partial-Fourier band, and the test files carry their 2-D ``mask``.
Volumes are converted slice by slice (a real one is 0.9 GB) into a staging folder that is
swapped in whole.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import h5py
import numpy as np

from mrirecon.core import atomic
from mrirecon.core.operator import ifft2c_numpy
from mrirecon.core.plane_masks import acquired_columns
from mrirecon.data import ismrmrd
from mrirecon.data.volumes import PLANE_LABEL_TOLERANCE, check_distinct_sources, kspace_fingerprint, list_volume_files
from mrirecon.errors import UserError

CHALLENGE = "multicoil"  # the 12-channel data; the single-channel set is magnitude images only
ACCELERATIONS = (5, 10)
PARTIAL_FOURIER = 0.15  # kz not acquired, at the end of the last axis
CALIBRATION_RADIUS = 18.0  # the challenge's calibration disc, in samples
PLANE_SIZES = ((218, 170), (218, 174), (218, 180))
ACQUISITION = "CC359_T1_3D"
# Folders of a download: the fully sampled sets and the challenge's undersampled test sets.
_FULL_FOLDERS = {"train": "train", "val": "val"}
_TEST_FOLDER = re.compile(r"test-r=(\d+)$", re.IGNORECASE)
MASK_FOLDER = "poisson_sampling"
_SEARCH_DEPTH = 5  # how deep under the given folder its sets are looked for
_SLICES_PER_READ = 16  # slices converted at a time: a real volume is 0.9 GB


@dataclass(frozen=True)
class ScanFile:
    """One CC359 file: its set (``train``, ``val`` or ``test``) and, for the challenge's test
    sets, the acceleration its folder names."""

    path: Path
    set_name: str
    acceleration: Optional[int] = None


def _set_of(folder: Path) -> tuple[str, Optional[int]] | None:
    name = folder.name.lower()
    if name in _FULL_FOLDERS:
        return _FULL_FOLDERS[name], None
    match = _TEST_FOLDER.match(name)
    return ("test", int(match.group(1))) if match else None


def has_volume_files(folder: Path) -> bool:
    """Whether ``folder`` holds a file named ``*.h5`` in any case (``*.H5`` too, which
    :func:`list_volume_files` then refuses rather than skip)."""
    try:
        return any(p.suffix.lower() == ".h5" for p in folder.iterdir())
    except OSError:
        return False


def find_set_folders(root: Path) -> dict[tuple[str, Optional[int]], Path]:
    """The download's set folders under ``root`` (``train``, ``val``, ``Test-R=5``, ...; any
    case, up to a few levels down), by (set, acceleration); empty when there are none."""
    root = Path(root)
    found: dict[tuple[str, Optional[int]], Path] = {}
    own = _set_of(root)
    if own is not None and has_volume_files(root):  # a set folder itself (.../12-channel/train)
        return {own: root}
    level = [root]
    for _ in range(_SEARCH_DEPTH):
        following = []
        for folder in level:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                continue
            for child in children:
                key = _set_of(child)
                if key is not None and has_volume_files(child):
                    if key in found:  # 12-channel/train beside 32-channel/train: which is meant?
                        raise UserError(f"{root}: two {child.name}/ folders, {found[key]} and {child}; give the "
                                        "folder of one set of scans (Raw-data/Multi-channel/12-channel)")
                    found[key] = child
                else:
                    following.append(child)
        if found:
            return found
        level = following
    return found


def find_scan_files(root: Path) -> list[ScanFile]:
    """Every ``*.h5`` of the download's sets under ``root``.

    Raises:
        UserError: ``root`` is not a folder or holds no set folder with files; a set folder
            holds a ``*.H5``, a broken link or one file under two names (as
            :func:`list_volume_files` refuses them: each would silently leave a scan out or in twice).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    folders = find_set_folders(root)
    if not folders:
        raise UserError(f"{root}: no Calgary-Campinas sets (expected folders train/, val/ or Test-R=5/ of .h5 files, "
                        "as in Raw-data/Multi-channel/12-channel)")
    return [ScanFile(path, set_name, acc) for (set_name, acc), folder in sorted(
        folders.items(), key=lambda item: (item[0][0], item[0][1] or 0)) for path in list_volume_files(folder)]


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as err:
        reason = str(err).split("(")[0].strip().rstrip(",") or "unreadable"
        raise UserError(f"{path}: not a readable HDF5 file ({reason})") from None


def _kspace_dataset(hf: h5py.File, path: Path) -> h5py.Dataset:
    """The ``kspace`` dataset, its rank, type and channel axis checked from the metadata alone."""
    if "kspace" not in hf or not isinstance(hf["kspace"], h5py.Dataset):
        raise UserError(f"{path}: no 'kspace' dataset (it holds {', '.join(sorted(hf)) or 'none'})")
    data = hf["kspace"]
    if data.ndim != 4:
        raise UserError(f"{path}: kspace has shape {data.shape}, expected 4 dimensions (slices, ky, kz, 2 x coils)")
    if not np.issubdtype(data.dtype, np.floating):
        raise UserError(f"{path}: kspace has dtype {data.dtype}, expected real floats with real and imaginary parts "
                        "interleaved on the last axis")
    if data.size == 0 or data.shape[-1] % 2:
        raise UserError(f"{path}: kspace has shape {data.shape}: its last axis must hold real and imaginary parts "
                        "of each coil (an even number, 24 for 12 coils)")
    return data


def looks_like_scan(path: Path) -> bool:
    """Whether a file holds k-space as the dataset stores it (real floats, 4 dimensions), as
    opposed to a fastMRI-layout volume (complex) in a folder named like a set."""
    try:
        with h5py.File(path, "r") as hf:
            data = hf.get("kspace")
            return isinstance(data, h5py.Dataset) and data.ndim == 4 and np.issubdtype(data.dtype, np.floating)
    except OSError:
        return False


def scan_fingerprint(path: Path) -> str:
    """The file's :func:`~mrirecon.data.volumes.kspace_fingerprint` (one small read): a copy of
    a scan shares it, whatever its name or folder."""
    with _open(path) as hf:
        return kspace_fingerprint(_kspace_dataset(hf, path))


def scan_shape(path: Path) -> dict[str, int]:
    """Slices, ky, kz and coils of a CC359 file, from its metadata alone."""
    with _open(path) as hf:
        slices, ky, kz, parts = _kspace_dataset(hf, path).shape
    return {"slices": slices, "ky": ky, "kz": kz, "coils": parts // 2}


def to_centred_kspace(raw: np.ndarray, path: Path | str = "") -> np.ndarray:
    """``(slices, ky, kz, 2C)`` interleaved floats of the dataset to mrirecon's k-space,
    complex64 ``(slices, C, ky, kz)``, with the partial-Fourier columns zeroed.

    The dataset's own ``ifft2(kspace)`` gives its image times a checkerboard phase
    ``(-1)^(y+z)`` (its zero frequency lies in the middle, not where the uncentred FFT puts it);
    the centred FFT of the image without that phase is, for even sizes, the same k-space times
    ``(-1)^(ky+kz)`` (up to one global sign). So this is one product: every sample stays where
    the challenge's masks expect it, unsampled ones stay exactly zero, and the centred inverse
    FFT has the magnitude of the dataset's own reconstruction.

    Raises:
        UserError: NaN or Inf values, or an odd plane size (none of the dataset's).
    """
    if not np.isfinite(raw).all():
        raise UserError(f"{path}: kspace contains NaN or Inf values")
    rows, cols = raw.shape[1:3]
    if rows % 2 or cols % 2:
        raise UserError(f"{path}: planes of {rows}x{cols}: odd sizes are not Calgary-Campinas' (218 x 170, 174, 180)")
    kspace = (raw[..., 0::2] + 1j * raw[..., 1::2]).astype(np.complex64).transpose(0, 3, 1, 2)
    checkerboard = 1.0 - 2.0 * ((np.arange(rows)[:, None] + np.arange(cols)[None, :]) % 2)
    kspace = kspace * checkerboard.astype(np.float32)
    kspace[..., acquired_columns(cols, PARTIAL_FOURIER):] = 0
    return np.ascontiguousarray(kspace, dtype=np.complex64)


def _check_centre(kspace: np.ndarray, path: Path) -> None:
    """Refuses k-space whose energy does not peak near the middle of the plane: another layout
    (zero frequency in a corner) would be converted into wrapped images without a word."""
    energy = (np.abs(kspace) ** 2).sum(axis=(0, 1))
    row, col = np.unravel_index(int(np.argmax(energy)), energy.shape)
    rows, cols = energy.shape
    if abs(row - rows // 2) > max(2, rows // 16) or abs(col - cols // 2) > max(2, cols // 16):
        raise UserError(f"{path}: the k-space peaks at ({row}, {col}), not near the middle ({rows // 2}, {cols // 2}) "
                        "where Calgary-Campinas' zero frequency lies: not its layout")


def iter_scan(path: Path, chunk: int = _SLICES_PER_READ) -> Iterator[np.ndarray]:
    """A CC359 file's k-space in mrirecon's convention (:func:`to_centred_kspace`), a few
    slices at a time; the first chunk's centre is checked."""
    with _open(path) as hf:
        data = _kspace_dataset(hf, path)
        for start in range(0, data.shape[0], chunk):
            kspace = to_centred_kspace(np.asarray(data[start:start + chunk], dtype=np.float32), path)
            if start == 0:
                _check_centre(kspace, path)
            yield kspace


def rss_images(kspace: np.ndarray) -> np.ndarray:
    """The reference of fully sampled planes: RSS over coils of the centred inverse FFT,
    float32 ``(slices, ky, kz)``."""
    coil_images = np.abs(ifft2c_numpy(kspace)).astype(np.float64)
    return np.sqrt((coil_images**2).sum(axis=1)).astype(np.float32)


def sampled_points(path: Path) -> np.ndarray:
    """The 2-D mask of an undersampled (challenge test) file, recovered from its zeros as
    DIRECT's ``compute_masks.py`` recovers it: a point is sampled where any slice or coil holds
    a non-zero value. bool ``(ky, kz)``."""
    with _open(path) as hf:
        data = _kspace_dataset(hf, path)
        mask = np.zeros(data.shape[1:3], dtype=bool)
        for start in range(0, data.shape[0], _SLICES_PER_READ):
            mask |= (np.asarray(data[start:start + _SLICES_PER_READ]) != 0).any(axis=(0, 3))
    if not mask.any():
        raise UserError(f"{path}: kspace is zero everywhere: no sampled point")
    return mask


def read_published_masks(folder: Path, acceleration: int, shape: tuple[int, int]) -> np.ndarray | None:
    """The challenge's masks ``R{acc}_{ky}x{kz}.npy`` of ``folder``: bool ``(masks, ky, kz)``,
    or None where the folder has none for this shape.

    Raises:
        UserError: a file of another shape or with values other than 0/1, or whose masks do
            not sample the centre of the plane.
    """
    path = Path(folder) / f"R{acceleration}_{shape[0]}x{shape[1]}.npy"
    if not path.is_file():
        return None
    try:
        masks = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # EOFError: an empty file
        raise UserError(f"{path}: not a NumPy mask array ({err or 'empty'})") from None
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[1:] != tuple(shape) or masks.shape[0] == 0:
        raise UserError(f"{path}: shape {masks.shape}, expected (masks, {shape[0]}, {shape[1]})")
    if not (masks.dtype == bool or np.issubdtype(masks.dtype, np.number)) or not np.isin(masks, (0, 1)).all():
        raise UserError(f"{path}: holds values other than 0 and 1")
    masks = masks.astype(bool)
    # The partial-Fourier band holds no data in any scan: a mask that samples it there would
    # count points that are zero in the converted k-space (a higher rate than measured).
    masks[..., acquired_columns(shape[1], PARTIAL_FOURIER):] = False
    if not masks[:, shape[0] // 2, shape[1] // 2].all():
        raise UserError(f"{path}: a mask does not sample the centre of k-space; not the challenge's centred masks")
    check_mask_rate(masks, acceleration, path)
    return masks


def check_mask_rate(mask: np.ndarray, acceleration: int, where: Path | str) -> None:
    """Refuses a mask (or bank ``(n, H, W)``) whose rate over the plane is not the acceleration
    it is filed under (a 10x mask as R5, a 10x scan in Test-R=7), within the tolerance files'
    labels are held to (:data:`mrirecon.data.volumes.PLANE_LABEL_TOLERANCE`)."""
    masks = mask.reshape(-1, *mask.shape[-2:])
    for index, one in enumerate(masks):
        rate = one.size / max(int(one.sum()), 1)
        if not acceleration / PLANE_LABEL_TOLERANCE <= rate <= acceleration * PLANE_LABEL_TOLERANCE:
            which = f"mask {index}" if len(masks) > 1 else "its mask"
            raise UserError(f"{where}: {which} samples {rate:.3g}x of the plane, not the {acceleration}x it is filed under")


def published_mask_for(masks: np.ndarray, volume_name: str, seed: int) -> np.ndarray:
    """The published mask a test volume is given: one of the bank, fixed by its file name and
    ``seed`` (as a validation volume's drawn mask is fixed by its name)."""
    index = int(np.random.default_rng([seed, zlib.crc32(volume_name.encode())]).integers(len(masks)))
    return masks[index]


def split_volumes(names: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """File name -> ``train`` or ``val``: a seeded draw of whole volumes (at least one for val
    when a fraction is asked for and there are two or more)."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val_fraction: must lie in [0, 1), got {val_fraction}")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    count = max(int(round(val_fraction * len(order))), 1 if val_fraction > 0 and len(order) > 1 else 0)
    return {name: "val" if i < count else "train" for i, name in enumerate(order)}


def _write_volume(path: Path, source: ScanFile, shape: dict[str, int], chunks: Iterator[np.ndarray],
                  with_target: bool, mask: Optional[np.ndarray] = None, acceleration: Optional[float] = None) -> None:
    """One fastMRI-layout volume, written slice chunk by chunk (a real volume is 0.9 GB; the
    file lies in the staging folder until the whole dataset is swapped in)."""
    slices, rows, cols, coils = shape["slices"], shape["ky"], shape["kz"], shape["coils"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as hf:
        kspace = hf.create_dataset("kspace", (slices, coils, rows, cols), dtype=np.complex64,
                                   chunks=(1, coils, rows, cols))
        target = hf.create_dataset("reconstruction_rss", (slices, rows, cols), dtype=np.float32) if with_target else None
        start, peak, energy = 0, 0.0, 0.0
        for chunk in chunks:
            stop = start + chunk.shape[0]
            if target is not None:
                images = rss_images(chunk)
                target[start:stop] = images
                peak, energy = max(peak, float(images.max())), energy + float((images.astype(np.float64) ** 2).sum())
            if mask is not None:
                chunk = chunk * mask.astype(np.complex64)  # unsampled points are zero, as the chain expects
            kspace[start:stop] = chunk
            start = stop
        if target is not None:
            hf.attrs["max"] = peak
            hf.attrs["norm"] = math.sqrt(energy)
        if mask is not None:
            hf.create_dataset("mask", data=mask)
            hf.attrs["acceleration"] = float(acceleration)
        hf.create_dataset("ismrmrd_header", data=ismrmrd.header_bytes(
            rows, cols, (rows, cols), float(rows), 1.0, slices, coils, ACQUISITION,
            acquired_columns=acquired_columns(cols, PARTIAL_FOURIER)))
        hf.attrs["acquisition"] = ACQUISITION
        hf.attrs["patient_id"] = source.path.stem
        hf.attrs["source"] = str(source.path)


def convert_scans(root: Path, out: Path, val_fraction: float = 0.1, seed: int = 0, masks: Optional[Path] = None,
                  progress: Optional[Callable[[list], Iterable]] = None) -> dict[str, int]:
    """Converts a CC359 multi-channel download into a mrirecon dataset folder.

    ``train/`` becomes ``multicoil_train`` and ``multicoil_val`` (whole volumes, seeded); ``val/``
    becomes ``multicoil_test`` (fully sampled: the set DIRECT and the challenge report on) and,
    with the challenge's masks (``masks``, default ``<root>/.../poisson_sampling`` when there is
    one), ``multicoil_test_acc05`` and ``_acc10``: the same volumes undersampled by one published
    mask each, fixed by the file name, with the reference (test with
    ``data.test_split test_acc05``). ``Test-R=5/`` and ``Test-R=10/`` become
    ``multicoil_testset_acc05`` and ``_acc10``, each file with the mask recovered from its zeros
    and no reference (predict only). The folder is built beside ``out`` and swapped in whole.

    Returns:
        split folder name -> number of volumes written.

    Raises:
        UserError: a bad file (named), a mask folder that is not one, or no file at all.
    """
    root = Path(root)
    files = find_scan_files(root)
    if masks is None:
        found = sorted(p for p in root.rglob(MASK_FOLDER) if p.is_dir())
        masks = found[0] if found else None
    elif not Path(masks).is_dir():
        raise UserError(f"--masks {masks}: no such folder")
    # The challenge's test sets undersample the same scans at each rate: a name in Test-R=5/
    # and Test-R=10/ is one scan twice by design; anywhere else a shared scan is a copy.
    check_distinct_sources((f.path, scan_fingerprint(f.path), ("test", f.path.name) if f.acceleration else f.path)
                           for f in files)
    train = [f for f in files if f.set_name == "train"]
    splits = split_volumes([f.path.name for f in train], val_fraction, seed)
    plan: list[tuple[str, ScanFile, Optional[np.ndarray], Optional[int]]] = []
    shapes = {f.path: scan_shape(f.path) for f in files}
    for f in files:
        if f.set_name == "train":
            plan.append((splits[f.path.name], f, None, None))
        elif f.set_name == "val":
            plan.append(("test", f, None, None))
            shape = shapes[f.path]
            for acc in ACCELERATIONS if masks is not None else ():
                bank = read_published_masks(masks, acc, (shape["ky"], shape["kz"]))
                if bank is None:  # else test_acc05 would silently lack this volume
                    raise UserError(f"{masks}: no R{acc}_{shape['ky']}x{shape['kz']}.npy for {f.path} (the challenge's "
                                    "masks are 218 x 170, 174 and 180)")
                plan.append((f"test_acc{acc:02d}", f, published_mask_for(bank, f.path.name, seed), acc))
        else:
            mask = sampled_points(f.path)
            check_mask_rate(mask, f.acceleration, f.path)
            plan.append((f"testset_acc{f.acceleration:02d}", f, mask, f.acceleration))
    counts: dict[str, int] = {}
    steps = progress(plan) if progress else plan
    with atomic.staged_folder(out) as work:
        for split, f, mask, acc in steps:
            name = f"{CHALLENGE}_{split}"
            _write_volume(work / name / f.path.name, f, shapes[f.path], iter_scan(f.path),
                          with_target=f.set_name != "test", mask=mask, acceleration=acc)
            counts[name] = counts.get(name, 0) + 1
    return counts


def check_download(root: Path, check_values: bool = True) -> tuple[list[list[str]], list[tuple[Path, str]]]:
    """What ``mrirecon data check`` says of a CC359 download: one row per set (files, plane
    sizes, coils, slices) and every bad file with its reason; ``check_values`` reads every
    file's k-space as ``data convert`` does (NaN, a zero or off-centre k-space, a test file
    whose mask is not its folder's acceleration)."""
    groups: dict[Path, list[dict[str, int]]] = {}
    bad: list[tuple[Path, str]] = []
    for f in find_scan_files(root):
        try:
            shape = scan_shape(f.path)
            if check_values:
                for _ in iter_scan(f.path):
                    pass
                if f.acceleration is not None:
                    check_mask_rate(sampled_points(f.path), f.acceleration, f.path)
        except UserError as err:
            bad.append((f.path, str(err).partition(": ")[2] or str(err)))
            continue
        groups.setdefault(f.path.parent, []).append(shape)
    rows = []
    for folder, shapes in groups.items():
        def spread(key: str) -> str:
            values = sorted({shape[key] for shape in shapes})
            return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"

        sizes = sorted({f"{shape['ky']}x{shape['kz']}" for shape in shapes})
        rows.append([str(folder.relative_to(root)) if folder != Path(root) else ".", str(len(shapes)),
                     ", ".join(sizes), spread("coils"), spread("slices")])
    return rows, bad
