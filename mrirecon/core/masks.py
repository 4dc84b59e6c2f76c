"""Column masks: fastMRI's mask functions, drawn so that runs are reproducible.

We keep fastMRI's ``MaskFunc`` classes (their sampling densities are the ones the field reports
against) and only control *which seed* each draw gets:

* validation and test: the mask of a volume is fixed by its file name, as fastMRI's transforms
  do (``seed = tuple(map(ord, fname))``), so every epoch, every model and every baseline sees the
  same mask. Each (centre fraction, acceleration) pair has its own fixed mask, so a volume can be
  evaluated at every acceleration of the run.
* training: each draw is seeded from a per-sample integer produced by the sampler in the main
  process (see :mod:`mrirecon.data.samplers`). fastMRI's training masks come from the worker's
  global NumPy state, which is not reproducible with ``num_workers=0`` and repeats across ranks.

The arguments are checked here, where they are parsed: fastMRI's mask functions accept an
acceleration of 0 (ZeroDivisionError later), a negative one (a centre-only mask) or a centre
band wider than the whole sampling budget (fewer columns than the label says), silently.
"""

from __future__ import annotations

from typing import Literal, Sequence, get_args

import numpy as np
from fastmri.data.subsample import MaskFunc, create_mask_for_mask_type

MaskType = Literal["random", "equispaced", "equispaced_fraction", "magic", "magic_fraction"]
MASK_TYPES: tuple[str, ...] = get_args(MaskType)


def fname_seed(fname: str) -> tuple[int, ...]:
    """fastMRI's per-volume seed: the code points of the file name."""
    return tuple(map(ord, fname))



def check_mask_settings(mask_type: str, center_fractions: Sequence[float], accelerations: Sequence[int]) -> None:
    """Rejects settings that fastMRI's mask functions would turn into wrong or crashing masks.

    Raises:
        ValueError: naming the argument (``accelerations``, ``center_fractions``,
            ``mask_type``) and the problem.
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type: {mask_type!r} is not one of {', '.join(MASK_TYPES)}")
    if not accelerations:
        raise ValueError("accelerations: at least one acceleration is needed")
    if len(center_fractions) != len(accelerations):
        raise ValueError(
            f"center_fractions: {list(center_fractions)} and accelerations {list(accelerations)} "
            "must have the same length (they are drawn in pairs)"
        )
    for acc in accelerations:
        if isinstance(acc, bool) or not float(acc).is_integer() or acc < 2:
            raise ValueError(f"accelerations: {list(accelerations)}: each must be an integer of at least 2, got {acc}")
    for cf, acc in zip(center_fractions, accelerations):
        if not 0.0 < cf < 1.0:
            raise ValueError(f"center_fractions: {list(center_fractions)}: each must lie strictly between 0 and 1, got {cf}")
        if cf * acc > 1.0:
            raise ValueError(
                f"center_fractions: {cf} at {acc}x keeps more centre columns than the whole "
                f"1/{acc} sampling budget; use a centre fraction of at most {1 / acc:g}"
            )


class ColumnMaskSampler:
    """Draws 1-D column masks for one or more (centre fraction, acceleration) pairs.

    Args:
        mask_type: one of fastMRI's mask types.
        center_fractions: fraction of centre columns always kept, one per acceleration.
        accelerations: nominal undersampling factors (integers of at least 2), one per
            centre fraction.

    Raises:
        ValueError: for settings that :func:`check_mask_settings` rejects.
    """

    def __init__(
        self,
        mask_type: MaskType,
        center_fractions: Sequence[float],
        accelerations: Sequence[int],
    ) -> None:
        check_mask_settings(mask_type, center_fractions, accelerations)
        self.mask_type = mask_type
        self.pairs = list(zip((float(c) for c in center_fractions), (int(a) for a in accelerations)))
        # One MaskFunc per pair, so that we (not fastMRI's global RandomState) choose the pair.
        self._funcs: list[MaskFunc] = [
            create_mask_for_mask_type(mask_type, [cf], [acc]) for cf, acc in self.pairs
        ]

    def __len__(self) -> int:
        return len(self.pairs)

    def check_width(self, num_cols: int, padding: tuple[int, int] | None = None) -> None:
        """Refuses settings that cannot draw an honest mask for k-space of ``num_cols`` columns.

        fastMRI's mask functions give a centre band of ``round(num_cols * center_fraction)``
        columns; with none, a draw may sample nothing at all and still be labelled "64x", and
        ``magic_fraction`` fails outright on narrow k-space. Every pair is drawn once here, so
        that no worker meets it in the middle of a run.

        Raises:
            ValueError: naming the argument, the pair and the width.
        """
        for index, (cf, acc) in enumerate(self.pairs):
            try:
                mask, num_low = self._draw(index, num_cols, 0, padding)
            except (ValueError, ZeroDivisionError):
                # fastMRI's own message ("division by zero", "high <= 0") names none of the
                # settings; say which ones and what would draw a mask.
                centre = round(num_cols * cf)
                raise ValueError(
                    f"mask_type: {self.mask_type} cannot draw a {acc}x mask of {num_cols} columns with "
                    f"center_fractions {cf} ({centre} centre column{'' if centre == 1 else 's'}): fastMRI's mask "
                    "function leaves no room for the outer lines at this width; use wider k-space, another "
                    "acceleration or mask_type: random"
                ) from None
            if num_low < 1 or not mask.any():
                raise ValueError(
                    f"center_fractions: {cf} at {acc}x keeps no centre column of {num_cols}, so a mask may sample "
                    f"nothing; use a centre fraction above {0.5 / num_cols:.3g} for this width")

    def fixed(
        self, fname: str, num_cols: int, pair_index: int, padding: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, int]:
        """The validation/test mask of a volume for one acceleration pair.

        Returns:
            (mask of shape (num_cols,) bool, number of centre columns).
        """
        return self._draw(pair_index, num_cols, fname_seed(fname), padding)

    def random(
        self, seed: int, num_cols: int, padding: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, int, int]:
        """A training mask from an integer seed; the pair is drawn uniformly.

        Returns:
            (mask (num_cols,) bool, number of centre columns, index of the drawn pair).
        """
        rng = np.random.default_rng(seed)
        pair_index = int(rng.integers(len(self.pairs)))
        mask_seed = int(rng.integers(2**31))
        mask, num_low = self._draw(pair_index, num_cols, mask_seed, padding)
        return mask, num_low, pair_index

    def _draw(
        self,
        pair_index: int,
        num_cols: int,
        seed: int | tuple[int, ...],
        padding: tuple[int, int] | None,
    ) -> tuple[np.ndarray, int]:
        # fastMRI's MaskFunc wants a k-space-like shape with columns at axis -2.
        mask, num_low = self._funcs[pair_index]((1, num_cols, 1), seed=seed)
        mask = mask.reshape(num_cols).numpy().astype(bool)
        num_low = min(int(num_low), num_cols)
        if padding is not None:
            # Columns outside the acquired band (real fastMRI brain data) were never measured.
            mask[: padding[0]] = False
            mask[padding[1] :] = False
        return mask, int(num_low)
