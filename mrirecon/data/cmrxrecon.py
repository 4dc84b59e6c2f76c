"""CMRxRecon 2023 cine: reading its MATLAB files and converting them to fastMRI-layout volumes.

The download is a tree, ``<root>/MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat``
(``SingleCoil`` beside it; ``AccFactor04|08|10`` beside ``FullSample``; ``ValidationSet`` and
``TestSet`` without ``FullSample``), as the organisers' ``ChallengeDataFormat/Format_cine.txt``
describes it. Each ``.mat`` is MATLAB v7.3, which is HDF5: ``kspace_full`` (single-coil
``kspace_single_full``) or ``kspace_subNN`` holds complex k-space as a compound of ``real`` and
``imag``, with MATLAB's dimensions (kx, ky, coils, slices, frames), which h5py sees reversed:
(frames, slices, coils, ky, kx). ``cine_sax_mask.mat`` holds ``mask04|08|10`` (kx, ky), the same
for every coil, slice and frame; the central 24 ky lines are always sampled.

Today's networks are 2-D: every (slice, frame) image of a file becomes one slice of a
fastMRI-layout volume, ``kspace`` (slices x frames, coils, kx, ky), slice ``z * frames + t``, so
that the undersampled ky runs along the columns as in fastMRI's files. The target is the RSS
(single-coil: the magnitude) of the centred, orthonormal inverse FFT of the fully sampled
k-space, as the organisers' ``Evaluation/loadFun.py`` computes it (for even sizes, which all of
CMRxRecon's are, their shift order equals fastMRI's). The files keep ``cine_slices`` and
``cine_frames`` so that a 2-D+time network, or the challenge's ranking (central 2 slices, first
3 frames), can recover the (slice, frame) grid.

Conversion writes a copy: the converted volumes take about the space of the ``.mat`` files
they come from (complex64 either way), and each file is built in memory (about 2.5 times its
size) before one plain write.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional

import h5py
import numpy as np

from mrirecon.core import atomic
from mrirecon.core.operator import ifft2c_numpy
from mrirecon.data import ismrmrd
from mrirecon.data.volumes import check_distinct_sources, kspace_fingerprint
from mrirecon.errors import UserError

Challenge = Literal["singlecoil", "multicoil"]
COIL_FOLDERS = {"multicoil": "MultiCoil", "singlecoil": "SingleCoil"}
VIEWS = ("cine_lax", "cine_sax")
ACCELERATIONS = (4, 8, 10)
# The challenge's sets: TrainingSet has fully sampled k-space; the others only undersampled.
SETS = ("TrainingSet", "ValidationSet", "TestSet")
_ACC_FOLDER = re.compile(r"AccFactor(\d+)$")
# The MATLAB file header h5py must not mistake for data: v7.3 files begin with 512 bytes of it.
MATLAB_USERBLOCK = 512


def kspace_key(challenge: Challenge, acceleration: Optional[int]) -> str:
    """The variable holding a file's k-space: ``kspace_full``, ``kspace_sub04``, or the
    single-coil ``kspace_single_full``, ``kspace_single_sub04``."""
    prefix = "kspace_single_" if challenge == "singlecoil" else "kspace_"
    return prefix + ("full" if acceleration is None else f"sub{acceleration:02d}")


@dataclass(frozen=True)
class CineFile:
    """One ``cine_{lax,sax}.mat`` of the tree: its set, sampling (None: FullSample), patient and view."""

    path: Path
    challenge: Challenge
    set_name: str
    acceleration: Optional[int]
    patient: str
    view: str

    @property
    def mask_path(self) -> Path:
        return self.path.with_name(f"{self.view}_mask.mat")

    @property
    def volume_name(self) -> str:
        """The converted volume's file name: ``P001_cine_sax.h5``."""
        return f"{self.patient}_{self.view}.h5"


