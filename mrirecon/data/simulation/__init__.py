"""Simulated fastMRI-format datasets made from real anatomical volumes, offline.

Each volume is a distinct synthetic subject: a real T1-weighted head (see
:mod:`mrirecon.data.anatomy`) under a random affine transform, a smooth elastic deformation,
a contrast remapping and a smooth multiplicative bias field. Its axial slices are acquired
with the physics the fastMRI data came from:

* the real magnitude image fills the central ``r x r`` of an ``H x W`` field of view,
  ``H = 2r`` (2x readout oversampling along the rows) and ``W = 2*ceil(1.15r/2)`` phase-encode
  columns along the last axis, as in fastMRI knee (640 x 368 for a 320 x 320 target);
  randomised volumes draw the oversampling from 1, 1.15 and 1.3, the ``ood`` preset uses 1;
* a smooth random phase, and for multi-coil data the complex sensitivities of a ring of loop
  coils, multiply the image;
* k-space is its centred orthonormal 2-D FFT (the convention of :func:`fastmri.fft2c`), plus
  white complex Gaussian noise;
* targets are computed from that fully sampled noisy k-space as fastMRI computes its own:
  ``reconstruction_esc = |crop(ifft2c(kspace))|`` and
  ``reconstruction_rss = sqrt(sum_c |crop(ifft2c(kspace_c))|^2)``.

Noise level: ``snr = mean(|x| over the object) / sigma`` where ``x`` is the noiseless
(coil-combined) magnitude image and ``sigma`` the standard deviation of the real part, and
equally of the imaginary part, of the noise in each coil. The orthonormal FFT makes
``sigma`` the same in k-space and in the image. The object is where ``|x|`` exceeds a tenth
of its volume maximum.

Image orientation (radiological display): rows run anterior (row 0) to posterior, columns
run from the patient's right (column 0) to left, slices run inferior to superior.

Domain randomisation (the ``demo-random`` preset's train and val splits, see
:class:`Randomization`): instead of remapping the T1, each volume's contrast is synthesised from
tissue maps (:mod:`mrirecon.data.tissues`) with a random intensity per tissue, so T1-, T2- and
PD-like and inverted contrasts all occur, the head's own texture at a random strength, a random
bias field, a random blur (resolution), skull and scalp shells grown around a brain-only
template or not, a random field of view and phase-encode oversampling, a random phase strength
and an SNR drawn log-uniformly from 10 to 1000; every factor is recorded in the file's
attributes. The ``ood`` preset writes an out-of-distribution split from a head given with
``--source`` (Colin27: a head the default sources exclude) in its native T1 contrast and a
PD-like one, at a high SNR and without phase-encode oversampling. docs/generalisation.md tells
what they model, what they do not, and what each factor bought.
"""


from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from tqdm import tqdm

from mrirecon.core import atomic
from mrirecon.data.anatomy import default_sources, resolve_source
from mrirecon.data.simulation import writer
from mrirecon.data.simulation.presets import (
    CHALLENGES,
    CONTRASTS,
    LAYOUTS,
    M4RAW_CONTRASTS,
    PRESETS,
    SPLITS,
    Draw,
    Preset,
    Randomization,
    draw_volume,
    phase_encode_columns,
    resolve_preset,
)
from mrirecon.data.simulation.synthesis import prepare_head
from mrirecon.errors import UserError

__all__ = ["CHALLENGES", "CONTRASTS", "LAYOUTS", "PRESETS", "SPLITS", "SUMMARY_FILE", "Preset", "Randomization", "simulate_dataset"]

SUMMARY_FILE = "simulation.json"
_OWN_ENTRY = re.compile(rf"({'|'.join(CHALLENGES)})_\w+|{re.escape(SUMMARY_FILE)}")


