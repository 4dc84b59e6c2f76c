"""Tissue maps of a head, from which the simulator synthesises any contrast.

Five tissues, as probabilities on the head's 1 mm grid (see :func:`tissue_maps`): CSF, grey
matter (GM), white matter (WM), extra-cerebral soft tissue (scalp, fat, muscle: "soft") and bone.
An image of any contrast is then ``sum_k p_k * intensity_k`` plus the head's own fine texture
(:func:`texture`), the SynthSeg idea (Billot et al., 2023) of random contrasts from labels.

Where they come from:

* the MNI152 2009a template: nilearn ships its GM and WM probability maps beside the T1; CSF
  is the rest of the template's brain mask. It has no skull or scalp: the simulator can grow
  them as shells around the brain (:func:`distance_outside_mm`);
* any other T1 head (Colin27): the brain mask of a brain-extracted copy beside it
  (``<name>bet.nii.gz``, which Debian's mricron-data ships for Colin27) or, without one, every
  voxel of the head; inside the brain, CSF, GM and WM are the memberships of a three-class
  Gaussian mixture of the T1 intensities; outside, bright voxels are soft tissue and dark ones
  bone (fat is bright and bone dark in T1).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrirecon.data.anatomy import load_anatomy

TISSUES = ("csf", "gm", "wm", "soft", "bone")
# A proton-density-weighted look: free water (CSF) brightest, grey above white matter, fat
# bright, bone dark (relative proton densities, roughly as a PD-weighted spin echo shows them).
PD_LIKE = {"csf": 1.0, "gm": 0.82, "wm": 0.66, "soft": 0.85, "bone": 0.08}
# A T2-weighted fast spin echo: CSF brightest, grey well above white matter, scalp fat bright.
T2_LIKE = {"csf": 1.0, "gm": 0.62, "wm": 0.45, "soft": 0.7, "bone": 0.05}
# FLAIR: a T2 weighting with the free water (CSF) nulled by the inversion.
FLAIR_LIKE = {"csf": 0.06, "gm": 0.78, "wm": 0.58, "soft": 0.75, "bone": 0.05}
# The contrasts synthesised from tissue maps with fixed intensities, by name.
FIXED_CONTRASTS = {"pd": PD_LIKE, "t2": T2_LIKE, "flair": FLAIR_LIKE}
_BRAIN = 0.05  # intensity (of a [0, 1] template) above which a voxel belongs to the head


def _nilearn_maps(path: Path) -> tuple[Path, Path] | None:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None or "mni_icbm152_t1" not in path.name:
        return None
    folder = Path(spec.origin).parent / "datasets" / "data"
    gm, wm = (folder / path.name.replace("_t1_", f"_{k}_") for k in ("gm", "wm"))
    return (gm, wm) if gm.is_file() and wm.is_file() else None


def _brain_extracted(path: Path) -> Path | None:
    name = path.name.split(".")[0]
    candidate = path.with_name(path.name.replace(name, f"{name}bet", 1))
    return candidate if candidate.is_file() else None


def _three_class_memberships(values: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Posterior memberships ``(3, n)`` of a 1-D three-Gaussian mixture, classes by mean order."""
    means = np.percentile(values, [15, 50, 85]).astype(np.float64)
    stds = np.full(3, values.std() / 3 + 1e-6)
    weights = np.full(3, 1 / 3)
    for _ in range(iterations):
        log_p = -0.5 * ((values[None] - means[:, None]) / stds[:, None]) ** 2 - np.log(stds[:, None]) + np.log(weights[:, None])
        log_p -= log_p.max(axis=0, keepdims=True)
        post = np.exp(log_p)
        post /= post.sum(axis=0, keepdims=True)
        mass = post.sum(axis=1) + 1e-9
        means = (post @ values) / mass
        stds = np.sqrt((post * (values[None] - means[:, None]) ** 2).sum(axis=1) / mass) + 1e-6
        weights = mass / mass.sum()
    return post[np.argsort(means)].astype(np.float32)


def tissue_maps(path: Path, t1: np.ndarray) -> np.ndarray:
    """``(5, x, y, z)`` float32 probabilities of :data:`TISSUES` on the grid of ``t1``.

    Args:
        path: the source file (to find the MNI maps or a brain-extracted copy beside it).
        t1: the head as :func:`mrirecon.data.anatomy.load_anatomy` returns it.
    """
    maps = np.zeros((len(TISSUES), *t1.shape), dtype=np.float32)
    head = ndimage.binary_closing(t1 > _BRAIN, iterations=2)
    mni = _nilearn_maps(Path(path))
    if mni is not None:
        gm, wm = (load_anatomy(p, normalise=False) / 255.0 for p in mni)
        gm, wm = np.clip(gm, 0, 1), np.clip(wm, 0, 1)
        maps[1], maps[2] = gm, wm
        maps[0] = np.clip(head.astype(np.float32) - gm - wm, 0, 1)
        return maps
    bet = _brain_extracted(Path(path))
    brain = ndimage.binary_closing(load_anatomy(bet) > _BRAIN, iterations=2) & head if bet is not None else head
    members = _three_class_memberships(t1[brain])
    for k in range(3):
        maps[k][brain] = members[k]
    outside = head & ~brain
    if outside.any():
        values = t1[outside]
        threshold = np.percentile(values, 40)
        soft = np.clip((values - 0.5 * threshold) / threshold, 0, 1)
        maps[3][outside] = soft
        maps[4][outside] = 1 - soft
    return maps


def distance_outside_mm(maps: np.ndarray) -> np.ndarray:
    """Distance (mm, 1 mm grid) of every voxel from the head's tissue, 0 inside: for growing
    synthetic skull and scalp shells around a brain-only template."""
    inside = maps.sum(axis=0) > 0.5
    return ndimage.distance_transform_edt(~inside).astype(np.float32)


def texture(t1: np.ndarray, sigma_mm: float = 2.0) -> np.ndarray:
    """The head's fine structure: the T1 minus its blur at ``sigma_mm`` (mean zero)."""
    return (t1 - ndimage.gaussian_filter(t1, sigma_mm)).astype(np.float32)