def find_cine_files(root: Path, challenge: Challenge) -> list[CineFile]:
    """Every cine file under ``root`` (the download's top folder, holding ``MultiCoil``).

    Raises:
        UserError: ``root`` is not a folder or holds no cine file of the challenge.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    cine = root / COIL_FOLDERS[challenge] / "Cine"
    found = []
    for set_name in SETS:
        for sampling in sorted((cine / set_name).glob("*")) if (cine / set_name).is_dir() else []:
            match = _ACC_FOLDER.match(sampling.name)
            if sampling.name != "FullSample" and match is None:
                continue
            acceleration = int(match.group(1)) if match else None
            for patient in sorted(p for p in sampling.iterdir() if p.is_dir()):
                for view in VIEWS:
                    path = patient / f"{view}.mat"
                    if path.is_file():
                        found.append(CineFile(path, challenge, set_name, acceleration, patient.name, view))
    if not found:
        raise UserError(f"{root}: no CMRxRecon cine files (expected {COIL_FOLDERS[challenge]}/Cine/TrainingSet/"
                        "FullSample/P001/cine_sax.mat and the like)")
    return found


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as err:
        reason = str(err).split("(")[0].strip().rstrip(",") or "unreadable"
        raise UserError(f"{path}: not a MATLAB v7.3 (HDF5) file ({reason}); save it with save -v7.3") from None


def _cine_dataset(hf: h5py.File, path: Path, key: str, challenge: Challenge) -> h5py.Dataset:
    """The k-space variable, its presence, rank and type checked from the metadata alone."""
    if key not in hf:
        raise UserError(f"{path}: no '{key}' variable (it holds {', '.join(sorted(hf)) or 'none'})")
    data = hf[key]
    if not isinstance(data, h5py.Dataset):
        raise UserError(f"{path}: '{key}' is a group, not an array")
    ndim = 5 if challenge == "multicoil" else 4
    dims = "(kx, ky, coils, slices, frames)" if challenge == "multicoil" else "(kx, ky, slices, frames)"
    if data.ndim != ndim:
        raise UserError(f"{path}: '{key}' has {data.ndim} dimensions, expected {ndim} {dims} for {challenge}")
    compound = data.dtype.names is not None and {"real", "imag"} <= set(data.dtype.names)
    if not compound and not np.issubdtype(data.dtype, np.complexfloating):
        raise UserError(f"{path}: '{key}' has dtype {data.dtype}, expected complex values (a compound of real and imag)")
    if data.size == 0:
        raise UserError(f"{path}: '{key}' is empty {tuple(reversed(data.shape))}")
    return data


def cine_shape(path: Path, key: str, challenge: Challenge) -> dict[str, int]:
    """kx, ky, coils, slices and frames of a cine file's k-space, from its metadata alone."""
    with _open(path) as hf:
        shape = _cine_dataset(hf, path, key, challenge).shape
    frames, slices, *coils, ky, kx = shape
    return {"kx": kx, "ky": ky, "coils": coils[0] if coils else 1, "slices": slices, "frames": frames}


def cine_fingerprint(f: CineFile) -> str:
    """The file's :func:`~mrirecon.data.volumes.kspace_fingerprint` (one small read)."""
    with _open(f.path) as hf:
        return kspace_fingerprint(_cine_dataset(hf, f.path, kspace_key(f.challenge, f.acceleration), f.challenge))


def read_cine_kspace(path: Path, key: str, challenge: Challenge) -> tuple[np.ndarray, int, int]:
    """A cine file's k-space as 2-D slices: ``(slices * frames, [coils,] kx, ky)`` complex64,
    slice ``z * frames + t``; and the numbers of slices and frames.

    Raises:
        UserError: the variable is missing, not complex, of another rank, empty, not finite or
            all zeros.
    """
    with _open(path) as hf:
        data = _cine_dataset(hf, path, key, challenge)
        raw = data[()]
    # Inf times 1j warns (inf * 0); the values are refused just below, in one line.
    with np.errstate(invalid="ignore", over="ignore"):
        if raw.dtype.names is not None:
            kspace = (raw["real"] + 1j * raw["imag"]).astype(np.complex64)
        else:
            kspace = raw.astype(np.complex64)
    if not np.isfinite(kspace).all():
        raise UserError(f"{path}: '{key}' contains NaN or Inf values")
    if not kspace.any():
        # Its target would be black and every metric against it meaningless.
        raise UserError(f"{path}: '{key}' is all zeros (an empty or failed export)")
    frames, slices = kspace.shape[:2]
    # h5py's (frames, slices, [coils,] ky, kx) -> (slices, frames, [coils,] kx, ky) -> 2-D slices.
    order = (1, 0, 2, 4, 3) if challenge == "multicoil" else (1, 0, 3, 2)
    grid = np.ascontiguousarray(kspace.transpose(order))
    return grid.reshape(slices * frames, *grid.shape[2:]), int(slices), int(frames)