def simulate_dataset(
    out_dir: str | Path,
    *,
    preset: str | Preset | None = None,
    challenge: str | None = None,
    format: str | None = None,
    seed: int = 0,
    sources: Sequence[str | Path] | None = None,
    overwrite: bool = False,
    recon_size: int | None = None,
    undersampled: int | None = None,
    progress: bool = True,
) -> dict:
    """Writes a simulated dataset in fastMRI's folder layout and file format.

    The result is ``<out_dir>/<challenge>_<split>/sim_<split>_<index:04d>.h5``, one file per
    volume (M4Raw's layout: ``sim<index:05d>_<contrast><repetition:02d>.h5``, one per subject,
    contrast and repetition), readable by an unchanged :class:`fastmri.data.SliceDataset`, for the preset's splits
    (train, val and test; ``ood`` for the ``ood`` preset), plus ``<out_dir>/simulation.json``,
    the manifest. All splits, test included, carry fully sampled k-space and targets (unless
    ``undersampled``: then train and val are undersampled scans without targets). Only the
    preset's split folders are written, each built in a temporary folder and renamed into place,
    so a failure or an interrupt leaves nothing half-written and other splits already in
    ``out_dir`` (another challenge, or the train/val/test beside an added ``ood``) stay.

    The same ``seed`` and sources give identical arrays; volume ``i`` draws its anatomy from
    ``(seed, i)`` alone, so the single- and multi-coil datasets of one seed show the same
    subjects.

    Args:
        out_dir: Dataset root, created if needed.
        preset: A name in :data:`PRESETS` or a :class:`Preset`; None: ``demo``, or ``m4raw``
            for ``format="m4raw"``.
        challenge: ``"singlecoil"`` or ``"multicoil"``; None: single-coil, or multi-coil for
            the M4Raw layout (which has only that).
        format: ``"fastmri"`` or ``"m4raw"`` (a layout of :data:`LAYOUTS`), which the preset
            must have; None: the preset's.
        seed: Seed of every random draw.
        sources: Anatomical volumes (paths, or names such as ``colin27``; see
            :func:`~mrirecon.data.anatomy.resolve_source`), used in turn per volume; defaults
            to :func:`~mrirecon.data.anatomy.default_sources` (the MNI152 template alone).
        overwrite: Replace split folders of this simulation that exist already.
        recon_size: Overrides the preset's target size ``r``.
        undersampled: Overrides the preset's ``undersampled`` (an acceleration: train and val
            written undersampled, with their masks, without targets; see :class:`Preset`).
        progress: Show a progress bar over volumes.

    Returns:
        A summary: challenge, seed, sizes, the sources (name, path, SHA-256) and, per split,
        the volume and slice counts, the folder and each file's source and contrast. The
        manifest ``simulation.json`` holds it, merged with the splits written before.

    Raises:
        UserError: a split folder exists (without ``overwrite``), ``out_dir`` holds files a
            simulation does not write, a source is unreadable, or an argument is out of range.
    """
    # An absolute, normalised path has a real name and parent, even for "." or "a/..".
    out_dir = Path(os.path.abspath(out_dir))
    if format is not None and format not in LAYOUTS:
        raise UserError(f"format {format!r}: expected one of {', '.join(LAYOUTS)}")
    params = resolve_preset(preset if preset is not None else "m4raw" if format == "m4raw" else "demo", recon_size)
    if format is not None and params.layout != format:
        name = preset if isinstance(preset, str) else "given"
        raise UserError(f"preset {name}: writes the {params.layout} layout, not {format}; "
                        f"{'--preset m4raw' if format == 'm4raw' else 'a fastMRI preset (demo, full, ...)'} writes {format}'s")
    if undersampled is not None:
        params = resolve_preset(replace(params, undersampled=undersampled), None)
    if challenge is None:
        challenge = "multicoil" if params.layout == "m4raw" else "singlecoil"
    if challenge not in CHALLENGES:
        raise UserError(f"challenge {challenge!r}: expected one of {', '.join(CHALLENGES)}")
    if params.layout == "m4raw" and challenge != "multicoil":
        raise UserError(f"challenge {challenge}: M4Raw's files are multi-coil only")
    if seed < 0:
        raise UserError(f"seed {seed}: must not be negative")
    if params.needs_source and sources is None:
        raise UserError("--source: this preset simulates a head excluded from training; name one (e.g. colin27)")
    folders = [f"{challenge}_{split}" for split in params.splits]
    _check_destination(out_dir, folders, overwrite)

    source_paths = [resolve_source(p) for p in (default_sources() if sources is None else sources)]
    if not source_paths:
        raise UserError("sources: the list of anatomical volumes is empty")
    heads = [prepare_head(path) for path in source_paths]

    r = params.recon_size
    summary = {
        "challenge": challenge,
        "seed": seed,
        "preset": asdict(params),
        "recon_size": [r, r],
        "layout": params.layout,
        "kspace_size": [params.readout_oversampling * r, phase_encode_columns(r, params.pe_oversampling)],
        "sources": [{"name": head.name, "path": str(head.path), "sha256": head.sha256} for head in heads],
        "splits": {},
    }

    try:
        # The dataset folder itself appears only with its first complete split.
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as err:
        raise UserError(f"{out_dir}: cannot create the dataset folder ({atomic.describe_os_error(err)})") from None
    try:
        per_subject = sum(count for _, count in params.repetitions) if params.layout == "m4raw" else 1
        with tqdm(total=sum(params.volumes) * per_subject, unit="vol", desc=f"simulating {challenge}",
                  disable=not progress) as bar:
            for split_index, (split, count) in enumerate(zip(params.splits, params.volumes)):
                folder = staging / f"{challenge}_{split}"
                folder.mkdir()
                files = {}
                # The standard splits number their volumes across train, val and test (as
                # before 0.2, so their data is unchanged); any other split has its own range.
                first = sum(params.volumes[:split_index]) if split in SPLITS else 100_000 * (split_index + 1)
                for local in range(count):
                    index = first + local
                    head = heads[index % len(heads)]
                    undersampled = params.undersampled if split in ("train", "val") else None
                    subject_draw = draw_volume(params, split, local, seed, index)
                    for name, draw, repetition, names in _volume_files(params, split, local, index, subject_draw):
                        writer.write_volume(folder / name, head, params, challenge, seed, index, draw, undersampled,
                                            repetition, names)
                        files[name] = {"source": head.name, "contrast": draw.contrast,
                                       "kspace_size": [params.readout_oversampling * r,
                                                       phase_encode_columns(r, draw.pe_oversampling)]}
                        bar.update()
                # Each split records how it was made: a dataset's splits may come from
                # different runs (the ood preset adds one), and reports cite their split's entry.
                summary["splits"][split] = {
                    "folder": f"{challenge}_{split}",
                    "challenge": challenge,
                    "volumes": len(files),
                    "subjects": count,
                    "slices": len(files) * params.slices,
                    "randomized": split in params.randomized,
                    "seed": seed,
                    "preset": summary["preset"],
                    "sources": summary["sources"],
                    "files": files,
                }
        _move_into_place(staging, out_dir, folders, summary)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"{out_dir}: cannot write the dataset ({atomic.describe_os_error(err)})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    summary["out_dir"] = str(out_dir)
    return summary


