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
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from xml.etree import ElementTree

import h5py
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from mrirecon.core import atomic
from mrirecon.data import tissues
from mrirecon.data.anatomy import default_sources, load_anatomy, resolve_source, source_digest
from mrirecon.errors import UserError

SPLITS = ("train", "val", "test")
CHALLENGES = ("singlecoil", "multicoil")
CONTRASTS = ("source", "t1", "pd")
SUMMARY_FILE = "simulation.json"
_OWN_ENTRY = re.compile(rf"({'|'.join(CHALLENGES)})_\w+|{re.escape(SUMMARY_FILE)}")


@dataclass(frozen=True)
class Randomization:
    """What domain randomisation draws per volume (uniformly within each range).

    Attributes:
        intensity: each tissue's intensity (CSF, GM, WM, soft tissue, bone), independently:
            every order of tissues, so T1-, T2-, PD-like and inverted contrasts.
        texture: gain of the head's own fine structure added to the tissue image (negative:
            inverted, as the contrast may be).
        bias_std: standard deviation of the log of a smooth multiplicative bias field.
        blur_px: Gaussian blur in pixels, rows and columns apart (lower resolution).
        snr: signal-to-noise ratio, log-uniformly.
        pe_oversampling: phase-encode columns over the image width (1: none), one of these:
            a few k-space widths keep batches (one shape each) full.
        fov_margin: field of view over the head's largest in-plane extent.
        phase_std: standard deviation of the smooth image phase, in radians.
        shells: probability of skull and scalp shells around a brain-only template.
        contrast: synthesise each contrast from tissue maps; False keeps the source's T1 with the
            standard gentle remap (for switching factors on one at a time, as
            ``scripts/ablate_randomization.py`` does).
        standard_fraction: probability that a volume is drawn as the standard preset draws it
            (source contrast, the preset's SNR range, standard geometry): an anchor in the
            distribution the standard test split comes from.
        gap_mm, bone_mm, soft_mm: thickness of the CSF gap, the skull and the scalp shells.
    """

    intensity: tuple[float, float] = (0.0, 1.0)
    texture: tuple[float, float] = (-1.5, 1.5)
    bias_std: tuple[float, float] = (0.0, 0.5)
    blur_px: tuple[float, float] = (0.0, 1.2)
    snr: tuple[float, float] = (10.0, 1000.0)
    pe_oversampling: tuple[float, ...] = (1.0, 1.15, 1.3)
    fov_margin: tuple[float, float] = (1.05, 1.6)
    phase_std: tuple[float, float] = (0.0, 3.0)
    shells: float = 0.5
    contrast: bool = True
    standard_fraction: float = 0.0
    gap_mm: tuple[float, float] = (0.0, 3.0)
    bone_mm: tuple[float, float] = (2.0, 7.0)
    soft_mm: tuple[float, float] = (2.0, 10.0)


@dataclass(frozen=True)
class Preset:
    """What a simulated dataset holds.

    Attributes:
        recon_size: Side ``r`` of the square target image, in pixels.
        volumes: Number of volumes per split of ``splits``.
        slices: Axial slices per volume.
        coils: Inclusive range of the number of receive coils, drawn per multi-coil volume.
        snr: Range of the signal-to-noise ratio, drawn log-uniformly per volume (see the
            module docstring for its definition); randomised splits use the randomisation's.
        splits: the split folders written (``<challenge>_<split>``).
        randomized: the splits drawn with domain randomisation.
        randomization: its ranges.
        contrasts: per volume in turn (of the splits not randomised): ``source`` (the source's
            T1 with a random gentle remap, the standard demo data), ``t1`` (the source's own
            contrast) or ``pd`` (a proton-density-like contrast from its tissue maps).
        pe_oversampling: phase-encode columns over the image width, of splits not randomised.
        needs_source: the preset is for heads given with ``--source`` (not the default).
    """

    recon_size: int
    volumes: tuple[int, ...]
    slices: int
    coils: tuple[int, int]
    snr: tuple[float, float]
    splits: tuple[str, ...] = SPLITS
    randomized: tuple[str, ...] = ()
    randomization: Randomization = Randomization()
    contrasts: tuple[str, ...] = ("source",)
    pe_oversampling: float = 1.15
    needs_source: bool = False