def read_cine_mask(path: Path, acceleration: int, kx: int, ky: int) -> np.ndarray:
    """The ky columns a ``cine_*_mask.mat`` samples at ``acceleration``, as a bool array (ky,).

    Raises:
        UserError: the file or variable is missing, of another shape, not 0/1, not the same
            for every kx (a mask that is not one of columns), or spaced for another acceleration
            (see :func:`outer_line_spacing`).
    """
    key = f"mask{acceleration:02d}"
    if not path.is_file():
        raise UserError(f"{path}: no such mask file (the organisers ship one beside each undersampled cine file)")
    with _open(path) as hf:
        if key not in hf or not isinstance(hf[key], h5py.Dataset):
            raise UserError(f"{path}: no '{key}' array")
        mask = np.asarray(hf[key][()])
    if mask.shape != (ky, kx):  # h5py sees MATLAB's (kx, ky) reversed
        raise UserError(f"{path}: '{key}' has shape {tuple(reversed(mask.shape))} (kx, ky), the k-space {(kx, ky)}")
    # A logical MATLAB mask (or h5py's bool) is as good as the organisers' 0/1 doubles.
    if mask.dtype != bool and (not np.issubdtype(mask.dtype, np.number) or not np.isin(mask, (0, 1)).all()):
        raise UserError(f"{path}: '{key}' holds values other than 0 and 1")
    columns = mask[:, 0] != 0
    if not (mask == mask[:, :1]).all():
        raise UserError(f"{path}: '{key}' differs along kx: not a mask of ky lines")
    if not columns.any():
        raise UserError(f"{path}: '{key}' samples no line")
    spacing = outer_line_spacing(columns)
    if spacing is not None and spacing != acceleration:
        # Its rate cannot tell: 24 calibration lines make an 8x mask of 246 lines sample 1/4.7.
        raise UserError(f"{path}: '{key}' samples every {spacing}th line outside its central ones: a mask for {spacing}x, "
                        f"filed as AccFactor{acceleration:02d} (its results would be labelled {acceleration}x)")
    return columns


def outer_line_spacing(columns: np.ndarray) -> Optional[int]:
    """The acceleration a CMRxRecon mask was drawn for: the most common step between its
    sampled ky lines outside the central run (the organisers sample every R-th line and the
    central 24); None where fewer than two lines lie outside it."""
    sampled = np.flatnonzero(columns)
    centre = len(columns) // 2
    start = stop = centre
    if columns[centre]:
        while start > 0 and columns[start - 1]:
            start -= 1
        while stop < len(columns) - 1 and columns[stop + 1]:
            stop += 1
    steps = np.concatenate([np.diff(sampled[sampled < start]), np.diff(sampled[sampled > stop])])
    if len(steps) == 0:
        return None
    values, counts = np.unique(steps, return_counts=True)
    return int(values[np.argmax(counts)])


def target_images(kspace: np.ndarray, challenge: Challenge) -> np.ndarray:
    """The reference of fully sampled 2-D slices: RSS over coils (single-coil: the magnitude)
    of the centred orthonormal inverse FFT, float32 (slices, kx, ky)."""
    images = np.abs(ifft2c_numpy(kspace))
    if challenge == "multicoil":
        images = np.sqrt((images.astype(np.float64) ** 2).sum(axis=1))
    return images.astype(np.float32)


def _volume_bytes(kspace: np.ndarray, challenge: Challenge, source: CineFile, slices: int, frames: int,
                  target: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None,
                  acceleration: Optional[int] = None) -> bytes:
    """One fastMRI-layout volume, built in memory (see :func:`mrirecon.evaluation.submission.write_reconstruction`
    for why) with the keys, header and attributes the rest of mrirecon reads."""
    rows, cols = kspace.shape[-2:]
    coils = kspace.shape[1] if challenge == "multicoil" else 1
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as hf:
        hf.create_dataset("kspace", data=kspace)
        if target is not None:
            key = "reconstruction_rss" if challenge == "multicoil" else "reconstruction_esc"
            hf.create_dataset(key, data=target)
            hf.attrs["max"] = float(target.max())
            hf.attrs["norm"] = float(np.linalg.norm(target.astype(np.float64)))
        if mask is not None:
            hf.create_dataset("mask", data=mask)
            hf.attrs["acceleration"] = int(acceleration)
        # CMRxRecon's files carry no geometry: the header gives the sizes the data code reads
        # (reconstruction size: the whole image; every ky line acquirable) and a 1 mm pixel.
        hf.create_dataset("ismrmrd_header", data=ismrmrd.header_bytes(
            rows, cols, (rows, cols), float(rows), 1.0, slices * frames, coils, source.view))
        hf.attrs["acquisition"] = source.view
        hf.attrs["patient_id"] = source.patient
        hf.attrs["cine_slices"] = slices
        hf.attrs["cine_frames"] = frames
        hf.attrs["source"] = str(source.path)
    return buffer.getvalue()


