"""Reading and validating fastMRI-format volumes (ours and the real download).

One HDF5 file per volume: ``kspace`` (slices, [coils,] H, W) complex, an optional target
(``reconstruction_esc`` single-coil, ``reconstruction_rss`` multi-coil), an ISMRMRD XML header
and attributes. Test/challenge files of the real download have no target but a ``mask``.

Metadata (shapes, padding, attributes, and whether the k-space is finite) is cached per file,
keyed by the resolved path, size and modification time, in ``~/.cache/mrirecon`` (or
``$MRIRECON_CACHE_DIR``). Filters are applied after the cache lookup, so a cache can never
skip a filter or serve another folder's files (fastMRI's ``dataset_cache.pkl`` can: it is keyed
by folder only and a hit skips the filters).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import h5py
import numpy as np

from mrirecon.errors import UserError

Challenge = Literal["singlecoil", "multicoil"]
TARGET_KEYS = {"singlecoil": "reconstruction_esc", "multicoil": "reconstruction_rss"}
KSPACE_NDIM = {"singlecoil": 3, "multicoil": 4}
ISMRMRD_NS = "{http://www.ismrm.org/ISMRMRD}"
CACHE_VERSION = 1


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
        max_value: the ``max`` attribute (target volume max), 0.0 when absent.
        acquisition: the ``acquisition`` attribute, "" when absent.
        fixed_mask: the file's own sampling mask (test/challenge files), or None.
        acceleration: the file's ``acceleration`` attribute, or None.
    """

    path: Path
    num_slices: int
    kspace_shape: tuple[int, ...]
    target_key: str | None
    target_shape: tuple[int, int]
    padding: tuple[int, int]
    max_value: float
    acquisition: str
    fixed_mask: tuple[bool, ...] | None = None
    acceleration: float | None = None

    @property
    def num_coils(self) -> int:
        return self.kspace_shape[1] if len(self.kspace_shape) == 4 else 1

    @property
    def num_cols(self) -> int:
        return self.kspace_shape[-1]


def _header_geometry(raw: bytes | str, num_cols: int, path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """Recon size and acquired column band from the ISMRMRD header, as fastMRI reads them."""
    try:
        root = ET.fromstring(raw)

        def query(*names: str) -> int:
            node = root.find("/".join(ISMRMRD_NS + n for n in names))
            if node is None or node.text is None:
                raise ValueError("/".join(names) + " missing")
            return int(float(node.text))

        enc_y = query("encoding", "encodedSpace", "matrixSize", "y")
        recon = (query("encoding", "reconSpace", "matrixSize", "x"), query("encoding", "reconSpace", "matrixSize", "y"))
        center = query("encoding", "encodingLimits", "kspace_encoding_step_1", "center")
        maximum = query("encoding", "encodingLimits", "kspace_encoding_step_1", "maximum") + 1
    except (ET.ParseError, ValueError) as err:
        raise UserError(f"{path}: unreadable ismrmrd_header ({err})") from None
    left = enc_y // 2 - center
    right = left + maximum
    if not 0 <= left < right <= num_cols:
        # Headers of some files describe a different width than the stored k-space; then the
        # band is meaningless and we treat every column as acquired.
        left, right = 0, num_cols
    return recon, (left, right)


def _kspace_is_finite(dataset: h5py.Dataset) -> bool:
    # Slice by slice so that a multi-GB multi-coil volume never sits in memory at once.
    return all(np.isfinite(dataset[i]).all() for i in range(dataset.shape[0]))


def read_volume_info(path: Path, challenge: Challenge, check_finite: bool = True) -> VolumeInfo:
    """Open one file, validate it and return its metadata.

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
                raise UserError(f"{path}: no 'kspace' dataset")
            kspace = hf["kspace"]
            if kspace.ndim != KSPACE_NDIM[challenge]:
                raise UserError(
                    f"{path}: kspace has {kspace.ndim} dimensions {kspace.shape}, expected "
                    f"{KSPACE_NDIM[challenge]} for {challenge} "
                    f"({'slices, H, W' if challenge == 'singlecoil' else 'slices, coils, H, W'})"
                )
            if not np.issubdtype(kspace.dtype, np.complexfloating):
                raise UserError(f"{path}: kspace has dtype {kspace.dtype}, expected complex64")
            if kspace.shape[0] == 0:
                raise UserError(f"{path}: kspace has no slices")
            if check_finite and not _kspace_is_finite(kspace):
                raise UserError(f"{path}: kspace contains NaN or Inf values")
            rows, cols = kspace.shape[-2:]

            if "ismrmrd_header" in hf:
                recon, padding = _header_geometry(hf["ismrmrd_header"][()], cols, path)
            else:
                recon, padding = None, (0, cols)

            target_key = TARGET_KEYS[challenge] if TARGET_KEYS[challenge] in hf else None
            if target_key is not None:
                target = hf[target_key]
                if target.ndim != 3 or target.shape[0] != kspace.shape[0]:
                    raise UserError(
                        f"{path}: {target_key} has shape {target.shape}, expected "
                        f"({kspace.shape[0]}, rows, cols) to match kspace"
                    )
                target_shape = tuple(int(s) for s in target.shape[-2:])
            elif recon is not None:
                target_shape = (recon[0], recon[1])
            else:
                raise UserError(f"{path}: neither a {TARGET_KEYS[challenge]} target nor an ismrmrd_header recon size")
            if target_shape[0] > rows or target_shape[1] > cols:
                raise UserError(
                    f"{path}: target {target_shape[0]}x{target_shape[1]} is larger than the "
                    f"k-space image {rows}x{cols}"
                )

            fixed_mask = None
            if "mask" in hf:
                mask = np.asarray(hf["mask"]).astype(bool).reshape(-1)
                if mask.shape[0] != cols:
                    raise UserError(f"{path}: mask has {mask.shape[0]} columns, kspace has {cols}")
                fixed_mask = tuple(bool(m) for m in mask)
            attrs = hf.attrs
            return VolumeInfo(
                path=path,
                num_slices=int(kspace.shape[0]),
                kspace_shape=tuple(int(s) for s in kspace.shape),
                target_key=target_key,
                target_shape=target_shape,
                padding=padding,
                max_value=float(attrs.get("max", 0.0)),
                acquisition=str(attrs.get("acquisition", "")),
                fixed_mask=fixed_mask,
                acceleration=float(attrs["acceleration"]) if "acceleration" in attrs else None,
            )
    except UserError:
        raise
    except (OSError, KeyError, RuntimeError) as err:
        # Truncated files open but fail when a dataset is read.
        raise UserError(f"{path}: damaged HDF5 file ({str(err).split('(')[0].strip()})") from None


def list_volume_files(folder: Path) -> list[Path]:
    """The ``*.h5`` files of a folder, sorted; a clear error for a missing or empty folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".h5" and p.is_file())
    if not files:
        raise UserError(f"{folder}: no .h5 volumes in this folder")
    return files


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
    return d