PRESETS = {
    # Small enough to simulate in seconds and to train a U-Net usefully on two CPU cores.
    "demo": Preset(recon_size=128, volumes=(16, 4, 4), slices=14, coils=(8, 8), snr=(20.0, 40.0)),
    # The demo with domain-randomised training and validation volumes; its test split is the
    # standard demo's (the in-distribution test of the report).
    "demo-random": Preset(recon_size=128, volumes=(16, 4, 4), slices=14, coils=(8, 8), snr=(20.0, 40.0),
                          randomized=("train", "val")),
    # An out-of-distribution test split from a head excluded from training (--source colin27),
    # in its native T1 contrast and a PD-like one, at a high SNR, without phase-encode
    # oversampling, added to an existing dataset folder as <challenge>_ood.
    "ood": Preset(recon_size=128, volumes=(8,), slices=14, coils=(8, 8), snr=(200.0, 400.0), splits=("ood",),
                  contrasts=("t1", "pd"), pe_oversampling=1.0, needs_source=True),
    "full": Preset(recon_size=320, volumes=(40, 8, 8), slices=18, coils=(8, 15), snr=(15.0, 40.0)),
}

# Anatomy geometry, in millimetres of the 1 mm source grid.
_SLAB_MM = 100.0  # axial coverage, from near the vertex down to the cerebellum
_AREA_FRACTION = 0.35  # axial slices with less head than this fraction of the largest are skipped
_FOV_MARGIN = 1.2  # field of view over the head's largest in-plane extent, room for the affine
_FOREGROUND = 0.1  # fraction of the maximum above which a voxel counts as object

# Signal scale of the magnitude image's maximum, chosen so targets land near fastMRI's 1e-4..1e-3.
_SCALE_RANGE = (2e-4, 8e-4)
# fastMRI brain's names for an axial T1 (the templates' contrast) and PD; randomised contrasts
# have no protocol name, so they get their own.
_ACQUISITIONS = {"source": "AXT1", "t1": "AXT1", "pd": "AXPD", "random": "AXRANDOM"}
_ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"


