"""Reading and validating fastMRI-format volumes (ours and the real download).

One HDF5 file per volume: ``kspace`` (slices, [coils,] H, W) complex, an optional target
(``reconstruction_esc`` single-coil, ``reconstruction_rss`` multi-coil), an ISMRMRD XML header
and attributes. Test/challenge files of the real download have no target but a ``mask``.

Metadata (shapes, padding, attributes, whether k-space and target are finite, and the target's
maximum over the scored region) is cached per file, keyed by the resolved path, size and
modification time, in ``~/.cache/mrirecon`` (or ``$MRIRECON_CACHE_DIR``). Filters are applied
after the cache lookup, so a cache can never skip a filter or serve another folder's files
(fastMRI's ``dataset_cache.pkl`` can: it is keyed by folder only and a hit skips the filters).
Training, evaluation and ``mrirecon data check`` share this one scan and cache.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal, NamedTuple

import h5py
import numpy as np
import torch

from mrirecon.core import atomic
from mrirecon.core.operator import center_crop, centred_sampled_square, contiguous_centre_width, evaluation_crop_size
from mrirecon.data import ismrmrd
from mrirecon.errors import UserError

Challenge = Literal["singlecoil", "multicoil"]
TARGET_KEYS = {"singlecoil": "reconstruction_esc", "multicoil": "reconstruction_rss"}
KSPACE_NDIM = {"singlecoil": 3, "multicoil": 4}
CACHE_VERSION = 7  # 3: mask, acceleration and target values validated; 4: k-space fingerprints; 5: no negative targets; 6: labels match masks; 7: 2-D masks


@dataclass(frozen=True)
class VolumeInfo:
    """What we need to know about one volume without reading its k-space again.

    Attributes:
        path: the HDF5 file.
        num_slices: number of slices.
        kspace_shape: shape of ``kspace``.
        target_key: name of the target dataset, or None (test/challenge files).
        target_shape: (rows, cols) of the target, or the header's recon size when there is none.
        padding: (left, right) columns actually acquired, from the header (fastMRI's formula).
        acquisition: the ``acquisition`` attribute (CORPD_FBK, AXT2, ...), "" when absent.
        fixed_mask: the file's own sampling mask (test/challenge files), or None: one value per
            column ``(W,)``, or a 2-D plane mask ``(H, W)`` as nested tuples (Calgary-Campinas).
        acceleration: the file's ``acceleration`` attribute, or None.
        target_max: per reconstruction size ``"<rows>x<cols>"``, the maximum of the target
            volume over the region scored at that size (the centre crop to that size, then to
            fastMRI's evaluation square): the data range of SSIM and PSNR, as
            ``fastmri.evaluate`` takes it from the target itself. Empty without a target.
        fingerprint: :func:`kspace_fingerprint` of the file, which a copy of it shares.
        target_files: the files whose targets, averaged, are this volume's target (repetitions
            of one scan, see :mod:`mrirecon.data.repetitions`); empty: its own file's.
    """

    path: Path
    num_slices: int
    kspace_shape: tuple[int, ...]
    target_key: str | None
    target_shape: tuple[int, int]
    padding: tuple[int, int]
    acquisition: str
    fixed_mask: tuple[bool, ...] | tuple[tuple[bool, ...], ...] | None = None
    acceleration: float | None = None
    target_max: dict[str, float] = field(default_factory=dict)
    fingerprint: str = ""
    target_files: tuple[Path, ...] = ()

    @property
    def num_coils(self) -> int:
        return self.kspace_shape[1] if len(self.kspace_shape) == 4 else 1

    @property
    def num_cols(self) -> int:
        return self.kspace_shape[-1]

    # Cached: read for every slice a worker loads, and a 2-D mask's nested tuples (218 x 170)
    # take milliseconds to convert. Not fields: the cache and equality see only ``fixed_mask``.
    @functools.cached_property
    def fixed_mask_array(self) -> np.ndarray | None:
        """The file's own mask as a read-only bool array ``(W,)`` or ``(H, W)``, or None."""
        if self.fixed_mask is None:
            return None
        mask = np.asarray(self.fixed_mask, dtype=bool)
        mask.setflags(write=False)
        return mask

    @functools.cached_property
    def fixed_num_low_frequencies(self) -> int:
        """The auto-calibration band of the file's own mask (0 without one): the central run of
        sampled columns, or a 2-D mask's centred fully sampled square."""
        if self.fixed_mask_array is None:
            return 0
        mask = torch.from_numpy(self.fixed_mask_array.copy())
        return int(centred_sampled_square(mask) if mask.ndim == 2 else contiguous_centre_width(mask))

    def reconstruction_size(self, crop_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """The image size this volume is reconstructed and scored at.

        ``crop_size`` (or the target's size), except for images narrower than that: then the
        square of the k-space width, as fastMRI's U-Net transform does for brain "FLAIR_203"
        files (640 x 264 k-space with 320 x 320 targets are reconstructed at 264 x 264).
        """
        rows, cols = crop_size or self.target_shape
        if self.num_cols < cols:
            rows = cols = self.num_cols
        return int(rows), int(cols)

    def data_range(self, crop_size: tuple[int, int] | None = None) -> float:
        """SSIM's and PSNR's data range at this reconstruction size (0.0 without a target)."""
        return self.target_max.get(size_key(self.reconstruction_size(crop_size)), 0.0)


def size_key(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def kspace_fingerprint(kspace: h5py.Dataset) -> str:
    """What identifies a volume's content, whatever its file's name or path: a hash of the
    k-space's shape, type and middle readout line of its middle slice (every coil).

    A copy of a file shares it (a volume listed twice, a training volume copied into the test
    split); two scans do not, as a measured line holds its own noise. One line, not every byte:
    it costs one small read per file, where hashing a multi-coil download would read it all.
    """
    middle = kspace[kspace.shape[0] // 2, ..., kspace.shape[-2] // 2, :]
    digest = hashlib.sha256(f"{kspace.dtype.str}|{tuple(kspace.shape)}|".encode())
    digest.update(np.ascontiguousarray(middle).tobytes())
    return digest.hexdigest()[:32]


def _all_finite(dataset: h5py.Dataset) -> bool:
    # Slice by slice so that a multi-GB multi-coil volume never sits in memory at once.
    return all(np.isfinite(dataset[i]).all() for i in range(dataset.shape[0]))


def _dataset(hf: h5py.File, key: str, path: Path) -> h5py.Dataset:
    """``hf[key]``, which must be a dataset (a group of that name is a file of another layout)."""
    node = hf[key]
    if not isinstance(node, h5py.Dataset):
        raise UserError(f"{path}: '{key}' is an HDF5 group, expected a dataset")
    return node


def _read_mask(hf: h5py.File, path: Path, rows: int, cols: int) -> tuple[bool, ...] | tuple[tuple[bool, ...], ...]:
    """The file's own mask: 0/1 (or boolean) values, one per k-space column ``(W,)``, or a 2-D
    mask over the k-space plane ``(H, W)`` (Calgary-Campinas' Poisson-disc masks)."""
    dataset = _dataset(hf, "mask", path)
    if not (dataset.dtype == bool or np.issubdtype(dataset.dtype, np.integer) or np.issubdtype(dataset.dtype, np.floating)):
        # h5py reads variable-length strings as dtype object, which names no text.
        kind = "text" if h5py.check_string_dtype(dataset.dtype) or dataset.dtype.kind in "SU" else f"dtype {dataset.dtype}"
        raise UserError(f"{path}: mask holds {kind}, expected 0/1 or boolean values")
    if dataset.ndim == 0:
        raise UserError(f"{path}: mask is a single value, expected one per k-space column, shape ({cols},), "
                        f"or a 2-D mask of the k-space plane, ({rows}, {cols})")
    if dataset.ndim not in (1, 2) or (dataset.ndim == 2 and tuple(dataset.shape) != (rows, cols)):
        # Reshaping (2, 19) or (38, 1) into 38 columns would guess a layout the file does not state.
        raise UserError(f"{path}: mask has shape {tuple(dataset.shape)}, expected one value per k-space column, "
                        f"shape ({cols},), or a 2-D mask of the k-space plane, ({rows}, {cols})")
    values = np.asarray(dataset[()])
    if values.shape[-1] != cols:
        raise UserError(f"{path}: mask has {values.shape[0]} values, kspace has {cols} columns")
    if not np.isin(values, (0, 1)).all():
        odd = values[~np.isin(values, (0, 1))][0]
        raise UserError(f"{path}: mask holds {odd.item()!r}, expected only 0/1 (or boolean) values")
    mask = values.astype(bool)
    if not mask.any():
        raise UserError(f"{path}: mask samples no {'column' if mask.ndim == 1 else 'point'}")
    if mask.ndim == 2:
        return tuple(tuple(bool(m) for m in row) for row in mask)
    return tuple(bool(m) for m in mask)


def _read_acceleration(attrs: h5py.AttributeManager, path: Path) -> float | None:
    """The file's ``acceleration`` attribute: one finite number of at least 1 (it labels results)."""
    if "acceleration" not in attrs:
        return None
    raw = attrs["acceleration"]
    value = np.asarray(raw)
    if value.ndim != 0 or not (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)) \
            or not np.isfinite(value) or value < 1:
        shown = (f"an array of shape {value.shape}" if value.ndim else
                 repr(raw.decode(errors="replace") if isinstance(raw, bytes) else value.item()))
        raise UserError(f"{path}: acceleration attribute is {shown}, expected one finite number of at least 1")
    return float(value)


# How far a file's acceleration label may lie from the rate its own mask samples at: fastMRI's
# and CMRxRecon's masks sample more than their label says (their calibration band: CMRxRecon's
# 10x about 47 of 246 lines, 5.2x; on small images the band weighs more), never 3 times as much.
LABEL_TOLERANCE = 3.0


# 2-D masks are counted over the whole plane (the partial-Fourier band as skipped, the calibration
# disc as sampled: how plane masks are labelled, docs/plane_masks.md): a label within 25 % of that.
PLANE_LABEL_TOLERANCE = 1.25


def _check_label_of_mask(path: Path, mask: tuple, acceleration: float, padding: tuple[int, int]) -> None:
    """Refuses an ``acceleration`` attribute that its own mask contradicts: results are labelled
    and grouped by it (a fully sampled mask labelled 4x would score SSIM 1.0 as 4x).

    A nominal acceleration of column masks lies between the mask's overall rate (fastMRI's
    random and equispaced masks) and its rate outside the calibration band (CMRxRecon's masks:
    every R-th line plus 24 central lines, which on a small ky samples far more than 1/R
    overall); the label must lie within a factor :data:`LABEL_TOLERANCE` of that range. A 2-D
    mask's label must lie within :data:`PLANE_LABEL_TOLERANCE` of its rate over the plane (a
    10x mask labelled 5x is refused)."""
    values = np.asarray(mask, dtype=bool)
    if values.ndim == 2:
        sampled = int(values.sum())
        overall = values.size / sampled
        if (sampled == values.size and acceleration > 1) or not (
                overall / PLANE_LABEL_TOLERANCE <= acceleration <= overall * PLANE_LABEL_TOLERANCE):
            raise UserError(f"{path}: acceleration attribute {acceleration:g} contradicts its mask, which samples "
                            f"{sampled} of {values.size} points of the plane ({overall:.3g}x)")
        return
    left, right = padding
    if not (0 <= left < right <= len(mask) and any(mask[left:right])):
        left, right = 0, len(mask)
    acquirable, sampled = right - left, sum(mask[left:right])
    band = min(int(contiguous_centre_width(torch.tensor(mask))), sampled)
    overall = acquirable / sampled
    outside_band = (acquirable - band) / (sampled - band) if sampled > band else overall
    if (sampled == acquirable and acceleration > 1) or not (
            overall / LABEL_TOLERANCE <= acceleration <= outside_band * LABEL_TOLERANCE):
        raise UserError(f"{path}: acceleration attribute {acceleration:g} contradicts its mask, which samples {sampled} "
                        f"of {acquirable} columns ({overall:.3g}x)")


def scored_maximum(target: np.ndarray, size: tuple[int, int]) -> float:
    """The maximum of a target volume over the region scored at reconstruction ``size``."""
    region = center_crop(center_crop(target, size), evaluation_crop_size(size))
    return float(region.max())


def read_target(info: VolumeInfo, slice_num: int | None = None) -> np.ndarray:
    """A volume's target (one slice, or every slice), float32: its file's, or the mean of the
    targets of :attr:`VolumeInfo.target_files`.

    Raises:
        UserError: the volume has no target, or a file cannot be read.
    """
    if info.target_key is None:
        raise UserError(f"{info.path}: no target to score against")
    total = None
    for path in info.target_files or (info.path,):
        try:
            with h5py.File(path, "r") as hf:
                data = hf[info.target_key]
                part = np.asarray(data[slice_num] if slice_num is not None else data[()], dtype=np.float32)
        except (OSError, KeyError, ValueError) as err:
            raise UserError(f"{path}: cannot read '{info.target_key}' ({str(err).split('(')[0].strip()})") from None
        total = part if total is None else total + part
    assert total is not None
    return total / len(info.target_files) if info.target_files else total


def read_volume_info(
    path: Path,
    challenge: Challenge,
    check_finite: bool = True,
    crop_size: tuple[int, int] | None = None,
) -> VolumeInfo:
    """Open one file, validate it and return its metadata.

    Args:
        path: the HDF5 file.
        challenge: ``singlecoil`` or ``multicoil``.
        check_finite: scan k-space and target for NaN/Inf.
        crop_size: the reconstruction size in use (None: each target's own), whose scored
            maximum :attr:`VolumeInfo.target_max` gets.

    Raises:
        UserError: one line naming the file and the problem.
    """
    path = Path(path)
    try:
        hf = h5py.File(path, "r")
    except OSError as err:
        reason = str(err).split("(")[0].strip().rstrip(",") or "unreadable"
        raise UserError(f"{path}: not a readable HDF5 file ({reason})") from None
    try:
        with hf:
            if "kspace" not in hf:
                cine_keys = sorted(key for key in hf if key.startswith("kspace_"))
                if cine_keys:
                    # A CMRxRecon .mat (kspace_full, kspace_sub04, ...) is an HDF5 file too.
                    raise UserError(f"{path}: a CMRxRecon cine file ({', '.join(cine_keys)}), not a volume of "
                                    "fastMRI's layout; convert its download first: mrirecon data convert DIR "
                                    "--format cmrxrecon --out DATASET")
                raise UserError(f"{path}: no 'kspace' dataset")
            kspace = _dataset(hf, "kspace", path)
            if kspace.ndim == 4 and np.issubdtype(kspace.dtype, np.floating) and kspace.shape[-1] % 2 == 0:
                # Calgary-Campinas stores real and imaginary parts of each coil on the last axis.
                raise UserError(f"{path}: kspace {kspace.shape} {kspace.dtype} is a Calgary-Campinas scan (real and "
                                "imaginary parts on the last axis), not a volume of fastMRI's layout; convert its "
                                "download first: mrirecon data convert DIR --format cc359 --out DATASET")
            if kspace.ndim != KSPACE_NDIM[challenge]:
                raise UserError(
                    f"{path}: kspace has {kspace.ndim} dimensions {kspace.shape}, expected "
                    f"{KSPACE_NDIM[challenge]} for {challenge} "
                    f"({'slices, H, W' if challenge == 'singlecoil' else 'slices, coils, H, W'})"
                )
            if not np.issubdtype(kspace.dtype, np.complexfloating):
                raise UserError(f"{path}: kspace has dtype {kspace.dtype}, expected complex64")
            if kspace.shape[0] == 0 or min(kspace.shape) == 0:
                raise UserError(f"{path}: kspace is empty {kspace.shape}")
            if check_finite and not _all_finite(kspace):
                raise UserError(f"{path}: kspace contains NaN or Inf values")
            rows, cols = kspace.shape[-2:]

            if "ismrmrd_header" in hf:
                recon, padding = ismrmrd.read_geometry(_dataset(hf, "ismrmrd_header", path)[()], cols, path)
            else:
                recon, padding = None, (0, cols)

            target_key = TARGET_KEYS[challenge] if TARGET_KEYS[challenge] in hf else None
            target_max: dict[str, float] = {}
            if target_key is not None:
                target = _dataset(hf, target_key, path)
                if not np.issubdtype(target.dtype, np.floating):
                    # Integer images would be scored on another scale; complex or text ones are
                    # not magnitudes.
                    raise UserError(f"{path}: {target_key} has dtype {target.dtype}, expected floating-point magnitudes (float32)")
                if target.ndim != 3 or target.shape[0] != kspace.shape[0]:
                    raise UserError(
                        f"{path}: {target_key} has shape {target.shape}, expected "
                        f"({kspace.shape[0]}, rows, cols) to match kspace"
                    )
                target_shape = (int(target.shape[1]), int(target.shape[2]))
            elif recon is not None:
                target_shape = (recon[0], recon[1])
            else:
                raise UserError(f"{path}: neither a {TARGET_KEYS[challenge]} target nor an ismrmrd_header recon size")

            fixed_mask = None
            if "mask" in hf:
                fixed_mask = _read_mask(hf, path, rows, cols)
            attrs = hf.attrs
            acceleration = _read_acceleration(attrs, path)
            if fixed_mask is not None and acceleration is not None:
                _check_label_of_mask(path, fixed_mask, acceleration, padding)
            info = VolumeInfo(
                path=path,
                num_slices=int(kspace.shape[0]),
                kspace_shape=tuple(int(s) for s in kspace.shape),
                target_key=target_key,
                target_shape=target_shape,
                padding=padding,
                acquisition=str(attrs.get("acquisition", "")),
                fixed_mask=fixed_mask,
                acceleration=acceleration,
                fingerprint=kspace_fingerprint(kspace),
            )
            size = check_reconstruction_size(info, crop_size)
            if target_key is not None:
                volume = np.asarray(hf[target_key], dtype=np.float32)
                if check_finite and not np.isfinite(volume).all():
                    raise UserError(f"{path}: {target_key} contains NaN or Inf values")
                peak = target_max[size_key(size)] = scored_maximum(volume, size)
                if peak == 0 and not volume.any():
                    raise UserError(f"{path}: {target_key} is zero everywhere it is scored: no data range for SSIM/PSNR")
                if not peak > 0:
                    # fastMRI's data range is the target's maximum: magnitude images, never all negative.
                    raise UserError(f"{path}: {target_key}: its maximum where it is scored is {peak:g}, not positive: "
                                    "no data range for SSIM/PSNR (a magnitude image is expected)")
                lowest = float(volume.min()) if volume.size else 0.0
                if lowest < 0:
                    # SSIM and PSNR take the maximum as the data range: negative pixels of a
                    # magnitude image would be scored as signal (a PSNR of 5 dB, exit 0).
                    raise UserError(f"{path}: {target_key} holds negative values (minimum {lowest:g}): "
                                    "a magnitude image is expected")
            return dataclasses.replace(info, target_max=target_max)
    except UserError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as err:
        # Truncated files open but fail when a dataset is read.
        raise UserError(f"{path}: damaged HDF5 file ({str(err).split('(')[0].strip()})") from None


def check_reconstruction_size(info: VolumeInfo, crop_size: tuple[int, int] | None) -> tuple[int, int]:
    """The reconstruction size of a volume, checked to fit its k-space image and target.

    Raises:
        UserError: the size is empty, or larger than the k-space image or than the target.
    """
    size = info.reconstruction_size(crop_size)
    if min(size) < 1:
        source = "the target" if info.target_key is not None else "the ismrmrd_header (the file has no target)"
        raise UserError(f"{info.path}: reconstruction size {size_key(size)} from {source} is empty; set data.crop_size")
    rows, cols = info.kspace_shape[-2:]
    named = size_key(size)
    if crop_size is not None and tuple(size) != tuple(crop_size):
        named += f" (data.crop_size {size_key(crop_size)}, narrowed to the k-space's {cols} columns)"
    if size[0] > rows or size[1] > cols:
        raise UserError(f"{info.path}: reconstruction size {named} is larger than the k-space image {rows}x{cols}")
    if info.target_key is not None and (size[0] > info.target_shape[0] or size[1] > info.target_shape[1]):
        raise UserError(
            f"{info.path}: reconstruction size {named} is larger than the target "
            f"{size_key(info.target_shape)} (data.crop_size must fit every target)"
        )
    return size


def list_volume_files(folder: Path) -> list[Path]:
    """The ``*.h5`` files of a folder, sorted.

    Raises:
        UserError: for a missing or empty folder, a broken link, a folder, pipe or other non-file named ``*.h5``, a
            ``*.H5`` (which would be skipped), and one file listed under two names (it would be scored twice, with two different masks seeded by the names).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    files = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".h5"):
        if path.suffix != ".h5":
            # Skipped, it would leave the split without a volume the user put there.
            raise UserError(f"{path}: volumes are read as '*.h5'; rename it to {path.stem}.h5")
        if path.is_symlink() and not path.exists():
            raise UserError(f"{path}: broken link (to {os.readlink(path)})")
        if path.is_dir():
            # A volume unpacked into a folder of its name (or a folder of volumes): skipping it
            # would score the split without it.
            raise UserError(f"{path}: a folder, not a volume file (an HDF5 file is expected under this name)")
        if not path.is_file():
            raise UserError(f"{path}: not a regular file (a pipe, socket or device), not a volume file")
        files.append(path)
    if not files:
        raise UserError(f"{folder}: no .h5 volumes in this folder")
    seen: dict[tuple[int, int], Path] = {}
    for path in files:
        first = seen.setdefault(atomic.file_id(path), path)
        if first is not path:
            raise UserError(f"{path}: the same file as {first.name} (a link or a second name): a volume must be listed once")
    return files


class FileIdentity(NamedTuple):
    """A file of a split that this command does not read, with its :func:`kspace_fingerprint`
    ("" where it cannot be read: then it is compared as a file only)."""

    path: Path
    fingerprint: str


def file_identities(folder: Path, challenge: Challenge, use_cache: bool = True) -> list[FileIdentity]:
    """The files of a split with their k-space fingerprints, for comparing its content with the
    splits a command uses: from the scan cache where it still holds for a file, else one small
    read per file (not the scan's full validation, which the split gets when a command uses it).

    Raises:
        UserError: as :func:`list_volume_files` (a missing or empty folder, a broken link).
    """
    files = list_volume_files(folder)
    entries = _load_cache(_cache_file(folder, challenge)) if use_cache else {}
    identities = []
    for path in files:
        entry = entries.get(str(path.resolve()))
        fingerprint = entry["info"].get("fingerprint", "") if entry and entry["stamp"] == _stamp(path) else ""
        if not fingerprint:
            try:
                with h5py.File(path, "r") as hf:
                    fingerprint = kspace_fingerprint(hf["kspace"])
            except (OSError, KeyError, ValueError, IndexError, TypeError):
                fingerprint = ""  # a bad file is reported when a command reads its split
        identities.append(FileIdentity(path, fingerprint))
    return identities


def overlapping_files(splits: dict[str, list[Path | VolumeInfo | FileIdentity]]) -> list[tuple[Path, str]]:
    """Every file that two splits share (a training volume scored as unseen data), with why.

    Args:
        splits: split name -> its files (a split listed once even if two names share a folder):
            paths, compared as files (links, second names), or scanned volumes and
            :class:`FileIdentity`, compared by their content too (their fingerprint: a copy of a
            file).

    Returns:
        (the file as the later split lists it, the problem), in the order of ``splits``.
    """
    owner: dict[tuple, tuple[str, Path]] = {}
    shared = []
    for split, entries in splits.items():
        for entry in entries:
            path = entry if isinstance(entry, Path) else entry.path
            keys = [("file", atomic.file_id(path))]
            if not isinstance(entry, Path) and entry.fingerprint:
                keys.append(("content", entry.fingerprint))
            others = [owner.setdefault(key, (split, path)) for key in keys]
            other = next((o for o in others if o[0] != split), None)
            if other is not None:
                same = "the same file" if other in others[:1] else "the same volume (identical k-space shape and middle line, a copy)"
                shared.append((path, f"the {split} split and the {other[0]} split ({other[1]}) hold {same}; "
                                     "a volume may be in one split only"))
    return shared


def check_disjoint(splits: dict[str, list[Path | VolumeInfo | FileIdentity]]) -> None:
    """Refuses a file that two splits share (see :func:`overlapping_files`).

    Raises:
        UserError: naming the first such file, and both splits.
    """
    for path, problem in overlapping_files(splits)[:1]:
        raise UserError(f"{path}: {problem}")


def check_distinct_sources(sources: Iterable[tuple[Path, str, object]]) -> None:
    """Refuses a download whose files a converter would write as two volumes of one scan: a
    file linked or copied into another set, patient or split folder (it would train on a test
    scan, or count twice).

    Args:
        sources: (file, its :func:`kspace_fingerprint`, or "" where none is taken; the scan it
            belongs to): files of one scan (a cine file's fully sampled and undersampled
            versions) may share a fingerprint.

    Raises:
        UserError: naming both files.
    """
    owner: dict[tuple, tuple[Path, object]] = {}
    for path, fingerprint, scan in sources:
        for kind, key in (("file", atomic.file_id(path)), ("content", fingerprint)):
            if not key:
                continue
            first = owner.setdefault((kind, key), (path, scan))
            if first[1] != scan:
                same = "the same file" if kind == "file" else "a copy of the same scan (identical k-space shape and middle line)"
                raise UserError(f"{path}: {same} as {first[0]}; a scan may be converted once (it would be two "
                                "volumes, in two splits or twice in one)")


# Splits that fit reads: every file of them needs a target, unless it trains self-supervised.
TRAINING_SPLITS = ("train", "val")


def missing_target(challenge: Challenge, reader: Literal["fit", "check"] = "fit") -> str:
    """Why a file without a target cannot be in a training split, as ``fit`` says it (which
    refuses it unless training self-supervised) and ``data check`` does (which accepts a
    target-less file only with its own mask)."""
    hint = {"fit": "; undersampled files without targets train self-supervised (model.training ssdu)",
            "check": " (or a 'mask', to train self-supervised)"}[reader]
    return f"no {challenge} target, needed to train or validate{hint}"


def _cache_dir() -> Path:
    return Path(os.environ.get("MRIRECON_CACHE_DIR", Path.home() / ".cache" / "mrirecon"))


def _cache_file(folder: Path, challenge: str) -> Path:
    key = hashlib.sha1(f"{folder.resolve()}|{challenge}".encode()).hexdigest()[:16]
    return _cache_dir() / f"volumes-{key}.json"


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _to_json(info: VolumeInfo) -> dict:
    d = dataclasses.asdict(info)
    d["path"] = str(info.path)
    d["target_files"] = [str(p) for p in info.target_files]
    return d


def _from_json(d: dict) -> VolumeInfo:
    d = dict(d)
    d["path"] = Path(d["path"])
    for key in ("kspace_shape", "target_shape", "padding"):
        if d[key] is not None:
            d[key] = tuple(d[key])
    if d["fixed_mask"] is not None:  # JSON lists back to (nested, for 2-D masks) tuples
        d["fixed_mask"] = tuple(tuple(row) if isinstance(row, list) else row for row in d["fixed_mask"])
    d["target_files"] = tuple(Path(p) for p in d.get("target_files", ()))
    return VolumeInfo(**d)


def _load_cache(path: Path) -> dict:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cache.get("files", {}) if isinstance(cache, dict) and cache.get("version") == CACHE_VERSION else {}


def _scan_one(path: Path, entry: dict | None, challenge: Challenge, check_finite: bool,
              crop_size: tuple[int, int] | None) -> tuple[VolumeInfo, bool, list[int]]:
    """One file's metadata: from its cache entry where that still holds, else read and checked."""
    stamp = _stamp(path)
    # The entry is keyed by the resolved path but holds the path as it was given then (relative
    # to that run's folder, say): the file is read through the path given now.
    info = dataclasses.replace(_from_json(entry["info"]), path=path) if entry and entry["stamp"] == stamp else None
    finite_checked = bool(entry and entry["finite_checked"])
    if info is None or (check_finite and not finite_checked):
        return read_volume_info(path, challenge, check_finite, crop_size), check_finite, stamp
    if info.target_key is not None and size_key(check_reconstruction_size(info, crop_size)) not in info.target_max:
        fresh = read_volume_info(path, challenge, False, crop_size)
        info = dataclasses.replace(info, target_max={**info.target_max, **fresh.target_max})
    else:
        check_reconstruction_size(info, crop_size)
    return info, finite_checked, stamp


def _scan_one_safely(args: tuple) -> tuple[VolumeInfo, bool, list[int]] | UserError:
    try:
        return _scan_one(*args)
    except UserError as err:
        return err


# Reading is done by several processes (h5py holds one lock per process) when this many files
# need it, with a progress bar on a terminal.
_PARALLEL_FROM = 16


def _executor():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: the workers need nothing but this module, already imported (spawn re-imports torch).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    return ProcessPoolExecutor(max_workers=min(8, os.cpu_count() or 1), mp_context=multiprocessing.get_context(method))


def scan_volumes(
    folder: Path,
    challenge: Challenge,
    check_finite: bool = True,
    use_cache: bool = True,
    crop_size: tuple[int, int] | None = None,
    on_error: Callable[[Path, UserError], None] | None = None,
) -> list[VolumeInfo]:
    """Validated metadata of every volume in a folder, from the cache where it is still valid.

    A cached entry is reused only for the same resolved file with the same size and mtime, only
    if it was made with at least the checks asked for now, and only if it knows the target's
    scored maximum at this reconstruction size. Files that must be read (a first scan of a large
    download: the NaN/Inf check reads every byte) are read by several processes, with a
    progress bar on a terminal.

    Args:
        folder: a split folder of ``*.h5`` files.
        challenge: ``singlecoil`` or ``multicoil``.
        check_finite: scan k-space and targets for NaN/Inf.
        use_cache: read and update the metadata cache.
        crop_size: the reconstruction size in use (None: each target's own).
        on_error: called with each bad file and its error, which is then left out; without
            it the first bad file raises.

    Raises:
        UserError: for a missing or empty folder and (without ``on_error``) the first bad file.
    """
    from tqdm import tqdm

    folder = Path(folder)
    files = list_volume_files(folder)
    cache_path = _cache_file(folder, challenge)
    entries = _load_cache(cache_path) if use_cache else {}
    jobs = [(path, entries.get(str(path.resolve())), challenge, check_finite, crop_size) for path in files]
    cached = [entry is not None and entry["stamp"] == _stamp(path) and (entry["finite_checked"] or not check_finite)
              for path, entry, *_ in jobs]
    to_read = len(files) - sum(cached)
    progress = tqdm(total=len(files), desc=f"checking {folder.name}", unit="file", disable=None if to_read >= _PARALLEL_FROM else True,
                    leave=False)
    if to_read >= _PARALLEL_FROM and (os.cpu_count() or 1) > 1:
        with _executor() as pool:
            results = []
            for result in pool.map(_scan_one_safely, jobs, chunksize=4):
                results.append(result)
                progress.update()
    else:
        results = []
        for job in jobs:
            results.append(_scan_one_safely(job))
            progress.update()
    progress.close()
    infos, fresh = [], {}
    for path, result in zip(files, results):
        if isinstance(result, UserError):
            if on_error is None:
                raise result
            on_error(path, result)
            continue
        info, finite_checked, stamp = result
        infos.append(info)
        fresh[str(path.resolve())] = {"stamp": stamp, "finite_checked": finite_checked, "info": _to_json(info)}
    if use_cache and fresh != entries:
        try:
            atomic.write_text(cache_path, json.dumps({"version": CACHE_VERSION, "files": fresh}))
        except UserError:
            pass  # a read-only home only costs the next start its speed
    first_of: dict[str, VolumeInfo] = {}
    for info in list(infos):
        first = first_of.setdefault(info.fingerprint, info)
        if first is not info:
            # A copy under another name would be scored (and, with drawn masks, masked) twice.
            err = UserError(f"{info.path}: the same volume as {first.path.name} (identical k-space shape and middle line, a copy): "
                            "a volume must be listed once")
            if on_error is None:
                raise err
            on_error(info.path, err)
            infos.remove(info)
    return infos


def subsample_volumes(
    infos: Iterable[VolumeInfo], volume_sample_rate: float | None, seed: int = 0
) -> list[VolumeInfo]:
    """A fixed random subset of volumes (the same subset for the same seed and folder)."""
    infos = list(infos)
    if volume_sample_rate is None or volume_sample_rate >= 1.0:
        return infos
    rng = np.random.default_rng(seed)
    n = max(1, round(len(infos) * volume_sample_rate))
    keep = sorted(rng.choice(len(infos), size=n, replace=False))
    return [infos[i] for i in keep]
