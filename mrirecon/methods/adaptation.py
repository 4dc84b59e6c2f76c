"""Scan-specific adaptation: a trained network fine-tuned on each scan's own measurement before
it reconstructs it (zero-shot self-supervised learning, Yaman et al. 2022).

A network that meets an unfamiliar head or contrast can learn from the scan itself: the slices
of a batch (one scan, or a few) are split as SSDU splits them
(:mod:`mrirecon.methods.self_supervised`), the network is fine-tuned on them for a few steps,
and a further held-back set of measured samples, which the fine-tuning never sees, stops it
early (the weights of the lowest loss there are kept). The adapted network then reconstructs
from the whole measurement and is forgotten: the next batch starts again from the trained
weights, and the checkpoint is never changed.

Evaluation runs under ``torch.inference_mode``; adaptation needs gradients, so it runs in its
own ``inference_mode(False)`` and ``enable_grad`` block on copies of the batch's tensors.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from mrirecon.core.operator import MRIOperator, center_crop
from mrirecon.data.batch import KSpaceBatch
from mrirecon.errors import UserError
from mrirecon.methods.self_supervised import SSDUSettings, measurement_loss, normalized_l1_l2, split_for, supports_ssdu

__all__ = ["AdaptSettings", "AdaptedMethod"]

# The "step" of the early-stopping split: one per slice, apart from every training step's.
_STOP_STEP = -2


@dataclass(frozen=True)
class AdaptSettings:
    """Scan-specific adaptation (the ``adapt:`` section of a config; 0 steps: none).

    Attributes:
        steps: fine-tuning steps per batch of slices (at most; early stopping may end sooner).
        lr: Adam's learning rate for them.
        loss_fraction: share of the training samples held back for the SSDU loss each step.
        stop_fraction: share of the measured samples outside the calibration region set aside
            for early stopping (never seen by the fine-tuning).
        patience: steps without a lower early-stopping loss before stopping.
        seed: seed of the splits (with the file, the slice and the step).
    """

    steps: int = 0
    lr: float = 1e-4
    loss_fraction: float = 0.4
    stop_fraction: float = 0.2
    patience: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise UserError(f"adapt.steps: must be 0 (no adaptation) or more, got {self.steps}")
        if not self.lr > 0:
            raise UserError(f"adapt.lr: must be positive, got {self.lr}")
        for name in ("loss_fraction", "stop_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise UserError(f"adapt.{name}: must lie strictly between 0 and 1, got {getattr(self, name)}")
        if self.patience < 1:
            raise UserError(f"adapt.patience: must be at least 1, got {self.patience}")


@dataclass
class AdaptedMethod:
    """A method whose network is fine-tuned on every batch it reconstructs (see the module
    docstring); ``seconds`` and ``slices`` add up the time spent and the slices reconstructed."""

    method: object
    settings: AdaptSettings
    seconds: float = 0.0
    slices: int = 0
    steps_taken: list[int] = field(default_factory=list)
    needs_kspace = True

    def __post_init__(self) -> None:
        if not supports_ssdu(self.method):
            net = type(getattr(self.method, "net", self.method)).__name__
            raise UserError(f"adapt.steps: scan-specific adaptation needs a network that reconstructs from the "
                            f"measurement and its mask (mrirecon.models.DataConsistentUnet), not {net}")

    def __call__(self, batch: KSpaceBatch) -> torch.Tensor:
        start = time.perf_counter()
        with torch.inference_mode(False), torch.enable_grad():
            batch = batch._replace(kspace=batch.kspace.clone(), mask=batch.mask.clone(),
                                   num_low_frequencies=batch.num_low_frequencies.clone())
            recon = self._adapt_and_reconstruct(batch)
        self.seconds += time.perf_counter() - start
        self.slices += batch.size
        return recon

    def _adapt_and_reconstruct(self, batch: KSpaceBatch) -> torch.Tensor:
        s = self.settings
        kspace, measured = self.method.measurement(batch)
        names, slices = batch.fname, batch.slice_num
        stop = split_for(measured, s.stop_fraction, s.seed, _STOP_STEP, 0, names, slices)
        seen = stop.input.apply(kspace)  # what the fine-tuning may use
        net = copy.deepcopy(self.method.net)
        for parameter in net.parameters():
            parameter.requires_grad_(True)
        optimizer = torch.optim.Adam(net.parameters(), lr=s.lr)
        ssdu = SSDUSettings(loss_fraction=s.loss_fraction, num_splits=1, seed=s.seed)

        def stop_loss() -> float:
            with torch.no_grad():
                predicted = MRIOperator(stop.loss).A(net.reconstruct(seen, stop.input))
                return float(normalized_l1_l2(predicted, stop.loss.apply(kspace)))

        best_loss, best_state, waited, taken = stop_loss(), copy.deepcopy(net.state_dict()), 0, 0
        for step in range(s.steps):
            loss = measurement_loss(net, seen, stop.input, ssdu, step, names, slices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            current = stop_loss()
            if current < best_loss:
                best_loss, best_state, waited, taken = current, copy.deepcopy(net.state_dict()), 0, step + 1
            else:
                waited += 1
                if waited >= s.patience:
                    break
        self.steps_taken.append(taken)
        net.load_state_dict(best_state)
        with torch.no_grad():
            # The whole measurement, the early-stopping samples included, for the reconstruction.
            return center_crop(net(kspace, measured), batch.crop_size).detach()
