"""Scoring folders of reconstructions against a split's targets, as ``mrirecon test`` scores.

A folder is what ``mrirecon predict`` and ``mrirecon baseline`` write in the submission format
(``<acc>x/<file>.h5``, or flat with each file's ``acceleration`` attribute, key
``reconstruction``). Targets are cropped to each reconstruction's size as the DataModule crops
them, and every volume is scored by :func:`mrirecon.core.metrics.volume_metrics` with
fastMRI's evaluation crop, so a report compares like with like and equals ``test``'s numbers.
The ``cmrxrecon`` protocol scores instead as the CMRxRecon 2023 leaderboard did
(:mod:`mrirecon.evaluation.cmrxrecon`), and ``cc359`` as the Calgary-Campinas challenge did
(:mod:`mrirecon.evaluation.cc359`), each on the whole image of each converted volume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Mapping, Sequence

import h5py
import numpy as np
import torch
from tqdm import tqdm

from mrirecon.core.metrics import volume_metrics
from mrirecon.core.operator import center_crop
from mrirecon.data.volumes import VolumeInfo, read_target
from mrirecon.errors import UserError
from mrirecon.evaluation.cc359 import challenge_metrics
from mrirecon.evaluation.cmrxrecon import ranking_grid, ranking_metrics

Protocol = Literal["fastmri", "cmrxrecon", "cc359"]
PROTOCOLS: tuple[str, ...] = ("fastmri", "cmrxrecon", "cc359")
# The protocols that score the whole image of each volume themselves (no data.crop_size).
WHOLE_IMAGE_PROTOCOLS: tuple[str, ...] = ("cmrxrecon", "cc359")


def load_array(path: Path, key: str) -> np.ndarray:
    """One dataset of an HDF5 file as float32, with a one-line error."""
    try:
        with h5py.File(path, "r") as hf:
            return np.asarray(hf[key], dtype=np.float32)
    except (OSError, KeyError) as err:
        raise UserError(f"{path}: cannot read '{key}' ({str(err).split('(')[0].strip()})") from None


def reconstruction_root(path: Path) -> Path:
    """Accept a baseline/test output folder (with ``reconstructions/``) or the folder itself."""
    return path / "reconstructions" if (path / "reconstructions").is_dir() else path


def _stated_acceleration(path: Path) -> float | None:
    """A reconstruction file's ``acceleration`` attribute, None where it has none."""
    try:
        with h5py.File(path, "r") as hf:
            value = hf.attrs.get("acceleration")
    except OSError:
        raise UserError(f"{path}: not a readable reconstruction (HDF5) file") from None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        raise UserError(f"{path}: acceleration attribute {value!r} is not a number") from None


def reconstruction_files(root: Path) -> dict[tuple[str, float], Path]:
    """``(file name, acceleration) -> path`` of a submission-format folder."""
    files: dict[tuple[str, float], Path] = {}
    resolved: dict[Path, Path] = {}

    def add(key: tuple[str, float], path: Path) -> None:
        # One volume twice (a flat file beside <acc>x/, or a link to another volume's file)
        # would be scored with another's reconstruction, or replace one silently.
        if key in files:
            raise UserError(f"{path}: a second reconstruction of {key[0]} at {key[1]:g}x (beside {files[key]})")
        real = path.resolve()
        if real in resolved:
            raise UserError(f"{path}: the same file as {resolved[real]}; each volume needs its own reconstruction")
        files[key], resolved[real] = path, path

    for acc_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.endswith("x")):
        try:
            acc = float(acc_dir.name[:-1])
        except ValueError:
            continue
        for f in sorted(acc_dir.glob("*.h5")):
            stated = _stated_acceleration(f)
            if stated is not None and stated != acc:
                raise UserError(f"{f}: its acceleration attribute says {stated:g}x, its folder {acc_dir.name}")
            add((f.name, acc), f)
    for f in sorted(root.glob("*.h5")):
        stated = _stated_acceleration(f)
        if stated is None:
            raise UserError(f"{f}: not a reconstruction with an 'acceleration' attribute")
        add((f.name, stated), f)
    if not files:
        raise UserError(f"{root}: no reconstructions (<acc>x/<file>.h5) in this folder")
    return files


def target_volume(info: VolumeInfo, crop_size: tuple[int, int] | None) -> np.ndarray:
    """The target of a volume (the mean of its repetitions' where it has them, as ``test``
    scores it), cropped to its reconstruction size."""
    size = info.reconstruction_size(crop_size)
    return center_crop(torch.from_numpy(read_target(info)), size).numpy()


