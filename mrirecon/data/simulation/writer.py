"""One simulated subject's volume as a fastMRI-format HDF5 file: k-space, target, ISMRMRD header
and the attributes fastMRI's files carry, plus every factor the volume drew."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np

from mrirecon.core.masks import ColumnMaskSampler
from mrirecon.data import ismrmrd
from mrirecon.data.simulation.acquisition import acquire_slice, coil_sensitivities
from mrirecon.data.simulation.presets import Draw, Preset, phase_encode_columns
from mrirecon.data.simulation.synthesis import FOREGROUND, Head, smooth_field, synthesize_subject

# Signal scale of the magnitude image's maximum, chosen so targets land near fastMRI's 1e-4..1e-3.
_SCALE_RANGE = (2e-4, 8e-4)
# fastMRI brain's names for an axial T1 (the templates' contrast), PD, T2 and FLAIR (M4Raw's too); randomised contrasts
# have no protocol name, so they get their own.
_ACQUISITIONS = {"source": "AXT1", "t1": "AXT1", "pd": "AXPD", "t2": "AXT2", "flair": "AXFLAIR", "random": "AXRANDOM"}


def write_volume(path: Path, head: Head, params: Preset, challenge: str, seed: int,
                  index: int, draw: Draw, undersampled: int | None = None,
                  repetition: tuple[int, int] | None = None, repetition_names: tuple[str, ...] = ()) -> None:
    """Simulates one subject's volume and writes it as a fastMRI HDF5 file; ``undersampled``
    (an acceleration) writes it as a scan without a reference: masked k-space, its ``mask``
    (one per volume), no target.

    ``repetition`` ``(contrast number, repetition)`` writes one of several acquisitions of the
    same subject in one session (M4Raw's): the anatomy, scale, coils and SNR come from
    ``(seed, index)`` as without it, the noise and a global phase drift from the repetition's
    own stream; ``repetition_names`` (the file stems of the group, this one first) go into the
    header as M4Raw's ``repetitionInformation``.
    """
    r, slices = params.recon_size, params.slices
    height, width = params.readout_oversampling * r, phase_encode_columns(r, draw.pe_oversampling)
    fov_mm = draw.fov_margin * head.extent_mm
    anatomy_rng = np.random.default_rng([seed, index, 0])
    scan_rng = np.random.default_rng([seed, index, 1])

    magnitude = synthesize_subject(head, r, slices, fov_mm, anatomy_rng, draw)
    magnitude *= np.exp(scan_rng.uniform(*np.log(_SCALE_RANGE))) / magnitude.max()
    inside = magnitude > FOREGROUND * magnitude.max()
    # Drawn even when the draw fixes the SNR, so the stream stays as it was before 0.2.
    snr = float(np.exp(scan_rng.uniform(*np.log(params.snr))))
    if draw.randomized:
        snr = draw.snr
    sigma = np.float32(magnitude[inside].mean() / snr)
    phase = smooth_field(scan_rng, magnitude.shape, (3, 4, 4), draw.phase_std)
    noise_rng = scan_rng
    if repetition is not None:
        # Repeated scans drift in phase between acquisitions (M4Raw's do): their complex images
        # must be aligned before averaging, their magnitudes need not.
        noise_rng = np.random.default_rng([seed, index, 3, *repetition])
        phase = phase + noise_rng.uniform(0, 2 * np.pi)
    images = (magnitude * np.exp(1j * phase)).astype(np.complex64)[:, None]

    multicoil = challenge == "multicoil"
    coils = 1
    if multicoil:
        coils = int(scan_rng.integers(params.coils[0], params.coils[1] + 1))
        images = images * coil_sensitivities(scan_rng, coils, fov_mm, head.slab_mm, inside)

    target_key = "reconstruction_rss" if multicoil else "reconstruction_esc"
    kspace_shape = (slices, coils, height, width) if multicoil else (slices, height, width)
    # Built in memory and written with one plain write: HDF5's own writes, when the disk fills,
    # fail again while the file closes and can crash the interpreter at exit (a segmentation
    # fault); a plain write fails with an OSError that the caller reports in one line.
    mask = None
    if undersampled is not None:
        # Its own stream, so the fully sampled data of the volume stay those of a plain run.
        sampler = ColumnMaskSampler("random", [0.32 / undersampled], [undersampled])
        mask, _, _ = sampler.random(int(np.random.default_rng([seed, index, 2]).integers(2**62)), width)
    targets = np.zeros((slices, r, r), dtype=np.float32)
    image = io.BytesIO()
    with h5py.File(image, "w") as hf:
        kspace_out = hf.create_dataset("kspace", shape=kspace_shape, dtype=np.complex64)
        for k in range(slices):
            noise = noise_rng.standard_normal((coils, height, width, 2), dtype=np.float32)
            kspace, targets[k] = acquire_slice(images[k], height, width, sigma, noise.view(np.complex64)[..., 0])
            if mask is not None:
                kspace = kspace * mask  # the columns a scanner skipped were never measured
            kspace_out[k] = kspace if multicoil else kspace[0]
        if mask is None:
            hf.create_dataset(target_key, data=targets)
            hf.attrs["max"] = float(targets.max())
            hf.attrs["norm"] = float(np.linalg.norm(targets.astype(np.float64)))
        else:
            hf.create_dataset("mask", data=mask)
            hf.attrs["acceleration"] = int(undersampled)

        slice_mm = head.slab_mm / max(slices - 1, 1)
        acquisition = _ACQUISITIONS[draw.contrast]
        hf.create_dataset("ismrmrd_header", data=ismrmrd.header_bytes(
            height, width, r, fov_mm, slice_mm, slices, coils, acquisition, repetition_names))
        hf.attrs["acquisition"] = acquisition
        hf.attrs["patient_id"] = f"sim-{seed}-{index:05d}"
        hf.attrs["simulated"] = True
        hf.attrs["source"] = head.name
        hf.attrs["source_sha256"] = head.sha256
        # Every factor that varies between volumes, the SNR included, for anyone slicing results.
        for key, value in {**draw.attributes(), "snr": snr}.items():
            hf.attrs[key] = value
    with open(path, "wb") as file:
        file.write(image.getbuffer())
