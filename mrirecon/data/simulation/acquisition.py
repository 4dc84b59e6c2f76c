"""The acquisition: coil sensitivities of a ring of loop coils, and the fully sampled noisy
k-space of an image in an oversampled field of view with its target, on the MRI operator's
transforms (:mod:`mrirecon.core.operator`)."""

from __future__ import annotations

import numpy as np
import torch

from mrirecon.core.operator import center_crop, fft2c_numpy, ifft2c_numpy, rss


def coil_sensitivities(rng: np.random.Generator, coils: int, fov_mm: float, slab_mm: float,
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


def acquire_slice(images: np.ndarray, height: int, width: int, sigma: np.float32,
                  noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fully sampled k-space of one slice and its target, as fastMRI computes its targets.

    Args:
        images: complex64 coil images ``(coils, r, r)`` (one coil for single-coil data).
        height, width: the k-space grid; the images fill its central ``r x r``.
        sigma: the noise's standard deviation per real and imaginary part.
        noise: standard normal complex64 ``(coils, height, width)``.

    Returns:
        complex64 k-space ``(coils, height, width)`` (the centred FFT plus noise) and the float32
        target ``(r, r)``: the root-sum-of-squares of the centre crop of its inverse FFT.
    """
    r = images.shape[-1]
    canvas = np.zeros((images.shape[0], height, width), dtype=np.complex64)
    center_crop(canvas, (r, r))[...] = images
    # The targets come from exactly the k-space that is stored.
    kspace = (fft2c_numpy(canvas) + sigma * noise).astype(np.complex64, copy=False)
    target = rss(torch.from_numpy(center_crop(ifft2c_numpy(kspace), (r, r))), dim=0).numpy()
    return kspace, target
