"""Reconstruction metrics in torch that equal ``fastmri.evaluate``'s definitions.

fastMRI scores a reconstruction per volume and then averages over volumes:

* SSIM: the mean over the volume's slices of scikit-image's ``structural_similarity``
  (7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance, i.e. variances scaled by
  N / (N - 1) with N = 49, and the 3-pixel border of the SSIM map dropped before its mean),
  with ``data_range`` the target *volume*'s maximum for every slice.
* PSNR: ``10 log10(data_range**2 / MSE)`` with the MSE over the whole volume and
  ``data_range`` the target volume's maximum.
* NMSE: ``||target - pred||**2 / ||target||**2`` over the whole volume.

fastMRI's evaluation command (``fastmri.evaluate.evaluate``) first centre-crops target and
reconstruction to a square of the target's width, and its maximum is then that crop's. For
square targets this changes nothing; for a 320x264 brain target it changes SSIM by 0.05.
:func:`evaluation_crop_size` is that square, and ``crop_to_square=True`` applies it
(``VolumeMetricAccumulator`` and :func:`volume_metrics`); where the target is wider than tall,
which fastMRI's command rejects, the square's side is the height.

Everything here runs on the tensors' device. SSIM's local means are window sums in the
inputs' precision (float32 for float32 or half-precision inputs, as scikit-image computes
for fastMRI's float32 files; float64 for float64 inputs), done as two separable 7-tap passes
over the valid region; its local variances, differences of nearly equal numbers
(``E[x**2] - E[x]**2``), and the final map are computed in float64, and the volume sums of
squared errors accumulate in float64. That agrees with ``fastmri.evaluate`` to about 1e-9 in
SSIM. On the CPU the slices go through one at a time, their maps staying in the processor's
cache: with one thread this scores a volume two to three times faster than
``fastmri.evaluate`` (``scripts/bench_train.py``). (Apple's MPS backend has no float64, so
these functions do not run there.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import NamedTuple, TypeVar

import torch

from mrirecon.core.operator import evaluation_crop_size, square_crop

__all__ = [
    "SSIM_WIN_SIZE",
    "evaluation_crop_size",
    "VolumeMetricAccumulator",
    "ssim_per_slice",
    "summarize",
    "summarize_by",
    "volume_metrics",
]

SSIM_WIN_SIZE = 7
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
# Relative tolerance between the max_value given for SSIM and the stored targets' maximum;
# float32 targets against a float64 file attribute differ by at most ~6e-8.
_MAX_RTOL = 1e-6

K = TypeVar("K", bound=Hashable)
G = TypeVar("G", bound=Hashable)


def _as_images(x: torch.Tensor, name: str) -> torch.Tensor:
    """Returns ``x`` as ``(B, H, W)`` in float64 or float32, accepting ``(B, 1, H, W)`` too."""
    if x.ndim == 4 and x.shape[1] == 1:
        x = x.squeeze(1)
    elif x.ndim != 3:
        raise ValueError(f"{name} must have shape (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
    if x.is_complex():
        raise ValueError(f"{name} must be real (magnitude images), got {x.dtype}")
    return x if x.dtype == torch.float64 else x.to(torch.float32)


def _image_pair(target: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images as ``(B, H, W)`` on ``target``'s device in one precision, checked for SSIM."""
    target_w = _as_images(target, "target")
    pred_w = _as_images(pred, "pred").to(target_w.device)
    if target_w.shape != pred_w.shape:
        raise ValueError(
            f"target and pred shapes differ: {tuple(target.shape)} vs {tuple(pred.shape)}"
        )
    if target_w.dtype != pred_w.dtype:
        target_w, pred_w = target_w.double(), pred_w.double()
    height, width = target_w.shape[-2:]
    if min(height, width) < SSIM_WIN_SIZE:
        raise ValueError(
            f"images must be at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} for SSIM, "
            f"got {height}x{width}"
        )
    return target_w, pred_w