@dataclass
class _Head:
    """A loaded source volume, where its axial slab lies, and (when needed) its tissue maps."""

    name: str
    path: Path
    sha256: str
    volume: np.ndarray
    centre: np.ndarray  # voxel coordinates (x, y, z) of the slab's centre
    extent_mm: float  # largest in-plane extent of the head in the slab
    slab_mm: float
    _tissues: np.ndarray | None = None
    _outside_mm: np.ndarray | None = None
    _texture: np.ndarray | None = None

    def tissue_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tissue maps, distance outside the head (mm) and fine texture, computed once."""
        if self._tissues is None:
            self._tissues = tissues.tissue_maps(self.path, self.volume)
            self._outside_mm = tissues.distance_outside_mm(self._tissues)
            self._texture = tissues.texture(self.volume)
        return self._tissues, self._outside_mm, self._texture


def simulate_dataset(
    out_dir: str | Path,
    *,
    preset: str | Preset = "demo",
    challenge: str = "singlecoil",
    seed: int = 0,
    sources: Sequence[str | Path] | None = None,
    overwrite: bool = False,
    recon_size: int | None = None,
    progress: bool = True,
) -> dict:
    """Writes a simulated dataset in fastMRI's folder layout and file format.

    The result is ``<out_dir>/<challenge>_<split>/sim_<split>_<index:04d>.h5``, one file per
    volume, readable by an unchanged :class:`fastmri.data.SliceDataset`, for the preset's splits
    (train, val and test; ``ood`` for the ``ood`` preset), plus ``<out_dir>/simulation.json``,
    the manifest. All splits, test included, carry fully sampled k-space and targets. Only the
    preset's split folders are written, each built in a temporary folder and renamed into place,
    so a failure or an interrupt leaves nothing half-written and other splits already in
    ``out_dir`` (another challenge, or the train/val/test beside an added ``ood``) stay.

    The same ``seed`` and sources give identical arrays; volume ``i`` draws its anatomy from
    ``(seed, i)`` alone, so the single- and multi-coil datasets of one seed show the same
    subjects.

    Args:
        out_dir: Dataset root, created if needed.
        preset: A name in :data:`PRESETS` or a :class:`Preset`.
        challenge: ``"singlecoil"`` or ``"multicoil"``.
        seed: Seed of every random draw.
        sources: Anatomical volumes (paths, or names such as ``colin27``; see
            :func:`~mrirecon.data.anatomy.resolve_source`), used in turn per volume; defaults
            to :func:`~mrirecon.data.anatomy.default_sources` (the MNI152 template alone).
        overwrite: Replace split folders of this simulation that exist already.
        recon_size: Overrides the preset's target size ``r``.
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
    params = _resolve_preset(preset, recon_size)
    if challenge not in CHALLENGES:
        raise UserError(f"challenge {challenge!r}: expected one of {', '.join(CHALLENGES)}")
    if seed < 0:
        raise UserError(f"seed {seed}: must not be negative")
    if params.needs_source and sources is None:
        raise UserError("--source: this preset simulates a head excluded from training; name one (e.g. colin27)")
    folders = [f"{challenge}_{split}" for split in params.splits]
    _check_destination(out_dir, folders, overwrite)

    source_paths = [resolve_source(p) for p in (default_sources() if sources is None else sources)]
    if not source_paths:
        raise UserError("sources: the list of anatomical volumes is empty")
    heads = [_prepare_head(path) for path in source_paths]

    r = params.recon_size
    summary = {
        "challenge": challenge,
        "seed": seed,
        "preset": asdict(params),
        "recon_size": [r, r],
        "kspace_size": [2 * r, _columns(r, params.pe_oversampling)],
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
        with tqdm(total=sum(params.volumes), unit="vol", desc=f"simulating {challenge}",
                  disable=not progress) as bar:
            for split_index, (split, count) in enumerate(zip(params.splits, params.volumes)):
                folder = staging / f"{challenge}_{split}"
                folder.mkdir()
                files = {}
                # The standard splits number their volumes across train, val and test (as
                # before 0.2, so their data is unchanged); any other split has its own range.
                first = sum(params.volumes[:split_index]) if split in SPLITS else 100_000 * (split_index + 1)
                for local in range(count):
                    name = f"sim_{split}_{local:04d}.h5"
                    index = first + local
                    head = heads[index % len(heads)]
                    draw = _draw(params, split, local, seed, index)
                    _write_volume(folder / name, head, params, challenge, seed, index, draw)
                    files[name] = {"source": head.name, "contrast": draw.contrast,
                                   "kspace_size": [2 * r, _columns(r, draw.pe_oversampling)]}
                    bar.update()
                # Each split records how it was made: a dataset's splits may come from
                # different runs (the ood preset adds one), and reports cite their split's entry.
                summary["splits"][split] = {
                    "folder": f"{challenge}_{split}",
                    "challenge": challenge,
                    "volumes": count,
                    "slices": count * params.slices,
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


def _columns(r: int, pe_oversampling: float) -> int:
    """Phase-encode columns for an ``r``-wide image: even, at least ``r``."""
    return max(r, 2 * math.ceil(pe_oversampling * r / 2))


def _resolve_preset(preset: str | Preset, recon_size: int | None) -> Preset:
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise UserError(f"preset {preset!r}: unknown, expected one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    if recon_size is not None:
        preset = replace(preset, recon_size=recon_size)
    if preset.recon_size < 16:
        raise UserError(f"recon_size {preset.recon_size}: must be at least 16")
    if len(preset.volumes) != len(preset.splits):
        raise UserError(f"preset {preset}: one volume count per split")
    if preset.slices < 1 or min(preset.volumes) < 0 or sum(preset.volumes) < 1:
        raise UserError(f"preset {preset}: needs at least one slice and one volume")
    if not 1 <= preset.coils[0] <= preset.coils[1] or not 0 < preset.snr[0] <= preset.snr[1]:
        raise UserError(f"preset {preset}: coil and SNR ranges must be positive and ordered")
    unknown = [c for c in preset.contrasts if c not in CONTRASTS]
    if unknown or not preset.contrasts:
        raise UserError(f"preset contrasts {list(preset.contrasts)}: expected some of {', '.join(CONTRASTS)}")
    return preset


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


def _prepare_head(path: Path) -> _Head:
    """Loads a source and finds the axial slab through the brain and the in-plane field of view.

    The slab runs down ``_SLAB_MM`` from the highest axial slice that still holds a good part
    of the head, which works for a skull-stripped brain and for a whole head alike.
    """
    volume = load_anatomy(path)
    foreground = volume > _FOREGROUND
    area = foreground.sum(axis=(0, 1))
    big = np.flatnonzero(area >= _AREA_FRACTION * area.max())
    z_top = float(big.max())
    z_bottom = max(float(big.min()), z_top - _SLAB_MM)

    in_slab = foreground[:, :, int(z_bottom):int(z_top) + 1]
    xs = np.flatnonzero(in_slab.any(axis=(1, 2)))
    ys = np.flatnonzero(in_slab.any(axis=(0, 2)))
    extent = max(xs[-1] - xs[0], ys[-1] - ys[0]) + 1
    centre = np.array([(xs[0] + xs[-1]) / 2, (ys[0] + ys[-1]) / 2, (z_bottom + z_top) / 2])
    return _Head(path.name, path, source_digest(path), volume, centre, float(extent), z_top - z_bottom)


@dataclass(frozen=True)
class _Draw:
    """What varies between the volumes of a dataset besides anatomy and noise: the contrast and,
    for domain-randomised volumes, every factor of :class:`Randomization` (recorded in the file)."""

    contrast: str  # "source", "t1", "pd" or "random"
    snr: float  # of randomised volumes (the others draw it from the preset's range)
    pe_oversampling: float
    fov_margin: float
    phase_std: float = 1.5
    intensities: tuple[float, ...] = ()
    texture: float = 0.0
    bias_std: float = 0.2
    blur_px: tuple[float, float] = (0.0, 0.0)
    shells: tuple[float, float, float] | None = None  # gap, bone, soft (mm)
    randomized: bool = False

    def attributes(self) -> dict:
        attrs = {"contrast": self.contrast, "randomized": self.randomized, "pe_oversampling": self.pe_oversampling,
                 "fov_margin": self.fov_margin, "phase_std": self.phase_std}
        if self.randomized:
            attrs.update(bias_std=self.bias_std, blur_px_rows=self.blur_px[0], blur_px_cols=self.blur_px[1])
        if self.contrast == "random":
            attrs.update({f"intensity_{t}": v for t, v in zip(tissues.TISSUES, self.intensities)})
            attrs.update(texture=self.texture, shells_mm=list(self.shells) if self.shells else [])
        return attrs


def _draw(params: Preset, split: str, local: int, seed: int, index: int) -> _Draw:
    """The contrast and randomised factors of one volume, from ``(seed, index)`` alone.

    Standard volumes draw their SNR as before 0.2 (in :func:`_write_volume`, from the scan's
    random stream), so the data of the standard presets has not changed.
    """
    if split not in params.randomized:
        return _Draw(params.contrasts[local % len(params.contrasts)], snr=float("nan"),
                     pe_oversampling=params.pe_oversampling, fov_margin=_FOV_MARGIN)
    ranges = params.randomization
    rng = np.random.default_rng([seed, index, 2])
    if rng.uniform() < ranges.standard_fraction:
        return _Draw("source", snr=float("nan"), pe_oversampling=params.pe_oversampling, fov_margin=_FOV_MARGIN)

    def uniform(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds))

    shells = None
    if rng.uniform() < ranges.shells:
        shells = (uniform(ranges.gap_mm), uniform(ranges.bone_mm), uniform(ranges.soft_mm))
    return _Draw(
        contrast="random" if ranges.contrast else "source",
        randomized=True,
        snr=float(np.exp(rng.uniform(*np.log(ranges.snr)))),
        pe_oversampling=float(rng.choice(ranges.pe_oversampling)),
        fov_margin=uniform(ranges.fov_margin),
        phase_std=uniform(ranges.phase_std),
        intensities=tuple(float(v) for v in rng.uniform(*ranges.intensity, size=len(tissues.TISSUES))),
        texture=uniform(ranges.texture),
        bias_std=uniform(ranges.bias_std),
        blur_px=(uniform(ranges.blur_px), uniform(ranges.blur_px)),
        shells=shells,
    )


def _smooth_basis(n: int, knots: int) -> np.ndarray:
    """Weights of shape (n, knots) that blend evenly spaced control values into a smooth profile."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    c = np.linspace(0.0, 1.0, knots)[None, :]
    weights = np.exp(-0.5 * ((t - c) * (knots - 1)) ** 2)
    # Unit L2 rows give every output point the control values' variance.
    return weights / np.linalg.norm(weights, axis=1, keepdims=True)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], knots: tuple[int, ...],
                  std: float) -> np.ndarray:
    """A smooth Gaussian random field of pointwise standard deviation ``std``.

    It blends Gaussian values at ``knots`` evenly spaced control points per axis: far cheaper
    than low-pass filtering white noise on the full grid, and as smooth.
    """
    field = rng.normal(0.0, std, size=knots)
    for axis, (n, k) in enumerate(zip(shape, knots)):
        field = np.moveaxis(np.tensordot(_smooth_basis(n, k), field, axes=(1, axis)), 0, axis)
    return field


def _rotation(rng: np.random.Generator, max_degrees: tuple[float, float, float]) -> np.ndarray:
    """A random rotation about the x (pitch), y (roll) and z (in-plane) axes."""
    ax, ay, az = np.deg2rad(rng.uniform(-1, 1, size=3) * np.asarray(max_degrees))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _synthesize_subject(head: _Head, r: int, slices: int, fov_mm: float, rng: np.random.Generator,
                        draw: _Draw) -> np.ndarray:
    """Samples the axial slices of a randomly deformed, re-contrasted copy of a head.

    Only the ``slices x r x r`` output grid is mapped back into the source, so the cost does
    not depend on the source's size. The geometry draws come first from ``rng`` and in the
    same order for every contrast, so one ``(seed, index)`` gives one subject's shape.

    Returns:
        Magnitude images, float32 of shape (slices, r, r), roughly in [0, 1].
    """
    pixel = fov_mm / r
    offsets = (np.arange(r) - (r - 1) / 2) * pixel
    depths = np.linspace(-head.slab_mm / 2, head.slab_mm / 2, slices)
    depth, row, col = np.meshgrid(depths, offsets, offsets, indexing="ij")
    # Patient coordinates (RAS, mm from the slab centre) of each output pixel: columns go
    # from the patient's right to left and rows from anterior to posterior.
    points = np.stack([-col, -row, depth]).reshape(3, -1)

    # The map goes from output to source, so a scale below 1 enlarges the subject.
    scale = rng.uniform(0.97, 1.12) * rng.uniform(0.96, 1.04, size=3)
    matrix = _rotation(rng, (6.0, 4.0, 8.0)) * scale
    shift = rng.uniform(-1, 1, size=3) * np.array([4.0, 4.0, 5.0])
    grid = (slices, r, r)
    warp = np.stack([_smooth_field(rng, grid, (3, 5, 5), 3.0) for _ in range(3)]).reshape(3, -1)
    coords = matrix @ points + (shift + head.centre)[:, None] + warp

    def sample(volume: np.ndarray, outside: float = 0.0) -> np.ndarray:
        return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=outside).reshape(grid)

    if draw.contrast == "source":
        # A gamma and a gentle monotone remap change the grey/white/CSF balance of the T1.
        image = sample(head.volume)
        image = image ** np.exp(rng.uniform(-0.3, 0.3))
        knots = np.linspace(0.0, 1.0, 5)
        levels = np.sort(np.concatenate([[0.0], knots[1:-1] + rng.uniform(-0.06, 0.06, 3), [1.0]]))
        image = np.interp(image, knots, levels)
    elif draw.contrast == "t1":
        image = sample(head.volume)
    else:
        maps, outside_mm, texture = head.tissue_data()
        probabilities = np.stack([sample(m) for m in maps])
        if draw.shells is not None:
            probabilities = _add_shells(probabilities, sample(outside_mm, outside=1e3), draw.shells)
        if draw.contrast == "pd":
            intensities = np.array([tissues.PD_LIKE[t] for t in tissues.TISSUES])
            # T1 texture has white matter above grey; proton density has them the other way.
            gain = -0.5
        else:
            intensities, gain = np.asarray(draw.intensities), draw.texture
        image = np.tensordot(intensities, probabilities, axes=1)
        # Texture only where there is tissue: the background stays empty.
        image += gain * sample(texture) * np.clip(probabilities.sum(axis=0), 0, 1)
    if any(draw.blur_px):
        image = ndimage.gaussian_filter(image, (0.0, *draw.blur_px))
    image = np.clip(image, 0.0, None)
    image *= np.exp(_smooth_field(rng, grid, (3, 3, 3), draw.bias_std))
    return image.astype(np.float32)


def _add_shells(probabilities: np.ndarray, outside_mm: np.ndarray,
                shells: tuple[float, float, float]) -> np.ndarray:
    """Adds CSF, bone and soft-tissue layers of the given thicknesses (mm) around the head.

    The layers start where the head's tissue ends, with 1 mm soft edges, and fill only what
    the head leaves empty.
    """
    gap, bone, soft = shells

    def band(start: float, stop: float) -> np.ndarray:
        return np.clip(outside_mm - start + 0.5, 0, 1) * np.clip(stop - outside_mm + 0.5, 0, 1)

    empty = np.clip(1.0 - probabilities.sum(axis=0), 0, 1)
    layers = {"csf": band(0.0, gap), "bone": band(gap, gap + bone), "soft": band(gap + bone, gap + bone + soft)}
    out = probabilities.copy()
    for name, layer in layers.items():
        out[tissues.TISSUES.index(name)] += empty * layer
    return out


def _coil_sensitivities(rng: np.random.Generator, coils: int, fov_mm: float, slab_mm: float,
                        inside: np.ndarray) -> np.ndarray:
    """Complex sensitivities of a ring of loop coils around the field of view.

    Each coil is a rectangular loop, long along z, seen in cross-section as two antiparallel
    wires. The complex B1 of a wire at complex position p is, by Biot-Savart in 2-D,
    proportional to 1 / (z - p) (softened near the wire by its thickness): magnitude
    1/distance and a phase that turns with the angle, so a loop falls off like a dipole with
    a smoothly varying phase. The ring lies just outside the head. A Gaussian
    profile along z per coil makes the coils' relative weights change between slices.

    Args:
        rng: Source of the coil positions and phases.
        coils: Number of coils.
        fov_mm: Side of the square field of view.
        slab_mm: Distance between the first and the last slice.
        inside: Object mask of shape (slices, r, r).

    Returns:
        complex64 array of shape (slices, coils, r, r), scaled per slice so that the mean of
        ``sum_c |S_c|^2`` over the object is 1, which keeps the combined image at the set SNR.
    """
    slices, r, _ = inside.shape
    offsets = (np.arange(r) - (r - 1) / 2) * (fov_mm / r)
    position = offsets[None, :] - 1j * offsets[:, None]
    spacing = 2 * np.pi / coils
    jitter = rng.uniform(-0.1, 0.1, coils)
    angles = rng.uniform(0, 2 * np.pi) + spacing * (np.arange(coils) + jitter)
    radius = 0.5 * fov_mm * rng.uniform(1.15, 1.3)
    wire_a = radius * np.exp(1j * (angles - 0.4 * spacing))[:, None, None]
    wire_b = radius * np.exp(1j * (angles + 0.4 * spacing))[:, None, None]
    # A wire thickness keeps the field finite in the corners of the grid, outside the head.
    thickness = 0.05 * fov_mm

    def wire(p: np.ndarray) -> np.ndarray:
        d = position - p
        return d.conj() / (np.abs(d) ** 2 + thickness**2)

    loops = wire(wire_a) - wire(wire_b)
    loops *= np.exp(1j * rng.uniform(0, 2 * np.pi, coils))[:, None, None]

    depths = np.linspace(-slab_mm / 2, slab_mm / 2, slices)
    centres = rng.uniform(-0.3, 0.3, coils) * slab_mm
    gains = np.exp(-0.5 * ((depths[:, None] - centres[None, :]) / (0.5 * fov_mm)) ** 2)

    maps = (gains[:, :, None, None] * loops[None]).astype(np.complex64)
    power = (maps.real ** 2 + maps.imag ** 2).sum(axis=1)
    for k in range(slices):
        region = inside[k] if inside[k].any() else np.ones_like(inside[k])
        maps[k] /= np.sqrt(power[k][region].mean())
    return maps


def _fft2c(image: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes, fastMRI's ``fft2c`` convention."""
    axes = (-2, -1)
    kspace = np.fft.fft2(np.fft.ifftshift(image, axes=axes), norm="ortho")
    return np.fft.fftshift(kspace, axes=axes)


def _ifft2c(kspace: np.ndarray) -> np.ndarray:
    """Centred orthonormal inverse 2-D FFT over the last two axes, fastMRI's ``ifft2c``."""
    axes = (-2, -1)
    image = np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), norm="ortho")
    return np.fft.fftshift(image, axes=axes)