def cine_grid(path: Path, num_slices: int) -> tuple[int, int]:
    """``(slices, frames)`` of a converted volume: how its ``num_slices`` 2-D images (slice
    ``z * frames + t``) lie on the scan's (slice, frame) grid, from its ``cine_slices`` and
    ``cine_frames`` attributes.

    Raises:
        UserError: naming the file, when it has no such attributes (not converted from
            CMRxRecon) or they do not multiply to its number of images.
    """
    try:
        with h5py.File(path, "r") as hf:
            values = [hf.attrs.get(name) for name in ("cine_slices", "cine_frames")]
    except OSError as err:
        raise UserError(f"{path}: cannot read ({str(err).split('(')[0].strip()})") from None
    if any(v is None for v in values):
        raise UserError(f"{path}: no cine_slices/cine_frames attributes: not a volume converted from CMRxRecon "
                        "(mrirecon data convert --format cmrxrecon)")
    try:
        slices, frames = (int(v) for v in values)
        exact = all(float(v) == int(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        exact = False
    if not exact or slices < 1 or frames < 1 or slices * frames != num_slices:
        shown = [np.asarray(v).tolist() for v in values]
        raise UserError(f"{path}: cine_slices {shown[0]!r} x cine_frames {shown[1]!r} does not give its "
                        f"{num_slices} images")
    return slices, frames


def split_patients(patients: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Patient -> ``train``, ``val`` or ``test``: a seeded draw of whole patients (both views of
    a patient stay in one split), at least one patient per split asked for when there are enough."""
    for name, fraction in (("--val_fraction", val_fraction), ("--test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise UserError(f"{name}: must lie in [0, 1), got {fraction}")
    if val_fraction + test_fraction >= 1:
        raise UserError(f"--val_fraction {val_fraction} and --test_fraction {test_fraction} leave no training patient")
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    counts = [max(int(round(f * len(order))), 1 if f > 0 else 0) for f in (test_fraction, val_fraction)]
    if sum(counts) >= len(order):
        raise UserError(f"{len(order)} training patients cannot fill test, val and train splits; lower the fractions")
    splits = {p: "test" for p in order[:counts[0]]}
    splits.update({p: "val" for p in order[counts[0]:counts[0] + counts[1]]})
    splits.update({p: "train" for p in order[counts[0] + counts[1]:]})
    return splits


def convert_cine(root: Path, out: Path, challenge: Challenge = "multicoil", val_fraction: float = 0.1,
                 test_fraction: float = 0.1, seed: int = 0,
                 progress: Optional[Callable[[list], Iterable]] = None) -> dict[str, int]:
    """Converts a CMRxRecon cine tree into a mrirecon dataset folder.

    TrainingSet's fully sampled files become ``<challenge>_train|val|test`` (whole patients,
    seeded); its undersampled files of the test patients become ``<challenge>_test_accNN``,
    k-space and the organisers' masks with the fully sampled target (evaluate with
    ``data.test_split test_acc04``); ValidationSet's and TestSet's become
    ``<challenge>_validation_accNN`` and ``<challenge>_testset_accNN``, without targets (predict
    only). The folder is built beside ``out`` and swapped in whole.

    Returns:
        split folder name -> number of volumes written.
    """
    files = find_cine_files(root, challenge)
    full = [f for f in files if f.set_name == "TrainingSet" and f.acceleration is None]
    splits = split_patients(sorted({f.patient for f in full}), val_fraction, test_fraction, seed) if full else {}
    references = {(f.patient, f.view): f for f in full}
    plan: list[tuple[str, CineFile]] = []
    for f in files:
        if f.set_name == "TrainingSet":
            split = splits.get(f.patient)
            if f.acceleration is None:
                plan.append((split, f))
            elif split == "test" and (f.patient, f.view) in references:
                plan.append((f"test_acc{f.acceleration:02d}", f))
        else:
            name = "validation" if f.set_name == "ValidationSet" else "testset"
            plan.append((f"{name}_acc{f.acceleration:02d}", f))
    # A cine file's undersampled versions share its central lines, so a fingerprint may repeat
    # within one (set, patient, view); anywhere else it is a copy.
    read = {f.path: f for _, f in plan} | {references[f.patient, f.view].path: references[f.patient, f.view]
                                            for split, f in plan if split.startswith("test_acc")}
    check_distinct_sources((f.path, cine_fingerprint(f), (f.set_name, f.patient, f.view)) for f in read.values())
    counts: dict[str, int] = {}
    steps = progress(plan) if progress else plan
    with atomic.staged_folder(out) as work:
        for split, f in steps:
            key = kspace_key(challenge, f.acceleration)
            kspace, slices, frames = read_cine_kspace(f.path, key, challenge)
            target = mask = None
            if f.acceleration is None:
                target = target_images(kspace, challenge)
            else:
                mask = read_cine_mask(f.mask_path, f.acceleration, *kspace.shape[-2:])
                # The file's k-space is zero-filled already; keep only the sampled lines (the
                # chain masks what it reads, so unsampled lines must be zero, as they are).
                kspace = kspace * mask.astype(np.complex64)
                # Patient numbers restart in each set: P001 of ValidationSet is another person.
                reference = references.get((f.patient, f.view)) if f.set_name == "TrainingSet" else None
                if reference is not None:
                    full_kspace, full_slices, full_frames = read_cine_kspace(
                        reference.path, kspace_key(challenge, None), challenge)
                    if full_kspace.shape != kspace.shape:
                        raise UserError(f"{f.path}: '{key}' has shape {kspace.shape} as 2-D slices, its FullSample "
                                        f"file {reference.path} {full_kspace.shape}")
                    target = target_images(full_kspace, challenge)
            data = _volume_bytes(kspace, challenge, f, slices, frames, target, mask, f.acceleration)
            atomic.write_bytes(work / f"{challenge}_{split}" / f.volume_name, data)
            counts[f"{challenge}_{split}"] = counts.get(f"{challenge}_{split}", 0) + 1
    return counts


def check_cine_tree(root: Path, challenge: Challenge,
                    check_values: bool = True) -> tuple[list[list[str]], list[tuple[Path, str]]]:
    """What ``mrirecon data check`` says of a CMRxRecon download: one row per set and sampling
    (files, patients, k-space sizes, coils, slices, frames), and every bad file with its reason,
    from the files' metadata and masks; ``check_values`` reads every file's k-space as ``data
    convert`` does (NaN, Inf, all zeros)."""
    groups: dict[tuple[str, str], list[tuple[CineFile, dict[str, int]]]] = {}
    bad: list[tuple[Path, str]] = []
    for f in find_cine_files(root, challenge):
        sampling = "FullSample" if f.acceleration is None else f"AccFactor{f.acceleration:02d}"
        try:
            shape = cine_shape(f.path, kspace_key(challenge, f.acceleration), challenge)
            if check_values:
                read_cine_kspace(f.path, kspace_key(challenge, f.acceleration), challenge)
            if f.acceleration is not None:
                read_cine_mask(f.mask_path, f.acceleration, shape["kx"], shape["ky"])
        except UserError as err:
            bad.append((f.path, str(err).partition(": ")[2] or str(err)))
            continue
        groups.setdefault((f.set_name, sampling), []).append((f, shape))
    rows = []
    for (set_name, sampling), entries in groups.items():
        def spread(key: str) -> str:
            values = sorted({shape[key] for _, shape in entries})
            return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"

        sizes = sorted({f"{shape['kx']}x{shape['ky']}" for _, shape in entries})
        rows.append([f"{COIL_FOLDERS[challenge]}/Cine/{set_name}/{sampling}", str(len(entries)),
                     str(len({f.patient for f, _ in entries})), ", ".join(sizes), spread("coils"), spread("slices"),
                     spread("frames")])
    return rows, bad
