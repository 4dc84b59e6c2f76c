"""Which slices go into which batch, on which process, in which order.

:class:`SliceBatchSampler` is the one batch sampler of every loader:

* **Shape groups.** A batch only holds slices of one k-space shape and one reconstruction size,
  so that k-space stacks (for the on-device chain and for k-space networks) and images stack.
  Real downloads mix widths (knee 368/372, brain 320/396, FLAIR_203's 264): grouping replaces
  zero-padding k-space, which would change the image grid and its scale.
* **Training.** From ``(seed, epoch)`` alone it draws the order of the slices and one mask seed
  per slice, in the main process, so the masks of a run are the same for any ``num_workers``,
  and resuming a run draws what the uninterrupted run would have drawn. Batches are dealt to
  the ``num_replicas`` processes of a distributed run, each getting different slices, and the
  union over processes covers the epoch once (batches are split, not repeated, to give every
  process the same number of steps).
* **Evaluation.** Slices stay in file order and every scored unit (a volume at one
  acceleration) stays whole on one process, so per-volume metrics and written volumes need no
  exchange of slices; the units are spread to even out the slice counts. A process left with
  nothing gets one *padding* request, a repeat that is neither scored nor written.
* **Resuming.** :meth:`resume` skips the batches a checkpoint had already trained on in its
  epoch, so a run stopped mid-epoch continues with the very next batch.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from mrirecon.data.dataset import SliceRequest


def _chunks(items: Sequence, size: int) -> list[list]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _even_out(batches: list[list], num_replicas: int) -> list[list]:
    """Splits the largest batches until their number is a multiple of ``num_replicas``.

    Every process of a distributed run must take the same number of optimiser steps. Splitting
    keeps every slice exactly once; only when all batches are single slices (fewer slices than
    processes) are some repeated, marked as padding.
    """
    batches = [list(b) for b in batches]
    while len(batches) % num_replicas:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]))
        if len(batches[largest]) < 2:
            repeats = num_replicas - len(batches) % num_replicas
            return batches + [[SliceRequest(b[0].index, b[0].seed, True)] for b in batches[:repeats]]
        half = math.ceil(len(batches[largest]) / 2)
        batches[largest:largest + 1] = [batches[largest][:half], batches[largest][half:]]
    return batches


class _EpochRelay:
    """Lightning announces a new epoch to ``loader.batch_sampler.sampler.set_epoch`` only."""

    def __init__(self, owner: "SliceBatchSampler") -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class SliceBatchSampler(Sampler[list[SliceRequest]]):
    """Batches of :class:`SliceRequest` for one process; see the module docstring.

    Args:
        groups: per item, a key; a batch holds items of one key.
        units: per item, the scored unit it belongs to (evaluation keeps units on one process).
        batch_size: slices per batch (fewer at the end of a group).
        shuffle: training order (shuffled per epoch, with mask seeds) or evaluation order.
        seed: seed of the training order and masks.
        num_replicas: number of processes sharing the data.
        rank: this process.
    """

    def __init__(
        self,
        groups: Sequence[Hashable],
        units: Sequence[Hashable],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.groups = list(groups)
        self.units = list(units)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._resume: tuple[int, int] | None = None
        self.sampler = _EpochRelay(self)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every epoch (also after a resume)."""
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue after this process's first ``batches_done`` batches of ``epoch``.

        Lightning creates the first iterator of a resumed fit before it announces the epoch, and
        DataLoader workers start drawing from it at once, so the epoch is set here: ``epoch`` for
        a checkpoint from its middle, the next one for a checkpoint from its end.
        """
        if batches_done >= len(self._my_batches(epoch)):
            self.epoch, self._resume = epoch + 1, None
        else:
            self.epoch, self._resume = epoch, (epoch, batches_done)

    def _grouped(self, order: Sequence[int]) -> dict[Hashable, list[int]]:
        by_group: dict[Hashable, list[int]] = {}
        for i in order:
            by_group.setdefault(self.groups[i], []).append(i)
        return by_group

    def training_batches(self, epoch: int) -> list[list[SliceRequest]]:
        """Every process's batches of one training epoch, in order; process r takes ``[r::R]``."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.groups))
        seeds = rng.integers(0, 2**62, size=len(self.groups))
        batches = [
            [SliceRequest(int(i), int(seeds[i])) for i in chunk]
            for members in self._grouped(order).values()
            for chunk in _chunks(members, self.batch_size)
        ]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        return _even_out(batches, self.num_replicas)

    def evaluation_batches(self) -> list[list[list[SliceRequest]]]:
        """Per process, its batches: whole units, in file order, slice counts evened out."""
        sizes: dict[Hashable, int] = {}
        for unit in self.units:
            sizes[unit] = sizes.get(unit, 0) + 1
        owner: dict[Hashable, int] = {}
        load = [0] * self.num_replicas
        for unit in sorted(sizes, key=lambda u: -sizes[u]):  # stable: ties keep file order
            rank = min(range(self.num_replicas), key=lambda r: load[r])
            owner[unit] = rank
            load[rank] += sizes[unit]
        per_rank: list[list[list[SliceRequest]]] = []
        for rank in range(self.num_replicas):
            mine = [i for i, unit in enumerate(self.units) if owner[unit] == rank]
            batches = [
                [SliceRequest(i) for i in chunk]
                for members in self._grouped(mine).values()
                for chunk in _chunks(members, self.batch_size)
            ]
            if not batches and self.units:
                batches = [[SliceRequest(0, 0, True)]]
            per_rank.append(batches)
        return per_rank

    def _my_batches(self, epoch: int) -> list[list[SliceRequest]]:
        if self.shuffle:
            return self.training_batches(epoch)[self.rank :: self.num_replicas]
        return self.evaluation_batches()[self.rank]

    def __iter__(self) -> Iterator[list[SliceRequest]]:
        # A generator: the epoch is read when the first batch is drawn, after set_epoch.
        batches = self._my_batches(self.epoch)
        if self._resume is not None and self._resume[0] == self.epoch:
            batches = batches[self._resume[1]:]
        self._resume = None
        yield from batches

    def __len__(self) -> int:
        return len(self._my_batches(self.epoch))
