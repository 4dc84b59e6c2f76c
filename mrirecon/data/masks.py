"""Column masks: fastMRI's mask functions, drawn so that runs are reproducible.

We keep fastMRI's ``MaskFunc`` classes (their sampling densities are the ones the field reports
against) and only control *which seed* each draw gets:

* validation and test: the mask of a volume is fixed by its file name, as fastMRI's transforms
  do (``seed = tuple(map(ord, fname))``), so every epoch, every model and every baseline sees the
  same mask. Each (centre fraction, acceleration) pair has its own fixed mask, so a volume can be
  evaluated at every acceleration of the run.
* training: each draw is seeded from a per-sample integer produced by the sampler in the main
  process (see :mod:`mrirecon.data.dataset`). fastMRI's training masks come from the worker's
  global NumPy state, which is not reproducible with ``num_workers=0`` and repeats across ranks.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from fastmri.data.subsample import MaskFunc, create_mask_for_mask_type

MaskType = Literal["random", "equispaced", "equispaced_fraction", "magic", "magic_fraction"]


def fname_seed(fname: str) -> tuple[int, ...]:
    """fastMRI's per-volume seed: the code points of the file name."""
    return tuple(map(ord, fname))


class ColumnMaskSampler:
    """Draws 1-D column masks for one or more (centre fraction, acceleration) pairs.

    Args:
        mask_type: one of fastMRI's mask types.
        center_fractions: fraction of centre columns always kept, one per acceleration.
        accelerations: nominal undersampling factors, one per centre fraction.
    """

    def __init__(
        self,
        mask_type: MaskType,
        center_fractions: Sequence[float],
        accelerations: Sequence[int],
    ) -> None:
        if len(center_fractions) != len(accelerations):
            raise ValueError(
                f"center_fractions {list(center_fractions)} and accelerations "
                f"{list(accelerations)} must have the same length (they are drawn in pairs)"
            )
        if not accelerations:
            raise ValueError("at least one acceleration is needed")
        self.mask_type = mask_type
        self.pairs = list(zip((float(c) for c in center_fractions), (int(a) for a in accelerations)))
        # One MaskFunc per pair, so that we (not fastMRI's global RandomState) choose the pair.
        self._funcs: list[MaskFunc] = [
            create_mask_for_mask_type(mask_type, [cf], [acc]) for cf, acc in self.pairs
        ]

    def __len__(self) -> int:
        return len(self.pairs)

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
        if padding is not None:
            # Columns outside the acquired band (real fastMRI brain data) were never measured.
            mask[: padding[0]] = False
            mask[padding[1] :] = False
        return mask, int(num_low)
