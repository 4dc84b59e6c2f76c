"""2-D sampling masks over a whole k-space plane (the ky-kz plane of a 3-D acquisition, such as
Calgary-Campinas' 218 x 170 slices): variable-density Poisson disc and Gaussian, each with a
fully sampled calibration disc at the centre, and optionally partial Fourier.

Seeded as :mod:`mrirecon.core.masks` seeds its column masks: a validation or test volume's
mask is fixed by its file name (one per acceleration), a training mask comes from an integer
seed. The acceleration is counted over the whole plane, ``H * W / sampled points``: a partial
Fourier band that is never acquired counts as skipped, the calibration disc as sampled, so the
label is what the scan time saves.

* ``poisson2d``: Bridson-style dart throwing (Bridson 2007) with a radius that grows with the
  distance from the calibration disc, ``1 + s r`` (``r`` the normalised k-space radius beyond
  the disc; corners outside the inscribed ellipse never sampled), the density ``sigpy.mri.poisson``
  uses beyond its calibration box; the slope ``s`` is
  found by bisection until the acceleration is within ``tolerance`` (relative) of nominal. Our
  own code, in NumPy: sigpy's needs numba (a heavy dependency for one function) and its search
  fails outright where it misses its tolerance. A draw takes about 0.1-0.5 s at 218 x 180, so a
  training sampler draws from a bank of masks per shape (``bank_size``), made once.
* ``gaussian2d``: exactly the nominal number of points, drawn without replacement with weights
  of a centred Gaussian (standard deviation ``gaussian_std`` of each axis' length); fast.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, Sequence, get_args

import numpy as np

from mrirecon.core.masks import fname_seed

PlaneMaskType = Literal["poisson2d", "gaussian2d"]
PLANE_MASK_TYPES: tuple[str, ...] = get_args(PlaneMaskType)


def calibration_disc(shape: tuple[int, int], radius: float) -> np.ndarray:
    """The fully sampled centre: points within ``radius`` (grid units) of the centre ``(H//2, W//2)``."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - shape[0] // 2) ** 2 + (cols - shape[1] // 2) ** 2 <= radius**2


def acquired_columns(width: int, partial_fourier: float) -> int:
    """Columns of the last axis a partial-Fourier scan acquires: ``ceil((1 - partial_fourier) * W)``,
    as DIRECT's Calgary-Campinas reader keeps them (145 of 170 at 0.15); rounded to 6 decimals
    first, so that 0.85 * 180, 152.99999999999997 in floating point, keeps 153."""
    return min(width, int(math.ceil(round((1.0 - partial_fourier) * width, 6))))


def _acquirable(shape: tuple[int, int], partial_fourier: float) -> np.ndarray:
    """Points a scan may acquire: not in the partial Fourier band (the last ``partial_fourier``
    of the last axis)."""
    keep = np.ones(shape, dtype=bool)
    keep[:, acquired_columns(shape[1], partial_fourier):] = False
    return keep


def _radii(shape: tuple[int, int], calibration_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The k-space radius ``r`` normalised to 1 at the middle of each edge (an ellipse on a
    non-square plane), and the same radius measured from the calibration disc's edge (0 inside
    it, 1 at the edges), on which the Poisson-disc spacing grows as sigpy's does from its
    calibration box."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    r = np.sqrt(((rows - shape[0] // 2) / (shape[0] / 2)) ** 2 + ((cols - shape[1] // 2) / (shape[1] / 2)) ** 2)
    disc = calibration_radius / (max(shape) / 2)  # the disc's radius along the longer axis, normalised
    return r, np.maximum(r - disc, 0) / (1 - disc)


def _dart_throwing(shape: tuple[int, int], candidates: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Accepts candidates in order unless an accepted point's disc (its own radius, scaled to
    each axis' length as sigpy scales it) holds them."""
    height, width = shape
    scale_r, scale_c = height / max(shape), width / max(shape)
    excluded = np.zeros(shape, dtype=bool)
    mask = np.zeros(shape, dtype=bool)
    for index in candidates:
        r, c = divmod(int(index), width)
        if excluded[r, c]:
            continue
        mask[r, c] = True
        ry, rx = radius[r, c] * scale_r, radius[r, c] * scale_c
        r0, r1 = max(0, int(np.ceil(r - ry)) if ry >= 1 else r), min(height, int(r + ry) + 1)
        c0, c1 = max(0, int(np.ceil(c - rx)) if rx >= 1 else c), min(width, int(c + rx) + 1)
        dr = (np.arange(r0, r1) - r)[:, None] / max(ry, 1e-9)
        dc = (np.arange(c0, c1) - c)[None, :] / max(rx, 1e-9)
        excluded[r0:r1, c0:c1] |= dr**2 + dc**2 < 1
    return mask


def poisson_disc_mask(shape: tuple[int, int], acceleration: float, calibration_radius: float = 18.0,
                      partial_fourier: float = 0.0, seed: int | Sequence[int] = 0,
                      tolerance: float = 0.02, iterations: int = 30) -> np.ndarray:
    """A variable-density Poisson-disc mask (see the module docstring).

    Raises:
        ValueError: the acceleration cannot be reached within ``tolerance`` (the calibration
            disc alone samples more, or the plane is too small).
    """
    shape = (int(shape[0]), int(shape[1]))
    calibration = calibration_disc(shape, calibration_radius) & _acquirable(shape, partial_fourier)
    radius, beyond_calibration = _radii(shape, calibration_radius)
    allowed = (radius < 1) & _acquirable(shape, partial_fourier) & ~calibration
    rng = np.random.default_rng(seed)
    candidates = rng.permutation(np.flatnonzero(allowed))
    total = shape[0] * shape[1]
    low, high = 0.0, float(max(shape))  # the radius' slope: more slope, fewer points
    best, best_error = None, np.inf
    for _ in range(iterations):
        slope = (low + high) / 2
        mask = _dart_throwing(shape, candidates, 1.0 + beyond_calibration * slope) | calibration
        achieved = total / mask.sum()
        error = abs(achieved - acceleration) / acceleration
        if error < best_error:
            best, best_error = mask, error
        if error <= tolerance:
            break
        if achieved < acceleration:
            low = slope
        else:
            high = slope
    if best_error > tolerance:
        raise ValueError(f"poisson2d: cannot reach {acceleration:g}x on a {shape[0]}x{shape[1]} plane with a calibration "
                         f"disc of radius {calibration_radius:g} (closest: {total / best.sum():.3g}x)")
    return best


def gaussian_mask(shape: tuple[int, int], acceleration: float, calibration_radius: float = 18.0,
                  partial_fourier: float = 0.0, seed: int | Sequence[int] = 0, std: float = 0.25) -> np.ndarray:
    """A variable-density Gaussian mask with exactly ``round(H * W / acceleration)`` points.

    Raises:
        ValueError: the calibration disc alone samples more than the acceleration allows, or
            the acquirable plane has too few points.
    """
    shape = (int(shape[0]), int(shape[1]))
    total = shape[0] * shape[1]
    calibration = calibration_disc(shape, calibration_radius) & _acquirable(shape, partial_fourier)
    wanted = int(round(total / acceleration)) - int(calibration.sum())
    allowed = np.flatnonzero(_acquirable(shape, partial_fourier) & ~calibration)
    if wanted < 0 or wanted > allowed.size:
        raise ValueError(f"gaussian2d: cannot sample {acceleration:g}x of a {shape[0]}x{shape[1]} plane with a calibration "
                         f"disc of radius {calibration_radius:g} ({int(calibration.sum())} points)")
    rows, cols = np.divmod(allowed, shape[1])
    log_weight = -0.5 * (((rows - shape[0] // 2) / (std * shape[0])) ** 2 + ((cols - shape[1] // 2) / (std * shape[1])) ** 2)
    # Weighted sampling without replacement: the largest log-weights plus Gumbel noise.
    keys = log_weight + np.random.default_rng(seed).gumbel(size=allowed.size)
    mask = calibration.copy()
    mask.flat[allowed[np.argsort(-keys)[:wanted]]] = True
    return mask


# One cache for the process, keyed by every setting a mask depends on: a Poisson-disc draw takes
# 0.1-0.5 s, and fit, test, predict and baseline (in one notebook, or one test run) draw the same
# fixed and bank masks again with samplers of their own. 1024 masks of 218 x 180 are 40 MB.
@functools.lru_cache(maxsize=1024)
def _drawn_mask(mask_type: str, shape: tuple[int, int], acceleration: float, calibration_radius: float,
                partial_fourier: float, gaussian_std: float, seed: tuple[int, ...]) -> np.ndarray:
    args = (shape, acceleration, calibration_radius, partial_fourier, seed)
    if mask_type == "poisson2d":
        mask = poisson_disc_mask(*args)
    else:
        mask = gaussian_mask(*args, std=gaussian_std)
    mask.setflags(write=False)  # cached: shared by every caller
    return mask


class PlaneMaskSampler:
    """Draws 2-D plane masks for one or more accelerations.

    Args:
        mask_type: ``poisson2d`` or ``gaussian2d``.
        accelerations: nominal undersampling factors (above 1; 5 and 10 are Calgary-Campinas').
        calibration_radius: radius of the fully sampled centre disc, in grid points (18: the
            published Calgary-Campinas masks').
        partial_fourier: fraction of the last axis, at its end, never acquired (0.15: the
            Calgary-Campinas kz).
        bank_size: training masks per shape and acceleration, drawn once (Poisson-disc draws
            are slow); a training seed picks one of them.
        gaussian_std: the Gaussian's standard deviation, as a fraction of each axis.

    Raises:
        ValueError: naming the argument and the problem.
    """

    def __init__(self, mask_type: PlaneMaskType, accelerations: Sequence[float], calibration_radius: float = 18.0,
                 partial_fourier: float = 0.0, bank_size: int = 64, gaussian_std: float = 0.25) -> None:
        if mask_type not in PLANE_MASK_TYPES:
            raise ValueError(f"mask_type: {mask_type!r} is not one of {', '.join(PLANE_MASK_TYPES)}")
        if not accelerations or any(isinstance(a, bool) or not a > 1 for a in accelerations):
            raise ValueError(f"accelerations: {list(accelerations)}: each must be above 1")
        if not calibration_radius >= 0:
            raise ValueError(f"calibration_radius: must be 0 or more, got {calibration_radius}")
        if not 0 <= partial_fourier < 0.5:
            raise ValueError(f"partial_fourier: must lie in [0, 0.5), got {partial_fourier}")
        if bank_size < 1:
            raise ValueError(f"bank_size: must be at least 1, got {bank_size}")
        self.mask_type = mask_type
        self.accelerations = [float(a) for a in accelerations]
        self.calibration_radius = float(calibration_radius)
        self.partial_fourier = float(partial_fourier)
        self.bank_size = int(bank_size)
        self.gaussian_std = float(gaussian_std)

    def __len__(self) -> int:
        return len(self.accelerations)

    @property
    def pairs(self) -> list[tuple[float, float]]:
        """``(calibration radius, acceleration)`` per acceleration, as a column sampler's
        ``(centre fraction, acceleration)``: what results are labelled and grouped by."""
        return [(self.calibration_radius, a) for a in self.accelerations]

    def check_plane(self, shape: tuple[int, int]) -> None:
        """Draws a mask of every acceleration for this plane size once (they are cached).

        Raises:
            ValueError: an acceleration this plane cannot be sampled at (see the mask functions).
        """
        for index in range(len(self)):
            self._draw(tuple(shape), index, (index, 0))

    def _draw(self, shape: tuple[int, int], index: int, seed: tuple[int, ...]) -> np.ndarray:
        return _drawn_mask(self.mask_type, tuple(shape), self.accelerations[index], self.calibration_radius,
                           self.partial_fourier, self.gaussian_std if self.mask_type == "gaussian2d" else 0.0, seed)

    def fixed(self, fname: str, shape: tuple[int, int], index: int) -> np.ndarray:
        """The validation/test mask of a volume at acceleration ``index`` (bool ``shape``)."""
        return self._draw(tuple(shape), index, fname_seed(fname))

    def random(self, seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
        """A training mask from an integer seed (acceleration drawn uniformly): one of the bank.

        Returns:
            (mask bool ``shape``, index of the acceleration).
        """
        rng = np.random.default_rng(seed)
        index = int(rng.integers(len(self.accelerations)))
        member = int(rng.integers(self.bank_size))
        return self._draw(tuple(shape), index, (index, member)), index

    def calibration(self, shape: tuple[int, int]) -> np.ndarray:
        """The fully sampled centre every mask of this sampler holds."""
        return calibration_disc(tuple(shape), self.calibration_radius) & _acquirable(tuple(shape), self.partial_fourier)


def acceleration_of(mask: np.ndarray) -> float:
    """``H * W / sampled points`` of a plane mask."""
    return float(mask.size / max(int(np.count_nonzero(mask)), 1))