def _volume_files(params: Preset, split: str, local: int, index: int, draw: Draw):
    """The files of one subject: ``(name, draw, repetition, repetition names)`` each.

    fastMRI's layout: one file. M4Raw's: one per contrast and repetition, named as M4Raw's
    files are (``<subject>_<contrast><repetition:02d>.h5``), the repetitions of a contrast
    listing each other (this one first) as M4Raw's headers do.
    """
    if params.layout != "m4raw":
        yield f"sim_{split}_{local:04d}.h5", draw, None, ()
        return
    for number, (tag, count) in enumerate(params.repetitions):
        stems = [f"sim{index:05d}_{tag}{k:02d}" for k in range(1, count + 1)]
        contrast = replace(draw, contrast=M4RAW_CONTRASTS[tag])
        for k, stem in enumerate(stems):
            yield f"{stem}.h5", contrast, (number, k + 1), (stem, *stems[:k], *stems[k + 1:])


def _check_destination(out_dir: Path, folders: list[str], overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    foreign = [name for name in entries if not _OWN_ENTRY.fullmatch(name)]
    if foreign:
        raise UserError(
            f"{out_dir}: will not write here, it holds {foreign[0]!r}, which a simulation does not write"
        )
    existing = [name for name in folders if name in entries]
    if existing and not overwrite:
        raise UserError(f"{out_dir}: {existing[0]} exists already; use overwrite to replace it")


def _move_into_place(staging: Path, out_dir: Path, folders: list[str], summary: dict) -> None:
    """Renames each new split folder into ``out_dir`` (replacing an old one only once the new one
    is complete) and merges the manifest. If a rename fails, the old folder moves back."""
    trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    out_dir.mkdir(exist_ok=True)
    for name in folders:
        old = (out_dir / name).exists()
        if old:
            (out_dir / name).rename(trash / name)
        try:
            (staging / name).rename(out_dir / name)
        except BaseException:
            if old:
                (trash / name).rename(out_dir / name)
            shutil.rmtree(trash, ignore_errors=True)
            raise
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    # The manifest lists every split folder of the dataset, by folder name.
    manifest = out_dir / SUMMARY_FILE
    merged = {**summary, "splits": {entry["folder"]: entry for entry in summary["splits"].values()}}
    if manifest.is_file():
        try:
            previous = json.loads(manifest.read_text()).get("splits", {})
            kept = {name: entry for name, entry in previous.items() if (out_dir / name).is_dir()}
            merged["splits"] = {**kept, **merged["splits"]}
        except (OSError, ValueError, AttributeError):
            pass
    atomic.write_text(manifest, json.dumps(merged, indent=2) + "\n")
