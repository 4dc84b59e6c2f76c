r"""The MRI forward operator: the one home of the Fourier transforms, crops and sampling masks.

Everything that goes between images and k-space does so here: the data chain, CS-TV, the
networks' data consistency, the simulator and the metrics' crops. Conventions, batch first:

* k-space is complex ``(B, C, H, W)`` (``C = 1`` for single-coil data), images on the k-space
  grid are complex ``(B, H, W)`` once coil-combined, ``(B, C, H, W)`` per coil;
* the FFT is orthonormal over the last two axes and **centred** by default
  (``fftshift ∘ fft2 ∘ ifftshift``, the convention of ``fastmri.fft2c`` and ``sigpy.fft``);
  ``centered=False`` gives the plain FFT, which Calgary-Campinas data use;
* everything runs in complex64/float32 or better whatever the autocast state
  (:func:`full_precision`): cuFFT rejects half precision for sizes that are not powers of two
  (fastMRI's 368 and 640).

We use ``torch.fft`` on complex tensors rather than fastMRI's ``fft2c`` on real views: the same
transform and the same numbers (a test checks equality), without two ``view_as_real`` round
trips, and with the uncentred variant and 1-D transforms that fastMRI lacks.
``deepinv.physics.MRI`` is the same single-coil operator (a test checks equality) but is not used:
it takes real ``(B, 2, H, W)`` channel layouts and 2-D masks, and brings a dependency into the data
chain for no gain.

The operator :class:`MRIOperator` is ``A = M F S``: coil sensitivities ``S`` (none: one coil of
unit sensitivity), the FFT ``F`` and a sampling mask ``M`` (:class:`SamplingMask`), with its
adjoint, normal operator, hard and soft data consistency and coil combination.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch

Fn = TypeVar("Fn", bound=Callable)
SPATIAL = (-2, -1)


# --- precision ---------------------------------------------------------------------------------
def _to_full_precision(x):
    if isinstance(x, torch.Tensor):
        if x.dtype in (torch.float16, torch.bfloat16):
            return x.float()
        if x.dtype == torch.complex32:
            return x.to(torch.complex64)
    return x


def full_precision(fn: Fn) -> Fn:
    """Runs ``fn`` with autocast off and half-precision tensor arguments cast to float32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = [_to_full_precision(a) for a in args]
        kwargs = {k: _to_full_precision(v) for k, v in kwargs.items()}
        device = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --- Fourier transforms -----------------------------------------------------------------------
@full_precision
def fft2c(image: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """Orthonormal 2-D FFT of complex ``(..., H, W)``; centred (fastMRI's ``fft2c``) by default."""
    if not centered:
        return torch.fft.fft2(image, norm="ortho")
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(image, dim=SPATIAL), norm="ortho"), dim=SPATIAL)


@full_precision
def ifft2c(kspace: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """Orthonormal inverse 2-D FFT of complex ``(..., H, W)``; centred (``ifft2c``) by default."""
    if not centered:
        return torch.fft.ifft2(kspace, norm="ortho")
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(kspace, dim=SPATIAL), norm="ortho"), dim=SPATIAL)


@full_precision
def ifft1c(kspace: torch.Tensor, dim: int = -2, centered: bool = True) -> torch.Tensor:
    """Orthonormal inverse 1-D FFT along ``dim`` (e.g. the fully sampled readout)."""
    if not centered:
        return torch.fft.ifft(kspace, dim=dim, norm="ortho")
    return torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(kspace, dim=dim), dim=dim, norm="ortho"), dim=dim)


@full_precision
def fft1c(image: torch.Tensor, dim: int = -2, centered: bool = True) -> torch.Tensor:
    """Orthonormal 1-D FFT along ``dim``, the inverse of :func:`ifft1c`."""
    if not centered:
        return torch.fft.fft(image, dim=dim, norm="ortho")
    return torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(image, dim=dim), dim=dim, norm="ortho"), dim=dim)


