"""Simulated fastMRI-format datasets made from real anatomical volumes, offline.

Each volume is a distinct synthetic subject: a real T1-weighted head (see
:mod:`mrirecon.data.anatomy`) under a random affine transform, a smooth elastic deformation,
a contrast remapping and a smooth multiplicative bias field. Its axial slices are acquired
with the physics the fastMRI data came from:

* the real magnitude image fills the central ``r x r`` of an ``H x W`` field of view,
  ``H = 2r`` (2x readout oversampling along the rows) and ``W = 2*ceil(1.15r/2)`` phase-encode
  columns along the last axis, as in fastMRI knee (640 x 368 for a 320 x 320 target);
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
from mrirecon.data.anatomy import default_sources, load_anatomy, resolve_source, source_digest
from mrirecon.errors import UserError

SPLITS = ("train", "val", "test")
CHALLENGES = ("singlecoil", "multicoil")
SUMMARY_FILE = "simulation.json"
_OWN_ENTRY = re.compile(
    rf"({'|'.join(CHALLENGES)})_({'|'.join(SPLITS)})|{re.escape(SUMMARY_FILE)}"
)


@dataclass(frozen=True)
class Preset:
    """Size of a simulated dataset.

    Attributes:
        recon_size: Side ``r`` of the square target image, in pixels.
        volumes: Number of volumes in the train, val and test splits.
        slices: Axial slices per volume.
        coils: Inclusive range of the number of receive coils, drawn per multi-coil volume.
        snr: Range of the signal-to-noise ratio, drawn log-uniformly per volume (see the
            module docstring for its definition).
    """

    recon_size: int
    volumes: tuple[int, int, int]
    slices: int
    coils: tuple[int, int]
    snr: tuple[float, float]


PRESETS = {
    # Small enough to simulate in seconds and to train a U-Net usefully on two CPU cores.
    "demo": Preset(recon_size=128, volumes=(16, 4, 4), slices=14, coils=(8, 8), snr=(20.0, 40.0)),
    "full": Preset(recon_size=320, volumes=(40, 8, 8), slices=18, coils=(8, 15), snr=(15.0, 40.0)),
}

# Anatomy geometry, in millimetres of the 1 mm source grid.
_SLAB_MM = 100.0  # axial coverage, from near the vertex down to the cerebellum
_AREA_FRACTION = 0.35  # axial slices with less head than this fraction of the largest are skipped
_FOV_MARGIN = 1.2  # field of view over the head's largest in-plane extent, room for the affine
_FOREGROUND = 0.1  # fraction of the maximum above which a voxel counts as object

# Signal scale of the magnitude image's maximum, chosen so targets land near fastMRI's 1e-4..1e-3.
_SCALE_RANGE = (2e-4, 8e-4)
_ACQUISITION = "AXT1"  # fastMRI brain's name for an axial T1, the templates' contrast
_ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"


@dataclass(frozen=True)
class _Head:
    """A loaded source volume and where its axial slab lies."""

    name: str
    path: Path
    sha256: str
    volume: np.ndarray
    centre: np.ndarray  # voxel coordinates (x, y, z) of the slab's centre
    fov_mm: float
    slab_mm: float


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

    The result is ``<out_dir>/<challenge>_{train,val,test}/sim_<split>_<index:04d>.h5``, one
    file per volume, readable by an unchanged :class:`fastmri.data.SliceDataset`, plus
    ``<out_dir>/simulation.json`` with the summary. All splits, test included, carry fully
    sampled k-space and targets. Everything is built in a temporary folder next to
    ``out_dir`` and renamed into place at the end, so a failure or an interrupt leaves
    nothing half-written.

    The same ``seed`` gives identical arrays; volume ``i`` draws its anatomy from
    ``(seed, i)`` alone, so the single- and multi-coil datasets of one seed show the same
    subjects.

    Args:
        out_dir: Dataset root to create.
        preset: A name in :data:`PRESETS` or a :class:`Preset`.
        challenge: ``"singlecoil"`` or ``"multicoil"``.
        seed: Seed of every random draw.
        sources: Anatomical volumes (paths, or names such as ``colin27``; see
            :func:`~mrirecon.data.anatomy.resolve_source`), used in turn per volume; defaults
            to :func:`~mrirecon.data.anatomy.default_sources` (the MNI152 template alone).
        overwrite: Replace ``out_dir`` if it exists and is not empty. Only a folder that
            holds nothing but a previous simulation is replaced.
        recon_size: Overrides the preset's target size ``r``.
        progress: Show a progress bar over volumes.

    Returns:
        A summary: challenge, seed, sizes, the sources (name, path, SHA-256) and, per split,
        the volume and slice counts, the folder and each file's source. It is also the
        dataset manifest, ``<out_dir>/simulation.json``.

    Raises:
        UserError: ``out_dir`` is not empty (without ``overwrite``), a source is unreadable,
            or an argument is out of range.
    """
    # An absolute, normalised path has a real name and parent, even for "." or "a/..".
    out_dir = Path(os.path.abspath(out_dir))
    params = _resolve_preset(preset, recon_size)
    if challenge not in CHALLENGES:
        raise UserError(f"challenge {challenge!r}: expected one of {', '.join(CHALLENGES)}")
    if seed < 0:
        raise UserError(f"seed {seed}: must not be negative")
    _check_destination(out_dir, overwrite)

    source_paths = [resolve_source(p) for p in (default_sources() if sources is None else sources)]
    if not source_paths:
        raise UserError("sources: the list of anatomical volumes is empty")
    heads = [_prepare_head(path) for path in source_paths]

    r = params.recon_size
    height, width = 2 * r, 2 * math.ceil(1.15 * r / 2)
    summary = {
        "challenge": challenge,
        "seed": seed,
        "preset": asdict(params),
        "recon_size": [r, r],
        "kspace_size": [height, width],
        "sources": [{"name": head.name, "path": str(head.path), "sha256": head.sha256} for head in heads],
        "splits": {},
    }

    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as err:
        raise UserError(f"{out_dir}: cannot create the dataset folder ({atomic.describe_os_error(err)})") from None
    try:
        index = 0
        with tqdm(total=sum(params.volumes), unit="vol", desc=f"simulating {challenge}",
                  disable=not progress) as bar:
            for split, count in zip(SPLITS, params.volumes):
                folder = staging / f"{challenge}_{split}"
                folder.mkdir()
                files = {}
                for local in range(count):
                    name = f"sim_{split}_{local:04d}.h5"
                    head = heads[index % len(heads)]
                    _write_volume(folder / name, head, params, challenge, seed, index, (height, width))
                    files[name] = head.name
                    index += 1
                    bar.update()
                summary["splits"][split] = {
                    "folder": f"{challenge}_{split}",
                    "volumes": count,
                    "slices": count * params.slices,
                    "files": files,
                }
        (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        _move_into_place(staging, out_dir)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"{out_dir}: cannot write the dataset ({atomic.describe_os_error(err)})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    summary["out_dir"] = str(out_dir)
    return summary


def _resolve_preset(preset: str | Preset, recon_size: int | None) -> Preset:
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise UserError(f"preset {preset!r}: unknown, expected one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    if recon_size is not None:
        preset = replace(preset, recon_size=recon_size)
    if preset.recon_size < 16:
        raise UserError(f"recon_size {preset.recon_size}: must be at least 16")
    if preset.slices < 1 or min(preset.volumes) < 0 or sum(preset.volumes) < 1:
        raise UserError(f"preset {preset}: needs at least one slice and one volume")
    if not 1 <= preset.coils[0] <= preset.coils[1] or not 0 < preset.snr[0] <= preset.snr[1]:
        raise UserError(f"preset {preset}: coil and SNR ranges must be positive and ordered")
    return preset


def _check_destination(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if not entries:
        return
    if not overwrite:
        raise UserError(f"{out_dir}: folder is not empty; use overwrite to replace it")
    foreign = [name for name in entries if not _OWN_ENTRY.fullmatch(name)]
    if foreign:
        raise UserError(
            f"{out_dir}: will not overwrite, it holds {foreign[0]!r}, which a simulation "
            "does not write"
        )


def _move_into_place(staging: Path, out_dir: Path) -> None:
    if out_dir.is_dir() and any(out_dir.iterdir()):
        # The old dataset stays intact until the new one is complete.
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        out_dir.rename(trash / "old")
        staging.rename(out_dir)
        shutil.rmtree(trash)
    else:
        if out_dir.is_dir():
            out_dir.rmdir()
        staging.rename(out_dir)


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
    return _Head(path.name, path, source_digest(path), volume, centre, _FOV_MARGIN * float(extent), z_top - z_bottom)


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


def _synthesize_subject(head: _Head, r: int, slices: int, rng: np.random.Generator) -> np.ndarray:
    """Samples the axial slices of a randomly deformed, re-contrasted copy of a head.

    Only the ``slices x r x r`` output grid is mapped back into the source, so the cost does
    not depend on the source's size.

    Returns:
        Magnitude images, float32 of shape (slices, r, r), roughly in [0, 1].
    """
    pixel = head.fov_mm / r
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

    image = ndimage.map_coordinates(head.volume, coords, order=1, mode="constant", cval=0.0)
    image = image.reshape(grid)

    # Contrast: a gamma and a gentle monotone remap change the grey/white/CSF balance.
    image = image ** np.exp(rng.uniform(-0.3, 0.3))
    knots = np.linspace(0.0, 1.0, 5)
    levels = np.sort(np.concatenate([[0.0], knots[1:-1] + rng.uniform(-0.06, 0.06, 3), [1.0]]))
    image = np.interp(image, knots, levels)
    image *= np.exp(_smooth_field(rng, grid, (3, 3, 3), 0.2))
    return image.astype(np.float32)


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
                    slices: int, coils: int) -> bytes:
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
        "measurementInformation": {"patientPosition": "HFS", "protocolName": _ACQUISITION},
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
                  index: int, kspace_size: tuple[int, int]) -> None:
    """Simulates one subject's volume and writes it as a fastMRI HDF5 file."""
    r, slices = params.recon_size, params.slices
    height, width = kspace_size
    anatomy_rng = np.random.default_rng([seed, index, 0])
    scan_rng = np.random.default_rng([seed, index, 1])

    magnitude = _synthesize_subject(head, r, slices, anatomy_rng)
    magnitude *= np.exp(scan_rng.uniform(*np.log(_SCALE_RANGE))) / magnitude.max()
    inside = magnitude > _FOREGROUND * magnitude.max()
    snr = float(np.exp(scan_rng.uniform(*np.log(params.snr))))
    sigma = np.float32(magnitude[inside].mean() / snr)
    phase = _smooth_field(scan_rng, magnitude.shape, (3, 4, 4), 1.5)
    images = (magnitude * np.exp(1j * phase)).astype(np.complex64)[:, None]

    multicoil = challenge == "multicoil"
    coils = 1
    if multicoil:
        coils = int(scan_rng.integers(params.coils[0], params.coils[1] + 1))
        images = images * _coil_sensitivities(scan_rng, coils, head.fov_mm, head.slab_mm, inside)

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
        hf.create_dataset("ismrmrd_header", data=_ismrmrd_header(
            height, width, r, head.fov_mm, slice_mm, slices, coils))
        volume = target_out[()]
        hf.attrs["max"] = float(volume.max())
        hf.attrs["norm"] = float(np.linalg.norm(volume.astype(np.float64)))
        hf.attrs["acquisition"] = _ACQUISITION
        hf.attrs["patient_id"] = f"sim-{seed}-{index:05d}"
        hf.attrs["simulated"] = True
        hf.attrs["source"] = head.name
        hf.attrs["source_sha256"] = head.sha256
        hf.attrs["snr"] = snr
