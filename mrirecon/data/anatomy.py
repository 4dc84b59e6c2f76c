"""Real anatomical volumes that the simulator turns into MRI data.

The simulator needs heads it can slice, deform and re-acquire offline. The default source is
the MNI152 2009a template that ships inside nilearn's wheel (a skull-stripped brain), which is
present wherever mrirecon is installed, so a seed gives the same dataset on every machine.
Other heads come only when asked for, by path or by name (:data:`NAMED_SOURCES`): ``colin27``
is the Colin27 single-subject head of Debian/Ubuntu's ``mricron-data`` package. Any other 3-D
NIfTI/MGH T1 volume works too.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mrirecon.errors import UserError

_MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
COLIN27_PATH = Path("/usr/share/mricron/templates/ch2.nii.gz")


def mni152_path() -> Path:
    """The MNI152 2009a symmetric T1 template inside nilearn's wheel."""
    # find_spec locates the package without importing it: importing nilearn pulls in
    # scikit-learn and takes seconds.
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise UserError("nilearn: not installed, so the MNI152 template is unavailable")
    return Path(spec.origin).parent / "datasets" / "data" / _MNI_T1


NAMED_SOURCES = {
    "mni152": "the MNI152 2009a template (nilearn; the default)",
    "colin27": f"the Colin27 head ({COLIN27_PATH}, Debian package mricron-data)",
}


def default_sources() -> list[Path]:
    """The simulator's default anatomy: the MNI152 template alone, on every machine."""
    return [mni152_path()]


def resolve_source(source: str | Path) -> Path:
    """A source given as a path or as a name of :data:`NAMED_SOURCES`.

    Raises:
        UserError: an unknown name, or a named source that is not installed.
    """
    name = str(source).lower()
    if name == "mni152":
        return mni152_path()
    if name == "colin27":
        if not COLIN27_PATH.is_file():
            raise UserError(f"--source colin27: {COLIN27_PATH} is missing; install Debian's mricron-data (scripts/setup.sh does)")
        return COLIN27_PATH
    return Path(source)


def source_digest(path: str | Path) -> str:
    """The SHA-256 of a source file, recorded so that a dataset names exactly what it came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_anatomy(path: str | Path, normalise: bool = True) -> np.ndarray:
    """Loads a 3-D anatomical image in a canonical orientation with robustly scaled intensities.

    The image is reoriented to the closest RAS+ orientation (first axis towards the patient's
    right, second anterior, third superior, so axial slices index the last axis) and
    resampled to 1 mm isotropic voxels, so that callers can reason in millimetres.
    Intensities are divided by the 99.9th percentile of the non-zero voxels and clipped to
    [0, 1], which keeps a few hot voxels from setting the scale.

    Args:
        path: A NIfTI or MGH file holding one 3-D volume (a trailing singleton 4th axis is
            accepted).
        normalise: scale and clip the intensities as above (False keeps them, for maps).

    Returns:
        A float32 array of shape (x, y, z) with values in [0, 1].

    Raises:
        UserError: The file is missing, unreadable, not 3-D, or has no signal.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        image = nib.as_closest_canonical(nib.load(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for corrupt or foreign files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: cannot read as a NIfTI/MGH image ({reason})") from exc

    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise UserError(f"{path}: expected a 3-D image, got shape {data.shape}")
    if min(data.shape) < 16:
        raise UserError(f"{path}: image of shape {data.shape} is too small to slice")

    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    positive = data[data > 0]
    if positive.size == 0:
        raise UserError(f"{path}: image has no positive intensities")
    if normalise:
        # Scale before resampling: interpolation would smear a hot voxel over several.
        data = np.clip(data / np.percentile(positive, 99.9), 0.0, 1.0)

    zooms = np.asarray(image.header.get_zooms()[:3], dtype=np.float64)
    if not np.allclose(zooms, 1.0, atol=0.01):
        data = ndimage.zoom(data, zooms, order=1)
    return data