def fftshift2(x: torch.Tensor) -> torch.Tensor:
    """``fftshift`` over the last two axes: plain-FFT (DC-first) order to centred order."""
    return torch.fft.fftshift(x, dim=SPATIAL)


def ifftshift2(x: torch.Tensor) -> torch.Tensor:
    """``ifftshift`` over the last two axes, the inverse of :func:`fftshift2` (also for odd sizes).

    The centred FFT is ``fftshift2 ∘ fft2 ∘ ifftshift2`` and masks and maps act pointwise, so an
    iterative solver can move its arrays once into the ``ifftshift2``-ed domain and use
    ``centered=False`` there (CS-TV does).
    """
    return torch.fft.ifftshift(x, dim=SPATIAL)


def fft2c_numpy(image: np.ndarray, centered: bool = True) -> np.ndarray:
    """:func:`fft2c` for NumPy arrays (the simulator's volumes), through the same torch code."""
    return fft2c(torch.from_numpy(np.ascontiguousarray(image)), centered).numpy()


def ifft2c_numpy(kspace: np.ndarray, centered: bool = True) -> np.ndarray:
    """:func:`ifft2c` for NumPy arrays, through the same torch code."""
    return ifft2c(torch.from_numpy(np.ascontiguousarray(kspace)), centered).numpy()


def _checkerboard(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``(-1) ** (row + col)`` as float32 ``(H, W)``."""
    rows = 1.0 - 2.0 * (torch.arange(height, device=device) % 2)
    cols = 1.0 - 2.0 * (torch.arange(width, device=device) % 2)
    return (rows[:, None] * cols[None, :]).float()


@full_precision
def zero_filled_magnitude(kspace: torch.Tensor, crop_size: tuple[int, int],
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """``rss(|crop(ifft2c(M k))|)`` over coils: the zero-filled magnitude image, fast.

    fastMRI's ``rss(complex_abs(complex_center_crop(ifft2c(kspace))))``, computed with one
    multiplication in place of the four shifts: for even sizes the centred inverse FFT is
    ``(-1)^(n+m) ifft2((-1)^(k+l) x)`` up to a constant sign, and the magnitude drops the output's
    signs, so the input's checkerboard (and the column mask, when given) is one product. Equal to
    fastMRI's to float32 rounding (about 1e-7 relative), twice as fast for 15-coil 640 x 368 data.

    Args:
        kspace: complex ``(B, C, H, W)``, masked already unless ``mask`` is given.
        crop_size: (rows, cols) of the reconstruction, fastMRI's target size.
        mask: ``(B, W)`` column mask to apply on the way (the masked k-space is not kept).

    Returns:
        Real ``(B, rows, cols)`` float32 magnitude image.
    """
    height, width = kspace.shape[-2:]
    if height % 2 or width % 2:  # odd sizes: the shifts
        masked = kspace if mask is None else apply_column_mask(kspace, mask)
        return rss(center_crop(ifft2c(masked), crop_size))
    pattern = _checkerboard(height, width, kspace.device)
    if mask is not None:
        pattern = pattern * mask.reshape(mask.shape[0], 1, 1, width).to(pattern.dtype)
    image = center_crop(torch.fft.ifft2(kspace * pattern, norm="ortho"), crop_size)
    return (image.real.square() + image.imag.square()).sum(dim=1).sqrt()


# --- crops -------------------------------------------------------------------------------------
def center_crop(x, size: Sequence[int]):
    """The centred ``size = (rows, cols)`` window of the last two axes of a tensor or array.

    fastMRI's ``center_crop`` offsets (``(H - rows) // 2``), for torch tensors and NumPy arrays
    alike, complex or real; a view, not a copy.

    Raises:
        ValueError: the window is larger than the array.
    """
    rows, cols = int(size[0]), int(size[1])
    height, width = x.shape[-2], x.shape[-1]
    if not (0 < rows <= height and 0 < cols <= width):
        raise ValueError(f"crop size {rows}x{cols} does not fit an image of {height}x{width}")
    top, left = (height - rows) // 2, (width - cols) // 2
    return x[..., top:top + rows, left:left + cols]


@full_precision
def readout_cropped_kspace(kspace: torch.Tensor, rows: int, centered: bool = True) -> torch.Tensor:
    """The k-space of the image cropped to its centre ``rows`` along the readout (axis -2).

    The readout is fully sampled, so a column mask applies to this smaller grid unchanged and
    data consistency on it is exact for the cropped image: ``F_r crop_r F_r^-1`` along the
    readout only (two 1-D FFTs), after which every 2-D FFT of a data-consistent network costs
    ``rows / H`` of the full grid's (half, for fastMRI's and the demo's 2x readout
    oversampling). Not for 2-D masks, which sample the readout too.

    Args:
        kspace: complex ``(..., H, W)``, masked or not.
        rows: rows to keep (the reconstruction height); at most ``H``.
    """
    hybrid = center_crop(ifft1c(kspace, dim=-2, centered=centered), (rows, kspace.shape[-1]))
    return fft1c(hybrid, dim=-2, centered=centered)


def evaluation_crop_size(shape: Sequence[int]) -> tuple[int, int]:
    """The square fastMRI's evaluation command crops an image of ``(..., rows, cols)`` to.

    Its side is the image width, or the height where that is smaller (fastMRI's command fails
    there instead).
    """
    side = min(int(shape[-2]), int(shape[-1]))
    return side, side


def square_crop(x):
    """The centred square of :func:`evaluation_crop_size`: what fastMRI's evaluation scores."""
    return center_crop(x, evaluation_crop_size(x.shape))


