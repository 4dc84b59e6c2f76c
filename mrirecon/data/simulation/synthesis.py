"""A synthetic subject from a real head: the source volume's slab, a random affine and elastic
deformation, and its contrast (a remapped T1, or random intensities per tissue with texture,
bias, blur and shells), as magnitude images on the reconstruction grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrirecon.data import tissues
from mrirecon.data.anatomy import load_anatomy, source_digest
from mrirecon.data.simulation.acquisition import coil_sensitivities
from mrirecon.data.simulation.presets import FOV_MARGIN, Draw

# Anatomy geometry, in millimetres of the 1 mm source grid.
_SLAB_MM = 100.0  # axial coverage, from near the vertex down to the cerebellum
_AREA_FRACTION = 0.35  # axial slices with less head than this fraction of the largest are skipped
FOREGROUND = 0.1  # fraction of the maximum above which a voxel counts as object


@dataclass
class Head:
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


def prepare_head(path: Path) -> Head:
    """Loads a source and finds the axial slab through the brain and the in-plane field of view.

    The slab runs down ``_SLAB_MM`` from the highest axial slice that still holds a good part
    of the head, which works for a skull-stripped brain and for a whole head alike.
    """
    volume = load_anatomy(path)
    foreground = volume > FOREGROUND
    area = foreground.sum(axis=(0, 1))
    big = np.flatnonzero(area >= _AREA_FRACTION * area.max())
    z_top = float(big.max())
    z_bottom = max(float(big.min()), z_top - _SLAB_MM)

    in_slab = foreground[:, :, int(z_bottom):int(z_top) + 1]
    xs = np.flatnonzero(in_slab.any(axis=(1, 2)))
    ys = np.flatnonzero(in_slab.any(axis=(0, 2)))
    extent = max(xs[-1] - xs[0], ys[-1] - ys[0]) + 1
    centre = np.array([(xs[0] + xs[-1]) / 2, (ys[0] + ys[-1]) / 2, (z_bottom + z_top) / 2])
    return Head(path.name, path, source_digest(path), volume, centre, float(extent), z_top - z_bottom)


def _smooth_basis(n: int, knots: int) -> np.ndarray:
    """Weights of shape (n, knots) that blend evenly spaced control values into a smooth profile."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    c = np.linspace(0.0, 1.0, knots)[None, :]
    weights = np.exp(-0.5 * ((t - c) * (knots - 1)) ** 2)
    # Unit L2 rows give every output point the control values' variance.
    return weights / np.linalg.norm(weights, axis=1, keepdims=True)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], knots: tuple[int, ...],
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


def synthesize_subject(head: Head, r: int, slices: int, fov_mm: float, rng: np.random.Generator,
                        draw: Draw) -> np.ndarray:
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
    warp = np.stack([smooth_field(rng, grid, (3, 5, 5), 3.0) for _ in range(3)]).reshape(3, -1)
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
        if draw.contrast in tissues.FIXED_CONTRASTS:
            intensities = np.array([tissues.FIXED_CONTRASTS[draw.contrast][t] for t in tissues.TISSUES])
            # T1 texture has white matter above grey; PD, T2 and FLAIR have them the other way.
            gain = -0.5
        else:
            intensities, gain = np.asarray(draw.intensities), draw.texture
        image = np.tensordot(intensities, probabilities, axes=1)
        # Texture only where there is tissue: the background stays empty.
        image += gain * sample(texture) * np.clip(probabilities.sum(axis=0), 0, 1)
    if any(draw.blur_px):
        image = ndimage.gaussian_filter(image, (0.0, *draw.blur_px))
    image = np.clip(image, 0.0, None)
    image *= np.exp(smooth_field(rng, grid, (3, 3, 3), draw.bias_std))
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


@dataclass(frozen=True)
class CoilSubject:
    """A simulated subject as the CMRxRecon and Calgary-Campinas downloads draw it: the slices'
    magnitude (maximum 1), a smooth phase, the loop coils' maps (None for single-coil) and the
    noise level that gives ``snr`` over the head."""

    magnitude: np.ndarray  # (slices, r, r)
    phase: np.ndarray  # (slices, r, r), radians
    maps: np.ndarray | None  # complex (slices, coils, r, r)
    sigma: float


def coil_subject(head: Head, r: int, slices: int, coils: int | None, snr: float,
                 rng: np.random.Generator) -> CoilSubject:
    """Draws a :class:`CoilSubject` from ``rng`` (the head's shape and contrast, then its phase,
    then the coils, in this order)."""
    draw = Draw("source", snr=float("nan"), pe_oversampling=1.0, fov_margin=FOV_MARGIN)
    fov_mm = FOV_MARGIN * head.extent_mm
    magnitude = synthesize_subject(head, r, slices, fov_mm, rng, draw)
    magnitude /= magnitude.max()
    inside = magnitude > FOREGROUND
    phase = smooth_field(rng, magnitude.shape, (3, 4, 4), 1.0)
    maps = coil_sensitivities(rng, coils, fov_mm, head.slab_mm, inside) if coils else None
    return CoilSubject(magnitude, phase, maps, float(magnitude[inside].mean() / snr))
