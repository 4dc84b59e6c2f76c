"""What a simulated dataset is: its presets, the domain randomisation's ranges, and what each
volume draws from ``(seed, index)`` alone (contrast, SNR, field of view, ...)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from mrirecon.data import tissues
from mrirecon.errors import UserError

SPLITS = ("train", "val", "test")
CHALLENGES = ("singlecoil", "multicoil")
CONTRASTS = ("source", "t1", "pd", "t2", "flair")
# File layouts a simulation writes: fastMRI's (``<challenge>_<split>/sim_<split>_<i>.h5``) or
# M4Raw's (the same folders, one file per subject, contrast and repetition, named
# ``<subject>_<contrast><repetition:02d>.h5``, multi-coil, no readout oversampling).
LAYOUTS = ("fastmri", "m4raw")
# M4Raw's contrast tags in file names, and the simulator's contrast each is written in.
M4RAW_CONTRASTS = {"T1": "t1", "T2": "t2", "FLAIR": "flair"}
FOV_MARGIN = 1.2  # field of view over the head's largest in-plane extent, room for the affine


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
        layout: ``fastmri`` or ``m4raw`` (see :data:`LAYOUTS`); ``volumes`` then counts
            subjects, each written once per contrast and repetition of ``repetitions``.
        readout_oversampling: k-space rows over the image's (fastMRI's 2; M4Raw's 1).
        repetitions: per M4Raw contrast tag (:data:`M4RAW_CONTRASTS`), the number of
            repetitions written (the same subject, contrast and coils, their own noise and
            phase drift), of the ``m4raw`` layout.
        undersampled: None (every split fully sampled, with targets), or an acceleration: the
            training splits (train, val) are then written as a site without references has them,
            undersampled once per volume at this acceleration by a random column mask (fastMRI's,
            centre fraction 0.32 / acceleration: 0.08 at 4x), which the file stores, and without
            a target; the other splits stay fully sampled, to score against.
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
    layout: str = "fastmri"
    readout_oversampling: int = 2
    repetitions: tuple[tuple[str, int], ...] = ()
    undersampled: int | None = None


PRESETS = {
    # Small enough to simulate in seconds and to train a U-Net usefully on two CPU cores.
    "demo": Preset(recon_size=128, volumes=(16, 4, 4), slices=14, coils=(8, 8), snr=(20.0, 40.0)),
    # The demo with domain-randomised training and validation volumes; its test split is the
    # standard demo's (the in-distribution test of the report).
    "demo-random": Preset(recon_size=128, volumes=(16, 4, 4), slices=14, coils=(8, 8), snr=(20.0, 40.0),
                          randomized=("train", "val")),
    # The README demo's data: half of the training and validation volumes domain-randomised,
    # the other half drawn as the standard demo draws them (an anchor in the test split's
    # distribution); its test split is the standard demo's. Of the training data tried, it made
    # the data-consistent networks generalise best (docs/generalisation.md).
    "demo-mixed": Preset(recon_size=128, volumes=(16, 4, 4), slices=14, coils=(8, 8), snr=(20.0, 40.0),
                         randomized=("train", "val"), randomization=Randomization(standard_fraction=0.5)),
    # An out-of-distribution test split from a head excluded from training (--source colin27),
    # in its native T1 contrast and a PD-like one, at a high SNR, without phase-encode
    # oversampling, added to an existing dataset folder as <challenge>_ood.
    "ood": Preset(recon_size=128, volumes=(8,), slices=14, coils=(8, 8), snr=(200.0, 400.0), splits=("ood",),
                  contrasts=("t1", "pd"), pe_oversampling=1.0, needs_source=True),
    "full": Preset(recon_size=320, volumes=(40, 8, 8), slices=18, coils=(8, 15), snr=(15.0, 40.0)),
    # M4Raw's files (0.3 T brain, Lyu et al. 2023): per subject three T1, three T2 and two FLAIR
    # repetitions of 18 slices, 4 coils, 256 x 256 k-space and targets; a single repetition's
    # low SNR. --recon_size 64 writes them at a quarter of the size, in seconds.
    "m4raw": Preset(recon_size=256, volumes=(3, 1, 1), slices=18, coils=(4, 4), snr=(10.0, 20.0),
                    pe_oversampling=1.0, layout="m4raw", readout_oversampling=1,
                    repetitions=(("T1", 3), ("T2", 3), ("FLAIR", 2))),
}


def phase_encode_columns(r: int, pe_oversampling: float) -> int:
    """Phase-encode columns for an ``r``-wide image: even, at least ``r``."""
    return max(r, 2 * math.ceil(pe_oversampling * r / 2))


def resolve_preset(preset: str | Preset, recon_size: int | None) -> Preset:
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
    if preset.undersampled is not None and preset.undersampled < 2:
        raise UserError(f"--undersampled {preset.undersampled}: an acceleration of at least 2")
    if preset.layout not in LAYOUTS:
        raise UserError(f"preset layout {preset.layout!r}: expected one of {', '.join(LAYOUTS)}")
    if preset.layout == "m4raw" and (not preset.repetitions or any(
            tag not in M4RAW_CONTRASTS or count < 1 for tag, count in preset.repetitions)):
        raise UserError(f"preset repetitions {list(preset.repetitions)}: the m4raw layout needs at least one "
                        f"repetition of some of {', '.join(M4RAW_CONTRASTS)}")
    if preset.readout_oversampling < 1:
        raise UserError(f"preset readout_oversampling {preset.readout_oversampling}: must be at least 1")
    unknown = [c for c in preset.contrasts if c not in CONTRASTS]
    if unknown or not preset.contrasts:
        raise UserError(f"preset contrasts {list(preset.contrasts)}: expected some of {', '.join(CONTRASTS)}")
    return preset


@dataclass(frozen=True)
class Draw:
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


def draw_volume(params: Preset, split: str, local: int, seed: int, index: int) -> Draw:
    """The contrast and randomised factors of one volume, from ``(seed, index)`` alone.

    Standard volumes draw their SNR as before 0.2 (in :func:`write_volume`, from the scan's
    random stream), so the data of the standard presets has not changed.
    """
    if split not in params.randomized:
        return Draw(params.contrasts[local % len(params.contrasts)], snr=float("nan"),
                     pe_oversampling=params.pe_oversampling, fov_margin=FOV_MARGIN)
    ranges = params.randomization
    rng = np.random.default_rng([seed, index, 2])
    if rng.uniform() < ranges.standard_fraction:
        return Draw("source", snr=float("nan"), pe_oversampling=params.pe_oversampling, fov_margin=FOV_MARGIN)

    def uniform(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds))

    shells = None
    if rng.uniform() < ranges.shells:
        shells = (uniform(ranges.gap_mm), uniform(ranges.bone_mm), uniform(ranges.soft_mm))
    return Draw(
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