def score_folder(
    root: Path,
    volumes: Mapping[str, VolumeInfo],
    crop_size: tuple[int, int] | None,
    name: str = "",
    progress: bool = True,
    protocol: Protocol = "fastmri",
) -> tuple[dict[tuple[str, float], dict[str, float]], dict[tuple[str, float], Path]]:
    """Per-volume metrics of one folder of reconstructions, and its file map.

    ``protocol``: ``fastmri`` (``fastmri.evaluate``'s, as ``test`` scores), ``cmrxrecon``
    (the CMRxRecon 2023 ranking, which crops the whole image itself) or ``cc359`` (the
    Calgary-Campinas challenge's, on the whole plane without the outer slices).

    Raises:
        UserError: a reconstruction of a file the split does not hold, or of the wrong shape.
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol}: one of {', '.join(PROTOCOLS)}")
    files = reconstruction_files(root)
    scores = {}
    # leave=False, closed on an error too: a refusal is one line, not a half bar and the line.
    with tqdm(files.items(), desc=f"scoring {name}", disable=not progress, leave=False) as bar:
        for (fname, acc), path in bar:
            if fname not in volumes:
                raise UserError(f"{path}: the split has no volume {fname}")
            recon = load_array(path, "reconstruction")
            if protocol == "cmrxrecon":
                info = volumes[fname]
                grid = ranking_grid(info.path, info.num_slices)
                target = target_volume(info, None)
                if target.shape != recon.shape:
                    raise UserError(f"{path}: shape {recon.shape}; the CMRxRecon ranking crops the whole image, "
                                    f"{target.shape} (reconstruct without data.crop_size)")
                scores[(fname, acc)] = ranking_metrics(target, recon, *grid, path)
                continue
            if protocol == "cc359":
                target = target_volume(volumes[fname], None)
                if target.shape != recon.shape:
                    raise UserError(f"{path}: shape {recon.shape}; the Calgary-Campinas metrics score the whole plane, "
                                    f"{target.shape} (reconstruct without data.crop_size)")
                scores[(fname, acc)] = challenge_metrics(target, recon, path)
                continue
            target = target_volume(volumes[fname], crop_size)
            if target.shape != recon.shape:
                raise UserError(f"{path}: shape {recon.shape} differs from the target's {target.shape}")
            scores[(fname, acc)] = volume_metrics(torch.from_numpy(target), torch.from_numpy(recon), crop_to_square=True)
    return scores, files


def check_complete_coverage(files: Mapping[str, Mapping[tuple[str, float], Path]], volumes: Mapping[str, VolumeInfo],
                            masked_at: Sequence[float] | None = None) -> None:
    """Refuses to compare methods over unlike sets: every method must hold every volume of the
    split at the same accelerations (a baseline killed half-way, or a folder of another split,
    would otherwise be averaged over fewer volumes beside complete ones).

    Args:
        files: method (run) name -> what :func:`score_folder` returned as its file map.
        volumes: the split's volumes by file name.
        masked_at: the accelerations the config masks the split at (None: files with their own
            masks); then every method must cover exactly these, even a method alone.

    Raises:
        UserError: naming the method, and the first missing volume and acceleration.
    """
    accelerations = sorted({acc for by_key in files.values() for _, acc in by_key})
    if masked_at is not None:
        expected_accs = sorted({float(a) for a in masked_at})
        for method, by_key in files.items():
            extra = sorted({acc for _, acc in by_key} - set(expected_accs))
            if extra:
                raise UserError(f"{method}: reconstructions at {extra[0]:g}x, but the config masks the split at "
                                + ", ".join(f"{a:g}x" for a in expected_accs))
        accelerations = expected_accs
        expected = {(name, acc) for name in volumes for acc in accelerations}
    else:
        # Files with their own masks: each volume at the acceleration its file states.
        own = {name: info.acceleration for name, info in volumes.items() if info.acceleration is not None}
        for method, by_key in files.items():
            for name, acc in by_key:
                if name in own and acc != own[name]:
                    raise UserError(f"{method}: a reconstruction of {name} at {acc:g}x, but its file is undersampled "
                                    f"at {own[name]:g}x (a reconstruction of another split?)")
        expected = {(name, own[name]) for name in own} | {
            (name, acc) for name in volumes if name not in own for acc in accelerations}
    for method, by_key in files.items():
        missing = sorted(expected - set(by_key), key=lambda k: (k[1], k[0]))
        if missing:
            name, acc = missing[0]
            raise UserError(
                f"{method}: no reconstruction of {name} at {acc:g}x ({len(missing)} of {len(expected)} volume and "
                f"acceleration pairs missing); every method must cover the split's {len(volumes)} volumes at "
                f"{', '.join(f'{a:g}x' for a in accelerations)}: complete its run, or leave it out")