# --- masks -------------------------------------------------------------------------------------
@full_precision
def apply_column_mask(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the unsampled columns of complex k-space.

    Args:
        kspace: complex ``(B, C, H, W)``.
        mask: ``(B, W)`` bool or 0/1 column mask.

    Returns:
        Masked k-space, with +0.0 in the unsampled columns (as fastMRI's ``* mask + 0.0``:
        signed zeros once leaked which columns were sampled in a released test set), in one
        pass over the real view, with the mask repeated for real and imaginary parts (a
        broadcast over that last axis of 2 is much slower).
    """
    shape = (mask.shape[0],) + (1,) * (kspace.ndim - 2) + (2 * mask.shape[-1],)
    keep = mask.bool().repeat_interleave(2, dim=-1).reshape(shape)
    real = torch.view_as_real(kspace).flatten(-2)
    return torch.view_as_complex(torch.where(keep, real, 0.0).unflatten(-1, (-1, 2)))


def contiguous_centre_width(mask: torch.Tensor) -> torch.Tensor:
    """Widths of the contiguous runs of sampled columns through the centre column.

    The auto-calibration (ACS) band of masks whose centre fraction is unknown, such as the
    ``mask`` stored in fastMRI's test and challenge files, and the widest fully sampled centre
    band of drawn masks, which CS-TV's sensitivity estimate uses whole.

    Args:
        mask: ``(W,)`` or ``(B, W)`` boolean column masks.

    Returns:
        ``()`` or ``(B,)`` long tensor: the run's number of columns, 0 where the centre column
        is not sampled.
    """
    left, right = _centre_run(torch.as_tensor(mask).bool())
    return left + right


def centred_sampled_width(mask: torch.Tensor) -> torch.Tensor:
    """Widths of the widest fully sampled column region centred on the centred FFT's zero
    frequency (column W // 2, as a centred crop of that width takes it): within the run through
    the centre column, even where the run is not symmetric about it (a drawn band with a sampled
    neighbour on one side). ``(B,)`` long, 0 where the centre column is not sampled."""
    left, right = _centre_run(torch.as_tensor(mask).bool())
    # An even width 2m needs m columns on each side; an odd one 2m + 1, m left and m + 1 from it on.
    return torch.maximum(2 * torch.minimum(left, right), 2 * torch.minimum(left, right - 1).clamp_min(0) + 1) * (right > 0)


def _centre_run(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled columns of the run through the centre column: (left of it, from it on); 0, 0 where
    the centre column is not sampled."""
    centre = mask.shape[-1] // 2
    left = mask[..., :centre].flip(-1).long().cumprod(-1).sum(-1)
    right = mask[..., centre:].long().cumprod(-1).sum(-1)
    return torch.where(mask[..., centre], left, 0), right


def varnet_centre_width(mask: torch.Tensor, num_low_frequencies: torch.Tensor | int | None = None) -> torch.Tensor:
    """``(B,)`` centre-band widths as fastMRI's VarNet takes them for its sensitivity network.

    The batch's own widths where given (non-zero), else from the ``(B, W)`` mask as fastMRI's
    ``SensitivityModel.get_pad_and_num_low_freqs`` does: twice the shorter run of sampled
    columns on either side of the centre (a symmetric band), at least 1. Kept distinct from
    :func:`contiguous_centre_width` because parity with ``fastmri.models.VarNet`` needs it.
    """
    mask = torch.as_tensor(mask).bool()
    batch = mask.shape[0]
    given = torch.as_tensor(0 if num_low_frequencies is None else num_low_frequencies, device=mask.device)
    given = given.reshape(-1).expand(batch).long()
    columns = mask.to(torch.int8)
    centre = columns.shape[1] // 2
    left = torch.argmin(columns[:, :centre].flip(1), dim=1)
    right = torch.argmin(columns[:, centre:], dim=1)
    from_mask = torch.maximum(2 * torch.minimum(left, right), torch.ones_like(left))
    return torch.where(given > 0, given, from_mask)


def centre_band(width: int, num_low_frequencies: torch.Tensor) -> torch.Tensor:
    """``(B, W)`` bool: the ``num_low_frequencies`` centre columns, starting at ``(W - n + 1) // 2``
    (fastMRI's centre band, as its mask functions and ``batched_mask_center`` place it)."""
    n = torch.as_tensor(num_low_frequencies).reshape(-1, 1)
    start = torch.div(width - n + 1, 2, rounding_mode="floor")
    columns = torch.arange(width, device=n.device)[None]
    return (columns >= start) & (columns < start + n)


def centred_sampled_square(mask: torch.Tensor) -> int:
    """The side of the largest fully sampled square centred on a 2-D mask's zero frequency (the
    points ``centre_band`` places in each axis): a 2-D mask's calibration region in the column
    terms that coil-sensitivity estimates and VarNet's centre band take. 0 where the centre
    point is not sampled."""
    mask = torch.as_tensor(mask).bool()
    rows, cols = mask.shape[-2:]
    side = 0
    while side < min(rows, cols):
        n = torch.tensor([side + 1])
        box = centre_band(rows, n)[0][:, None] & centre_band(cols, n)[0][None, :]
        if not bool(mask[box].all()):
            break
        side += 1
    return side


class SamplingMask:
    """Which k-space samples were measured, and the fully sampled calibration region among them.

    ``values`` is boolean and broadcastable to the k-space ``(B, C, H, W)``: a column mask is
    ``(B, 1, 1, W)`` (the common case and the fast path: :attr:`columns`), a 2-D mask (Poisson,
    Gaussian) ``(B, 1, H, W)``; a subset of the measured samples (a self-supervised split) is
    just another mask. ``calibration`` is the same shape and marks the fully sampled centre.

    Args:
        values: bool ``(B, 1, H|1, W)`` (or ``(B, W)`` for columns).
        calibration: bool of the same shape; default: none known (all False).
    """

    def __init__(self, values: torch.Tensor, calibration: torch.Tensor | None = None) -> None:
        values = torch.as_tensor(values).bool()
        if values.ndim == 2:
            values = values[:, None, None, :]
        if values.ndim != 4 or values.shape[1] != 1:
            raise ValueError(f"a sampling mask is (B, 1, H|1, W) or (B, W), got {tuple(values.shape)}")
        if calibration is None:
            calibration = torch.zeros_like(values)
        calibration = torch.as_tensor(calibration).bool()
        if calibration.ndim == 2:
            calibration = calibration[:, None, None, :]
        if calibration.shape != values.shape:
            raise ValueError(f"calibration {tuple(calibration.shape)} differs from the mask {tuple(values.shape)}")
        self.values = values
        self.calibration = calibration & values

    @classmethod
    def from_columns(cls, mask: torch.Tensor, num_low_frequencies: torch.Tensor | int | None = None) -> "SamplingMask":
        """A column mask ``(B, W)`` with its centre band of ``num_low_frequencies`` columns
        (default: the contiguous sampled run through the centre)."""
        mask = torch.as_tensor(mask).bool()
        if mask.ndim == 1:
            mask = mask[None]
        if num_low_frequencies is None:
            # The run itself, which need not be symmetric about the centre as centre_band's is.
            left, right = _centre_run(mask)
            columns = torch.arange(mask.shape[-1], device=mask.device)[None]
            centre = mask.shape[-1] // 2
            band = (columns >= centre - left[:, None]) & (columns < centre + right[:, None])
            return cls(mask, band)
        widths = torch.as_tensor(num_low_frequencies, device=mask.device).reshape(-1).expand(mask.shape[0])
        return cls(mask, centre_band(mask.shape[-1], widths) & mask)

    @classmethod
    def from_plane(cls, mask: torch.Tensor, calibration_sides: torch.Tensor | int) -> "SamplingMask":
        """A 2-D mask ``(B, H, W)`` with its calibration region: the centred square of
        ``calibration_sides`` points a side (as :func:`centred_sampled_square` finds it)."""
        mask = torch.as_tensor(mask).bool()
        if mask.ndim == 2:
            mask = mask[None]
        sides = torch.as_tensor(calibration_sides, device=mask.device).reshape(-1).expand(mask.shape[0])
        box = centre_band(mask.shape[-2], sides)[:, :, None] & centre_band(mask.shape[-1], sides)[:, None, :]
        return cls(mask[:, None], (box & mask)[:, None])

    @property
    def is_columns(self) -> bool:
        return self.values.shape[2] == 1

    @property
    def columns(self) -> torch.Tensor:
        """``(B, W)`` bool column mask (column masks only)."""
        if not self.is_columns:
            raise ValueError("a 2-D sampling mask has no column form")
        return self.values[:, 0, 0, :]

    @property
    def batch_size(self) -> int:
        return self.values.shape[0]

    def to(self, device: torch.device | str) -> "SamplingMask":
        return SamplingMask(self.values.to(device), self.calibration.to(device))

    def apply(self, kspace: torch.Tensor) -> torch.Tensor:
        """``M k``: zero the unmeasured samples of complex ``(B, C, H, W)`` k-space (+0.0 there)."""
        if self.is_columns:
            return apply_column_mask(kspace, self.columns)
        return torch.where(self.values, kspace, torch.zeros((), dtype=kspace.dtype, device=kspace.device))

    def acceleration(self, shape: Sequence[int]) -> torch.Tensor:
        """``(B,)`` measured acceleration: samples of the ``(H, W)`` grid over samples measured."""
        full = float(shape[-2] * shape[-1])
        measured = self.values.expand(-1, 1, shape[-2], shape[-1]).flatten(1).sum(1).clamp_min(1)
        return full / measured.double()


# --- coil combination --------------------------------------------------------------------------
def rss(images: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares over coils of complex (or real) images: ``sqrt(Σ_c |x_c|²)``."""
    if images.is_complex():
        return (images.real.square() + images.imag.square()).sum(dim=dim).sqrt()
    return images.square().sum(dim=dim).sqrt()


def sensitivity_combine(images: torch.Tensor, sensitivities: torch.Tensor) -> torch.Tensor:
    """``Σ_c conj(S_c) x_c``: the sensitivity-weighted coil combination of ``(B, C, H, W)`` images."""
    return (sensitivities.conj() * images).sum(dim=1)


def sensitivity_expand(image: torch.Tensor, sensitivities: torch.Tensor) -> torch.Tensor:
    """``S x``: coil images ``(B, C, H, W)`` of a combined ``(B, H, W)`` image."""
    return sensitivities * image.unsqueeze(1)


# --- the operator -----------------------------------------------------------------------------
class MRIOperator:
    r"""Masked Cartesian sampling ``A = M F S`` of a batch, with its adjoint and data consistency.

    Args:
        mask: what was measured (:class:`SamplingMask`, or a ``(B, W)`` column mask).
        sensitivities: complex ``(B, C, H, W)`` coil maps; None: one coil of unit sensitivity.
        centered: centred FFT (fastMRI's convention) or plain (Calgary-Campinas).
    """

    def __init__(self, mask: SamplingMask | torch.Tensor, sensitivities: torch.Tensor | None = None,
                 centered: bool = True) -> None:
        self.mask = mask if isinstance(mask, SamplingMask) else SamplingMask.from_columns(mask)
        self.sensitivities = sensitivities
        self.centered = centered

    def _coil_images(self, image: torch.Tensor) -> torch.Tensor:
        return image.unsqueeze(1) if self.sensitivities is None else sensitivity_expand(image, self.sensitivities)

    def _combine(self, coil_images: torch.Tensor) -> torch.Tensor:
        if self.sensitivities is None:
            return coil_images.sum(dim=1)
        return sensitivity_combine(coil_images, self.sensitivities)

    @full_precision
    def A(self, image: torch.Tensor) -> torch.Tensor:
        """Complex ``(B, H, W)`` image → masked k-space ``(B, C, H, W)``."""
        return self.mask.apply(fft2c(self._coil_images(image), self.centered))

    @full_precision
    def A_adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        """Masked k-space ``(B, C, H, W)`` → complex ``(B, H, W)`` image: ``S^H F^H M y``."""
        return self._combine(ifft2c(self.mask.apply(kspace), self.centered))

    def normal(self, image: torch.Tensor) -> torch.Tensor:
        """``A^H A x``."""
        return self.A_adjoint(self.A(image))

    def hard_data_consistency(self, kspace: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
        """Measured samples replace the prediction's: ``(1 - M) k + M y``."""
        return torch.where(self.mask.values, measured, kspace)

    def soft_data_consistency(self, kspace: torch.Tensor, measured: torch.Tensor,
                              weight: torch.Tensor | float) -> torch.Tensor:
        """The prediction moved toward the measurement: ``k - weight · M (k - y)``.

        ``weight = 1`` is hard data consistency; ``weight = λ / (1 + λ)`` the closed-form
        solution of ``min_k ‖k - k_pred‖² + λ ‖M k - y‖²``.
        """
        residual = torch.where(self.mask.values, kspace - measured, torch.zeros((), dtype=kspace.dtype, device=kspace.device))
        return kspace - weight * residual

    @full_precision
    def coil_images(self, kspace: torch.Tensor) -> torch.Tensor:
        """``F^H k`` per coil, complex ``(B, C, H, W)`` (no mask: ``k`` is what it is)."""
        return ifft2c(kspace, self.centered)

    @full_precision
    def kspace_of(self, coil_images: torch.Tensor) -> torch.Tensor:
        """``F x`` per coil (no mask)."""
        return fft2c(coil_images, self.centered)

    def combine(self, kspace: torch.Tensor) -> torch.Tensor:
        """The coil-combined image of k-space ``(B, C, H, W)``: RSS magnitude without
        sensitivities, the sensitivity-weighted complex sum with them."""
        images = self.coil_images(kspace)
        return rss(images) if self.sensitivities is None else sensitivity_combine(images, self.sensitivities)