def _per_sample(
    value: torch.Tensor | Sequence[float] | float, batch: int, device: torch.device, name: str
) -> torch.Tensor:
    """Returns ``value`` as a float64 ``(batch,)`` tensor on ``device``; a scalar is broadcast."""
    value = torch.as_tensor(value, dtype=torch.float64, device=device).reshape(-1)
    if value.numel() == 1:
        return value.expand(batch)
    if value.numel() != batch:
        raise ValueError(f"{name} must be a scalar or have {batch} entries, got {value.numel()}")
    return value


def _window_sums(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sums of 7 consecutive elements along ``dim`` over the valid range (4 additions, not 6).

    Written out rather than ``avg_pool2d``, which on the CPU is several times slower for this
    small window, and rather than cumulative sums, whose differences lose digits.
    """
    n = x.shape[dim]
    pairs = x.narrow(dim, 0, n - 1) + x.narrow(dim, 1, n - 1)
    fours = pairs.narrow(dim, 0, n - 3) + pairs.narrow(dim, 2, n - 3)
    sevens = fours.narrow(dim, 0, n - 6) + pairs.narrow(dim, 4, n - 6)
    return sevens.add_(x.narrow(dim, 6, n - 6))


def _group_stats(target: torch.Tensor, pred: torch.Tensor, data_range: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` float64: each slice's sum of squared errors, sum of squared targets and SSIM."""
    # SSIM needs only E[x], E[y], E[x^2 + y^2] and E[xy]: vx + vy and vxy. Valid (unpadded)
    # windows give exactly the map that scikit-image keeps after cropping its 3-pixel border.
    target_sq = target * target
    error = target - pred
    sums = torch.stack([(error * error).sum(dim=(-2, -1), dtype=torch.float64),
                        target_sq.sum(dim=(-2, -1), dtype=torch.float64)], dim=1)
    maps = torch.stack([target, pred, target_sq + pred * pred, target * pred])
    # Window sums S rather than means S / n: the SSIM formula is unchanged with c1 and c2
    # scaled by n^2, which saves a pass; everything from here is in place, in float64.
    n = SSIM_WIN_SIZE**2
    sx, sy, ssq, sxy = _window_sums(_window_sums(maps, -2), -1).double().unbind(0)
    cov_norm = n / (n - 1)
    data_range = data_range.view(-1, 1, 1)
    c1 = (_SSIM_K1 * n * data_range) ** 2
    c2 = (_SSIM_K2 * n * data_range) ** 2
    products = sx * sy
    squares = sx.square_().addcmul_(sy, sy)
    # n^2 covariance terms: n * S(xy) - S(x) S(y) and n * S(x^2 + y^2) - S(x)^2 - S(y)^2.
    covariance = sxy.mul_(n).sub_(products).mul_(2 * cov_norm).add_(c2)
    variances = ssq.mul_(n).sub_(squares).mul_(cov_norm).add_(c2)
    numerator = products.mul_(2).add_(c1).mul_(covariance)
    denominator = squares.add_(c1).mul_(variances)
    ssim = numerator.div_(denominator).mean(dim=(-2, -1))
    return torch.cat([sums, ssim.unsqueeze(1)], dim=1)


# Slices scored one at a time on the CPU: their maps then stay in the processor's cache (one slice
# beat groups of 2 to 30 on an AMD EPYC, 2026-11-25).
_CPU_GROUP = 1


def _slice_stats(target: torch.Tensor, pred: torch.Tensor, data_range: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` float64 per slice of ``(B, H, W)`` images: SSE, sum of squared targets, SSIM."""
    if target.device.type != "cpu":
        return _group_stats(target, pred, data_range)
    return torch.cat([
        _group_stats(target[i:i + _CPU_GROUP], pred[i:i + _CPU_GROUP], data_range[i:i + _CPU_GROUP])
        for i in range(0, target.shape[0], _CPU_GROUP)
    ])


def _ssim(target: torch.Tensor, pred: torch.Tensor, data_range: torch.Tensor) -> torch.Tensor:
    """SSIM of ``(B, H, W)`` images with per-sample ``data_range`` ``(B,)``, float64 ``(B,)``."""
    return _slice_stats(target, pred, data_range)[:, 2]


def ssim_per_slice(
    target: torch.Tensor,
    pred: torch.Tensor,
    data_range: torch.Tensor | Sequence[float] | float,
) -> torch.Tensor:
    """Per-slice SSIM exactly as scikit-image's ``structural_similarity`` in fastMRI.

    Args:
        target: Reference images, ``(B, H, W)`` or ``(B, 1, H, W)``, real, H and W >= 7.
        pred: Reconstructions of the same shape (moved to ``target``'s device).
        data_range: ``(B,)`` values or one scalar. To match ``fastmri.evaluate.ssim`` pass
            the maximum of each slice's target *volume*, not of the slice.

    Returns:
        A float64 ``(B,)`` tensor on ``target``'s device.

    Raises:
        ValueError: On mismatched or unsupported shapes, or images smaller than 7x7.
    """
    target_w, pred_w = _image_pair(target, pred)
    ranges = _per_sample(data_range, target_w.shape[0], target_w.device, "data_range")
    return _ssim(target_w, pred_w, ranges)


def _psnr(data_range: float, mse: float) -> float:
    # skimage returns inf (with a numpy divide warning) for a perfect reconstruction.
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


@torch.no_grad()
def volume_metrics(target: torch.Tensor, pred: torch.Tensor, crop_to_square: bool = False) -> dict[str, float]:
    """SSIM, PSNR and NMSE of one volume, as ``fastmri.evaluate`` computes them.

    Args:
        target: The target volume, ``(S, H, W)`` or ``(S, 1, H, W)``, in image units.
        pred: The reconstruction, same shape.
        crop_to_square: First crop both to :func:`evaluation_crop_size`, as fastMRI's
            evaluation command does.

    Returns:
        ``{"ssim", "psnr", "nmse"}`` as Python floats; ``data_range`` is ``target.max()``
        (of the crop).
    """
    if crop_to_square:
        target, pred = square_crop(target), square_crop(pred)
    target_w, pred_w = _image_pair(target, pred)
    volume_max = target_w.max().double()
    per_slice = _slice_stats(target_w, pred_w, volume_max.expand(target_w.shape[0]))
    sse_value, gt_sq_value = per_slice[:, :2].sum(dim=0).tolist()
    ssim_value, max_value = per_slice[:, 2].mean().item(), volume_max.item()
    return {
        "ssim": ssim_value,
        "psnr": _psnr(max_value, sse_value / target_w.numel()),
        "nmse": sse_value / gt_sq_value if gt_sq_value else math.nan,
    }


class _SliceStats(NamedTuple):
    sse: float
    gt_sq: float
    num_px: int
    ssim: float
    gt_max: float
    max_value: float


class VolumeMetricAccumulator:
    """Per-volume SSIM, PSNR and NMSE from slices that arrive in any order and batching.

    Validation and test loops see a volume's slices spread over several batches, possibly
    interleaved with other volumes. For each slice this keeps only a few numbers (sum of
    squared errors, sum of squared targets, pixel count, the slice's SSIM, the slice's target
    maximum), so memory grows with the number of slices, not with the image size.

    SSIM is computed per slice at :meth:`update` time with ``data_range = max_value``. It
    equals ``fastmri.evaluate.ssim`` exactly when ``max_value`` is the target volume's
    maximum, which is what the fastMRI files' ``max`` attribute holds. :meth:`compute`
    warns (``RuntimeWarning``) when a volume's stored targets have a different maximum,
    because then the SSIM used a different data range from the reference: typically the
    target was normalised before being passed in, or only part of the volume was seen.
    PSNR uses the maximum over the stored slices' target maxima, which is the exact volume
    maximum once every slice has been seen.

    Updating the same (key, slice) twice keeps the last update: distributed samplers pad
    their shards by repeating samples, and those repeats must not be counted twice.

    :meth:`update` leaves its per-slice numbers on the tensors' device; they reach the host
    once, in :meth:`records` or :meth:`compute`, so a validation loop on the GPU does not wait
    for the device after every batch. :meth:`records` and :meth:`merge` move the per-slice
    numbers between processes, so the volumes of a distributed run are scored exactly once.

    Args:
        crop_to_square: Crop every slice to :func:`evaluation_crop_size` before scoring, as
            fastMRI's evaluation command does; ``max_value`` must then be the maximum of the
            cropped target volume.
    """

    def __init__(self, crop_to_square: bool = False) -> None:
        """Creates an empty accumulator."""
        self.crop_to_square = crop_to_square
        self._volumes: dict[Hashable, dict[int, _SliceStats]] = {}
        self._pending: list[tuple[list[Hashable], torch.Tensor, torch.Tensor, int]] = []

    def reset(self) -> None:
        """Forgets every slice seen so far."""
        self._volumes.clear()
        self._pending.clear()

    @torch.no_grad()  # a prediction still attached to its graph must not keep it alive
    def update(
        self,
        target: torch.Tensor,
        pred: torch.Tensor,
        max_value: torch.Tensor | Sequence[float],
        keys: Sequence[Hashable],
        slice_nums: torch.Tensor | Sequence[int],
    ) -> None:
        """Adds a batch of slices.

        Args:
            target: Target slices in image units (not normalised), ``(B, H, W)`` or
                ``(B, 1, H, W)``.
            pred: Reconstructed slices, same shape and units.
            max_value: ``(B,)`` maximum of each slice's target volume (the file's ``max``
                attribute), used as SSIM's data range.
            keys: ``B`` hashable volume keys, e.g. ``(fname, acceleration)`` tuples.
            slice_nums: ``(B,)`` slice indices within their volumes.

        Raises:
            ValueError: On inconsistent shapes or lengths.
        """
        if self.crop_to_square:
            target, pred = square_crop(target), square_crop(pred)
        target_w, pred_w = _image_pair(target, pred)
        batch = target_w.shape[0]
        slices = torch.as_tensor(slice_nums).reshape(-1)
        if len(keys) != batch or slices.numel() != batch:
            raise ValueError(
                f"got {len(keys)} keys and {slices.numel()} slice numbers for {batch} images"
            )
        max_values = _per_sample(max_value, batch, target_w.device, "max_value")
        stats = torch.cat(
            [_slice_stats(target_w, pred_w, max_values), target_w.amax(dim=(1, 2)).double()[:, None], max_values[:, None]],
            dim=1,
        )
        self._pending.append((list(keys), slices, stats, target_w.shape[-2] * target_w.shape[-1]))

    def _materialize(self) -> None:
        """Moves the pending per-slice numbers to the host, in one transfer per device."""
        if not self._pending:
            return
        by_device: dict[torch.device, list[int]] = {}
        for i, (_, _, stats, _) in enumerate(self._pending):
            by_device.setdefault(stats.device, []).append(i)
        values: dict[int, tuple[list, list]] = {}
        for indices in by_device.values():
            stats = torch.cat([self._pending[i][2] for i in indices]).tolist()
            slices = torch.cat([self._pending[i][1].to(self._pending[i][2].device) for i in indices]).tolist()
            start = 0
            for i in indices:
                n = len(self._pending[i][0])
                values[i] = (slices[start:start + n], stats[start:start + n])
                start += n
        for i, (keys, _, _, num_px) in enumerate(self._pending):
            for key, slice_num, (sse, gt_sq, ssim, gt_max, max_val) in zip(keys, *values[i]):
                self._volumes.setdefault(key, {})[int(slice_num)] = _SliceStats(
                    sse, gt_sq, num_px, ssim, gt_max, max_val
                )
        self._pending.clear()

    def records(self) -> list[tuple[Hashable, int, tuple]]:
        """Every slice's numbers, as plain Python values (for :meth:`merge` in another process)."""
        self._materialize()
        return [(key, s, tuple(stats)) for key, by_slice in self._volumes.items() for s, stats in by_slice.items()]

    def merge(self, records: Sequence[tuple[Hashable, int, tuple]]) -> None:
        """Adds slices from :meth:`records` of another accumulator (a repeated slice keeps one)."""
        self._materialize()
        for key, slice_num, stats in records:
            self._volumes.setdefault(key, {})[int(slice_num)] = _SliceStats(*stats)

    def compute(self, whole_volumes: bool = True) -> dict[Hashable, dict[str, float]]:
        """Returns ``{key: {"ssim", "psnr", "nmse", "num_slices"}}`` for every volume seen.

        ``num_slices`` (a float, like the metrics) is the number of distinct slices stored.

        Args:
            whole_volumes: whether every slice of each volume was given; False for a limited
                validation (``limit_val_batches``), whose slices may all lie below the volume's
                maximum.

        Warns:
            RuntimeWarning: For each volume whose stored targets' maximum differs from the
                ``max_value`` used for its SSIM by more than 1e-6 relative (with
                ``whole_volumes`` False: only where a slice exceeds it, which is wrong always).
        """
        self._materialize()
        results: dict[Hashable, dict[str, float]] = {}
        for key, by_slice in self._volumes.items():
            stats = list(by_slice.values())
            volume_max = max(s.gt_max for s in stats)
            used = sorted({s.max_value for s in stats})
            off = [m for m in used if abs(m - volume_max) > _MAX_RTOL * abs(volume_max)
                   and (whole_volumes or m < volume_max)]
            if off:
                warnings.warn(
                    f"volume {key!r}: SSIM used max_value {used} but its stored target slices "
                    f"have maximum {volume_max}; SSIM matches fastmri.evaluate only when "
                    "max_value is the maximum of the (unnormalised) target volume",
                    RuntimeWarning,
                    stacklevel=2,
                )
            sse = math.fsum(s.sse for s in stats)
            gt_sq = math.fsum(s.gt_sq for s in stats)
            num_px = sum(s.num_px for s in stats)
            results[key] = {
                "ssim": math.fsum(s.ssim for s in stats) / len(stats),
                "psnr": _psnr(volume_max, sse / num_px),
                "nmse": sse / gt_sq if gt_sq else math.nan,
                "num_slices": float(len(stats)),
            }
        return results


def summarize(
    per_volume: Mapping[Hashable, Mapping[str, float]],
    metrics: Sequence[str] = ("ssim", "psnr", "nmse"),
) -> dict[str, float]:
    """Mean and standard deviation of per-volume metrics over volumes.

    The standard deviation is the population one (``ddof=0``): it describes the evaluated
    set itself. ``fastmri.evaluate`` prints ``mean +/- 2 * std`` with runstats' sample
    standard deviation (``ddof=1``) instead; multiply by ``sqrt(n / (n - 1))`` to compare.

    Args:
        per_volume: ``{key: {metric: value}}``, e.g. from
            :meth:`VolumeMetricAccumulator.compute`. To summarise a group, pass the subset
            of volumes in it, or use :func:`summarize_by`.
        metrics: Names of the metrics to summarise.

    Returns:
        ``{"<metric>_mean", "<metric>_std"}`` for each metric, plus ``"num_volumes"``;
        means and stds are NaN when ``per_volume`` is empty.
    """
    count = len(per_volume)
    summary: dict[str, float] = {"num_volumes": float(count)}
    for name in metrics:
        values = [v[name] for v in per_volume.values()]
        mean = math.fsum(values) / count if count else math.nan
        summary[f"{name}_mean"] = mean
        summary[f"{name}_std"] = (
            math.sqrt(math.fsum((x - mean) ** 2 for x in values) / count) if count else math.nan
        )
    return summary


def summarize_by(
    per_volume: Mapping[K, Mapping[str, float]],
    group_of: Callable[[K], G],
    metrics: Sequence[str] = ("ssim", "psnr", "nmse"),
) -> dict[G, dict[str, float]]:
    """:func:`summarize` separately for each group of volumes.

    Args:
        per_volume: ``{key: {metric: value}}``.
        group_of: Maps a volume key to its group, e.g. ``lambda key: key[1]`` for the
            acceleration of ``(fname, acceleration)`` keys.
        metrics: Names of the metrics to summarise.

    Returns:
        ``{group: summary}`` in order of first appearance.
    """
    groups: dict[G, dict[K, Mapping[str, float]]] = {}
    for key, values in per_volume.items():
        groups.setdefault(group_of(key), {})[key] = values
    return {group: summarize(members, metrics) for group, members in groups.items()}