def _ismrmrd_header(height: int, width: int, r: int, fov_mm: float, slice_mm: float,
                    slices: int, coils: int, acquisition: str) -> bytes:
    """An ISMRMRD XML header with what fastMRI's SliceDataset reads, and the geometry.

    The phase-encode limits span all ``width`` columns with the centre at ``width // 2``, so
    SliceDataset's padding is 0 on the left and ``width`` on the right.
    """
    pixel = fov_mm / r

    def xyz(x: float, y: float, z: float) -> dict:
        return {"x": x, "y": y, "z": z}

    def limits(maximum: int) -> dict:
        return {"minimum": 0, "maximum": maximum, "center": (maximum + 1) // 2}

    fields = {
        "measurementInformation": {"patientPosition": "HFS", "protocolName": acquisition},
        "acquisitionSystemInformation": {
            "systemVendor": "mrirecon simulator",
            "receiverChannels": coils,
        },
        "experimentalConditions": {"H1resonanceFrequency_Hz": 127728000},
        "encoding": {
            "encodedSpace": {
                "matrixSize": xyz(height, width, 1),
                "fieldOfView_mm": xyz(height * pixel, width * pixel, slice_mm),
            },
            "reconSpace": {
                "matrixSize": xyz(r, r, 1),
                "fieldOfView_mm": xyz(fov_mm, fov_mm, slice_mm),
            },
            "encodingLimits": {
                "kspace_encoding_step_1": limits(width - 1),
                "kspace_encoding_step_2": limits(0),
                "slice": limits(slices - 1),
            },
            "trajectory": "cartesian",
        },
    }

    def build(parent: ElementTree.Element, children: dict) -> None:
        for tag, value in children.items():
            element = ElementTree.SubElement(parent, tag)
            if isinstance(value, dict):
                build(element, value)
            else:
                element.text = f"{value:.3f}" if isinstance(value, float) else str(value)

    root = ElementTree.Element("ismrmrdHeader", xmlns=_ISMRMRD_NAMESPACE)
    build(root, fields)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def _write_volume(path: Path, head: _Head, params: Preset, challenge: str, seed: int,
                  index: int, draw: _Draw) -> None:
    """Simulates one subject's volume and writes it as a fastMRI HDF5 file."""
    r, slices = params.recon_size, params.slices
    height, width = 2 * r, _columns(r, draw.pe_oversampling)
    fov_mm = draw.fov_margin * head.extent_mm
    anatomy_rng = np.random.default_rng([seed, index, 0])
    scan_rng = np.random.default_rng([seed, index, 1])

    magnitude = _synthesize_subject(head, r, slices, fov_mm, anatomy_rng, draw)
    magnitude *= np.exp(scan_rng.uniform(*np.log(_SCALE_RANGE))) / magnitude.max()
    inside = magnitude > _FOREGROUND * magnitude.max()
    # Drawn even when the draw fixes the SNR, so the stream stays as it was before 0.2.
    snr = float(np.exp(scan_rng.uniform(*np.log(params.snr))))
    if draw.randomized:
        snr = draw.snr
    sigma = np.float32(magnitude[inside].mean() / snr)
    phase = _smooth_field(scan_rng, magnitude.shape, (3, 4, 4), draw.phase_std)
    images = (magnitude * np.exp(1j * phase)).astype(np.complex64)[:, None]

    multicoil = challenge == "multicoil"
    coils = 1
    if multicoil:
        coils = int(scan_rng.integers(params.coils[0], params.coils[1] + 1))
        images = images * _coil_sensitivities(scan_rng, coils, fov_mm, head.slab_mm, inside)

    top, left = (height - r) // 2, (width - r) // 2
    target_key = "reconstruction_rss" if multicoil else "reconstruction_esc"
    kspace_shape = (slices, coils, height, width) if multicoil else (slices, height, width)
    with h5py.File(path, "w") as hf:
        kspace_out = hf.create_dataset("kspace", shape=kspace_shape, dtype=np.complex64)
        target_out = hf.create_dataset(target_key, shape=(slices, r, r), dtype=np.float32)
        for k in range(slices):
            canvas = np.zeros((coils, height, width), dtype=np.complex64)
            canvas[:, top:top + r, left:left + r] = images[k]
            noise = scan_rng.standard_normal((coils, height, width, 2), dtype=np.float32)
            kspace = _fft2c(canvas) + sigma * noise.view(np.complex64)[..., 0]
            # The targets come from exactly the k-space that is stored.
            kspace = kspace.astype(np.complex64, copy=False)
            crop = _ifft2c(kspace)[:, top:top + r, left:left + r]
            # Both targets are the root sum of squares; single-coil has one term.
            target = np.sqrt((crop.real ** 2 + crop.imag ** 2).sum(axis=0))
            kspace_out[k] = kspace if multicoil else kspace[0]
            target_out[k] = target

        slice_mm = head.slab_mm / max(slices - 1, 1)
        acquisition = _ACQUISITIONS[draw.contrast]
        hf.create_dataset("ismrmrd_header", data=_ismrmrd_header(
            height, width, r, fov_mm, slice_mm, slices, coils, acquisition))
        volume = target_out[()]
        hf.attrs["max"] = float(volume.max())
        hf.attrs["norm"] = float(np.linalg.norm(volume.astype(np.float64)))
        hf.attrs["acquisition"] = acquisition
        hf.attrs["patient_id"] = f"sim-{seed}-{index:05d}"
        hf.attrs["simulated"] = True
        hf.attrs["source"] = head.name
        hf.attrs["source_sha256"] = head.sha256
        # Every factor that varies between volumes, the SNR included, for anyone slicing results.
        for key, value in {**draw.attributes(), "snr": snr}.items():
            hf.attrs[key] = value