def _from_json(d: dict) -> VolumeInfo:
    d = dict(d)
    d["path"] = Path(d["path"])
    for key in ("kspace_shape", "target_shape", "padding", "fixed_mask"):
        if d[key] is not None:
            d[key] = tuple(d[key])
    return VolumeInfo(**d)


def scan_volumes(
    folder: Path, challenge: Challenge, check_finite: bool = True, use_cache: bool = True
) -> list[VolumeInfo]:
    """Validated metadata of every volume in a folder, from the cache where it is still valid.

    A cached entry is reused only for the same resolved file with the same size and mtime, and
    only if it was made with at least the checks asked for now.

    Raises:
        UserError: for a missing or empty folder and for the first bad file.
    """
    files = list_volume_files(folder)
    cache_path = _cache_file(folder, challenge)
    cache: dict = {}
    if use_cache and cache_path.exists():
        try:
            cache = json.loads(cache_path.read_text())
            if cache.get("version") != CACHE_VERSION:
                cache = {}
        except (OSError, ValueError):
            cache = {}
    entries = cache.get("files", {})
    infos, fresh = [], {}
    for path in files:
        key = str(path.resolve())
        entry = entries.get(key)
        if entry and entry["stamp"] == _stamp(path) and (entry["finite_checked"] or not check_finite):
            info = _from_json(entry["info"])
            finite_checked = entry["finite_checked"]
        else:
            info = read_volume_info(path, challenge, check_finite=check_finite)
            finite_checked = check_finite
        infos.append(info)
        fresh[key] = {"stamp": _stamp(path), "finite_checked": finite_checked, "info": _to_json(info)}
    if use_cache and fresh != entries:
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "files": fresh}))
            tmp.replace(cache_path)
        except OSError:
            pass  # a read-only home only costs the next start its speed
    return infos


def subsample_volumes(
    infos: Iterable[VolumeInfo], volume_sample_rate: float | None, seed: int = 0
) -> list[VolumeInfo]:
    """A fixed random subset of volumes (the same subset for the same seed and folder)."""
    infos = list(infos)
    if volume_sample_rate is None or volume_sample_rate >= 1.0:
        return infos
    if not 0.0 < volume_sample_rate:
        raise UserError(f"volume_sample_rate must be in (0, 1], got {volume_sample_rate}")
    rng = np.random.default_rng(seed)
    n = max(1, round(len(infos) * volume_sample_rate))
    keep = sorted(rng.choice(len(infos), size=n, replace=False))
    return [infos[i] for i in keep]
