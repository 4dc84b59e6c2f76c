"""The LightningModule: trains and evaluates any reconstruction method on k-space batches.

It receives its network (LightningCLI's ``model.net`` with a ``class_path``): an image network
(``mrirecon.models.Unet``), a k-space network (``mrirecon.models.VarNet``) or a parameter-free
method (``mrirecon.methods.ZeroFilled``, ``CSTV``, for ``mrirecon baseline``); see
:mod:`mrirecon.methods.base`. The optimiser and scheduler come from LightningCLI's standard
``optimizer:`` / ``lr_scheduler:`` sections; :meth:`ReconModule.configure_optimizers` is the
fallback (Adam, lr 1e-3) for use outside the CLI.

Validation and test score every volume per acceleration with fastMRI's metric definitions, as
its evaluation command applies them, in image units, for the method and for the zero-filled
input. Under DDP every process scores whole volumes and the per-slice numbers are gathered
before the per-volume reduction, so the numbers equal a one-process run's.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from fastmri.losses import SSIMLoss
from torch import nn

from mrirecon.core.metrics import VolumeMetricAccumulator
from mrirecon.core.transforms import normalize
from mrirecon.data.batch import KSpaceBatch, normalized_target
from mrirecon.errors import TrainingDiverged, UserError
from mrirecon import internals
from mrirecon.evaluation.results import EvaluationResults
from mrirecon.lightning.distributed import gather_objects
from mrirecon.lightning.image_logging import ImageRow, log_validation_images
from mrirecon.methods.adaptation import AdaptedMethod, AdaptSettings
from mrirecon.methods.base import as_method
from mrirecon.methods.self_supervised import VALIDATION_STEP, SSDUSettings, ssdu_loss, supports_ssdu
from mrirecon.models.unet import Unet

MODEL_KEY = "method"  # the trained (or evaluated) method; its name in tables is method_name
ZERO_FILLED_KEY = "zero-filled"
VALIDATION_METRICS = ("ssim", "psnr", "nmse")
# What validation logs the metrics of each method under.
VALIDATION_PREFIXES = {MODEL_KEY: "val", ZERO_FILLED_KEY: "val_zero_filled"}


def metric_name(prefix: str, metric: str, acceleration: Optional[float] = None) -> str:
    """The logged name of a metric: ``val/ssim``, ``val/ssim_4x``, ``val_zero_filled/psnr``."""
    return f"{prefix}/{metric}" if acceleration is None else f"{prefix}/{metric}_{acceleration:g}x"


def logged_metric_names(accelerations: list[float]) -> list[str]:
    """Every metric a fit logs (what checkpoint.monitor and a scheduler's monitor may name)."""
    names = ["train/loss", "val/loss"]
    for prefix in VALIDATION_PREFIXES.values():
        for metric in VALIDATION_METRICS:
            names += [metric_name(prefix, metric), *(metric_name(prefix, metric, a) for a in sorted(set(accelerations)))]
    return names


def describe_network(net: nn.Module) -> dict[str, Any]:
    """The class and constructor arguments of a network, for hyperparameter logging."""
    params = inspect.signature(type(net).__init__).parameters
    args = {name: getattr(net, name) for name in params if name != "self" and hasattr(net, name)}
    return {"class_path": f"{type(net).__module__}.{type(net).__qualname__}", "init_args": args}


def compile_unets(net: nn.Module) -> None:
    """``torch.compile`` every U-Net inside ``net`` (its forward; the weights keep their names)."""
    for module in net.modules():
        if isinstance(module, Unet):
            module.forward = torch.compile(module.forward)


def default_method_name(net: nn.Module) -> str:
    """``unet`` for Unet, ``varnet`` for VarNet, ``unet-dc`` for DataConsistentUnet, ``cs-tv`` for
    CSTV, ``zero-filled`` for ZeroFilled."""
    name = type(net).__name__
    return {"CSTV": "cs-tv", "ZeroFilled": ZERO_FILLED_KEY, "DataConsistentUnet": "unet-dc"}.get(name, name.lower())


class ReconModule(pl.LightningModule):
    """Supervised reconstruction from undersampled k-space.

    Args:
        net: the network or method (see the module docstring).
        loss: ``l1`` (fastMRI's U-Net loss: L1 between the output and the target, both
            standardised by the zero-filled image's mean and std) or ``ssim`` (1 - SSIM in
            image units, with the target volume's data range: fastMRI's VarNet loss).
        num_log_images: validation slices shown in TensorBoard each epoch (fixed slices).
        method_name: the name of this model in result tables (default: from the network's
            class, ``unet``, ``varnet``, ``cs-tv``, ...).
        channels_last: keep the network's weights and image inputs in channels-last memory
            layout (faster convolutions on recent GPUs, above all with bf16).
        compile: ``torch.compile`` the network's U-Nets (the complex k-space chain, FFTs and
            data consistency stay eager); the first steps then take longer.
        training: ``supervised`` (``loss`` against the fully sampled target) or ``ssdu``
            (self-supervised: the network sees part of each slice's measured samples, the loss
            compares its k-space with the rest; :mod:`mrirecon.methods.self_supervised`, for
            networks with data consistency). ``val/loss`` is the training objective on the
            validation split either way (with ``ssdu``, on one fixed split per slice).
        ssdu: how ``ssdu`` splits the measurement (held-back fraction, splits per slice, seed).
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        loss: Literal["l1", "ssim"] = "l1",
        num_log_images: int = 4,
        method_name: Optional[str] = None,
        channels_last: bool = False,
        compile: bool = False,
        training: Literal["supervised", "ssdu"] = "supervised",
        ssdu: SSDUSettings = SSDUSettings(),
    ) -> None:
        super().__init__()
        self.net = net if net is not None else Unet()
        self.save_hyperparameters(ignore=["net", "ssdu"])
        # A second call (not `self.hparams[...] = ...`) so that hparams_initial, which the
        # loggers write to hparams.yaml, holds the network too; the settings as plain data, which
        # a checkpoint loads without unpickling objects.
        self.save_hyperparameters({"net": describe_network(self.net), "ssdu": dataclasses.asdict(ssdu)})
        self.channels_last = channels_last
        self.compile = compile
        self._compiled = False
        self.method = as_method(self.net, channels_last=channels_last)  # a plain object: parameters stay under net.*
        if training == "ssdu" and not supports_ssdu(self.method):
            raise UserError(f"model.training: ssdu needs a network that reconstructs from the measurement and its "
                            f"mask (mrirecon.models.DataConsistentUnet), not {type(self.net).__name__}")
        self.training_mode = training  # not `training`: nn.Module's train/eval flag
        self.ssdu = ssdu
        # Scan-specific adaptation in test and predict (the config's adapt: section; the CLI sets it).
        self.adapted: Optional[AdaptedMethod] = None
        self.loss_name = loss
        self.ssim_loss = SSIMLoss() if loss == "ssim" else None
        self.num_log_images = num_log_images
        self.method_name = method_name or default_method_name(self.net)
        # The last test's per-volume metrics (the same on every process); writing and printing
        # them is the evaluation layer's job (mrirecon.evaluation.results.publish_results).
        self.test_results: Optional[EvaluationResults] = None
        self._metrics = {MODEL_KEY: VolumeMetricAccumulator(crop_to_square=True),
                         ZERO_FILLED_KEY: VolumeMetricAccumulator(crop_to_square=True)}
        self._log_batches: set[int] = set()
        self._image_rows: list[ImageRow] = []
        # The first optimiser step whose loss was not finite, kept on the device (-1: none):
        # checked when it costs no extra synchronisation (logging, checkpoints, epoch ends).
        self.register_buffer("_first_nonfinite_step", torch.tensor(-1, dtype=torch.long), persistent=False)
        self._reset_metrics()

    @property
    def needs_targets(self) -> bool:
        """Whether training and validation files need fully sampled targets (not for SSDU)."""
        return self.training_mode != "ssdu"

    @property
    def needs_kspace(self) -> bool:
        """Whether batches must keep their k-space (k-space networks and CS-TV read it)."""
        return self.method.needs_kspace

    def forward(self, batch: KSpaceBatch) -> torch.Tensor:
        """Reconstructed ``(B, h, w)`` images in image units."""
        return self.method(batch)

    def adapt_when_evaluating(self, settings: Optional[AdaptSettings]) -> None:
        """Fine-tune on each batch's own measurement before reconstructing it, in test and
        predict (``settings.steps`` 0 or None: not)."""
        self.adapted = AdaptedMethod(self.method, settings) if settings is not None and settings.steps else None

    def _evaluation_reconstruction(self, batch: KSpaceBatch) -> torch.Tensor:
        return self.adapted(batch) if self.adapted is not None else self(batch)

    def _loss(self, recon: torch.Tensor, batch: KSpaceBatch) -> torch.Tensor:
        # In float32 whatever the autocast state: SSIM's local variances and fastMRI-scale
        # intensities (1e-4) lose their digits in bfloat16.
        with torch.autocast(device_type=recon.device.type, enabled=False):
            return self._full_precision_loss(recon.float(), batch)

    def _full_precision_loss(self, recon: torch.Tensor, batch: KSpaceBatch) -> torch.Tensor:
        if self.ssim_loss is None:
            return F.l1_loss(normalize(recon, batch.mean, batch.std).unsqueeze(1), normalized_target(batch))
        # SSIM is scale invariant once data_range scales too: dividing by the data range keeps
        # the constants C1, C2 in a float32-friendly range for fastMRI's tiny intensities.
        scale = batch.max_value.float().clamp_min(1e-12)[:, None, None, None]
        pred = recon.float().unsqueeze(1) / scale
        target = batch.target.unsqueeze(1) / scale
        return self.ssim_loss(pred, target, torch.ones_like(batch.max_value, dtype=torch.float32))

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile and not self._compiled:
            compile_unets(self.net)
            self._compiled = True

    # --- training ----------------------------------------------------------------------------
    def _objective(self, batch: KSpaceBatch, recon: torch.Tensor | None, step: int) -> torch.Tensor:
        """The training loss: against the target, or SSDU's on held-back samples at ``step``."""
        if self.training_mode == "ssdu":
            return ssdu_loss(self.method, batch, self.ssdu, step)
        return self._loss(recon if recon is not None else self(batch), batch)

    def training_step(self, batch: KSpaceBatch, batch_idx: int) -> torch.Tensor:
        loss = self._objective(batch, None, self.global_step)
        # Not on the progress bar: showing it would wait for the GPU after every step; it is
        # read when Lightning logs (every log_every_n_steps steps).
        self.log("train/loss", loss, batch_size=batch.size)
        step = torch.full_like(self._first_nonfinite_step, self.global_step)
        first = self._first_nonfinite_step
        self._first_nonfinite_step = torch.where((first < 0) & ~torch.isfinite(loss.detach()), step, first)
        return loss

    def check_loss_finite(self) -> None:
        """Stops training with one line if a training loss was NaN or Inf.

        Raises:
            UserError: naming the first step with a non-finite loss.
        """
        step = int(self._first_nonfinite_step)
        if step >= 0:
            last = next((c.path for c in self.trainer.callbacks if hasattr(c, "every_n_train_steps") and c.path), None)
            kept = f"; {last} keeps the last finite state" if last is not None and Path(last).is_file() else ""
            raise TrainingDiverged(
                f"training loss is NaN or Inf at step {step} (epoch {self.current_epoch}): training stopped "
                f"without saving{kept}; lower the learning rate or check the data"
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step % max(self.trainer.log_every_n_steps, 1) == 0:
            self.check_loss_finite()

    def on_train_epoch_end(self) -> None:
        self.check_loss_finite()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Never overwrite a good checkpoint with a diverged state.
        self.check_loss_finite()

    # --- validation and test: per-volume metrics ----------------------------------------------
    def _reset_metrics(self) -> None:
        for acc in self._metrics.values():
            acc.reset()
        # Sum and count of the evaluation loss over slices, on the device until the epoch ends.
        self._loss_total = torch.zeros((), dtype=torch.float64, device=self.device)
        self._loss_slices = 0

    def _evaluate_batch(self, batch: KSpaceBatch, testing: bool = False) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        """Reconstructs and scores a batch; validation also adds up its loss, test adapts the
        network to the batch first when asked (:meth:`adapt_when_evaluating`)."""
        recon = self._evaluation_reconstruction(batch) if testing else self(batch)
        if all(batch.padding):
            return None, recon
        keep = [not p for p in batch.padding]
        scored = batch.select(keep)
        recon_scored = recon if all(keep) else recon[torch.tensor(keep, device=recon.device)]
        loss = None
        if not testing:  # test reports metrics only: SSDU's held-out loss would cost more passes
            loss = self._objective(scored, recon_scored, VALIDATION_STEP)
            self._loss_total = self._loss_total + loss.detach().double() * scored.size
            self._loss_slices += scored.size
        if all(scored.has_target):  # a self-supervised run's target-less val split: its loss alone
            keys = list(zip(scored.fname, scored.acceleration))
            for name, image in ((MODEL_KEY, recon_scored), (ZERO_FILLED_KEY, scored.zero_filled)):
                self._metrics[name].update(scored.target, image, scored.max_value, keys, scored.slice_num)
        return loss, recon

    def _gathered_metrics(self, batch_limit: int | float = 1.0) -> tuple[dict[str, dict], float]:
        """Per-volume metrics of both methods over every process's slices, and the mean loss.

        One exchange per epoch: every process gets every slice's numbers and computes the same
        per-volume metrics a single process would (a slice repeated to pad a shard counts once).
        ``batch_limit`` is the trainer's ``limit_{val,test}_batches``: below all of them
        (a fraction, or a count), volumes may be scored on some of their slices.
        """
        whole_volumes = isinstance(batch_limit, float) and batch_limit >= 1.0
        local = ({name: acc.records() for name, acc in self._metrics.items()},
                 float(self._loss_total), self._loss_slices)
        parts = gather_objects(local)
        out = {}
        for name in self._metrics:
            merged = VolumeMetricAccumulator(crop_to_square=True)
            merged.merge([record for records, _, _ in parts for record in records[name]])
            out[name] = merged.compute(whole_volumes)
        slices = sum(n for _, _, n in parts)
        return out, (sum(total for _, total, _ in parts) / slices if slices else float("nan"))

    def on_validation_epoch_start(self) -> None:
        self._reset_metrics()
        num_batches = int(self.trainer.num_val_batches[0]) if self.trainer.num_val_batches else 0
        n = min(self.num_log_images, num_batches)
        # Evenly spaced batches of the unshuffled val loader: the same slices every epoch.
        self._log_batches = {round(i * (num_batches - 1) / max(n - 1, 1)) for i in range(n)} if n else set()
        self._image_rows = []

    def validation_step(self, batch: KSpaceBatch, batch_idx: int) -> None:
        _, recon = self._evaluate_batch(batch)
        if batch_idx in self._log_batches and not batch.padding[0] and batch.has_target[0]:
            self._image_rows.append(
                ImageRow(batch.fname[0], batch.slice_num[0], batch.acceleration[0], batch.target[0],
                         batch.zero_filled[0], recon[0].detach(), batch.max_value[0])
            )

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            # The sanity check sees a few slices of one volume: no volume metric to report.
            self._reset_metrics()
            return
        per_volume, loss = self._gathered_metrics(self.trainer.limit_val_batches)
        # Every process holds the same numbers now; sync_dist (a mean of equal values) only
        # keeps Lightning's bookkeeping of epoch-level metrics in a distributed run consistent.
        self.log("val/loss", loss, sync_dist=True)
        for name, prefix in VALIDATION_PREFIXES.items():
            volumes = per_volume[name]
            if not volumes:
                continue
            for metric in VALIDATION_METRICS:
                values = [v[metric] for v in volumes.values()]
                self.log(metric_name(prefix, metric), sum(values) / len(values), sync_dist=True,
                         prog_bar=(name == MODEL_KEY and metric == "ssim"))
                for acc in sorted({a for _, a in volumes}):
                    sel = [v[metric] for (f, a), v in volumes.items() if a == acc]
                    self.log(metric_name(prefix, metric, acc), sum(sel) / len(sel), sync_dist=True)
        if self._image_rows and self.trainer.is_global_zero:
            # The step Lightning gives the epoch's val/* scalars (it counts optimiser steps
            # before incrementing), so images and curves line up in TensorBoard.
            step = internals.batches_that_stepped(self.trainer)
            log_validation_images(self.logger, self._image_rows, self.method_name, step)
        self._image_rows = []

    def on_test_epoch_start(self) -> None:
        self._reset_metrics()
        self.test_results = None

    def test_step(self, batch: KSpaceBatch, batch_idx: int) -> dict[str, Any]:
        if not all(batch.has_target):
            fname = next(f for f, t in zip(batch.fname, batch.has_target) if not t)
            raise UserError(f"{fname}: no target to score against; reconstruct such files with `mrirecon predict`")
        _, recon = self._evaluate_batch(batch, testing=True)
        return self._outputs(batch, recon)

    def on_test_epoch_end(self) -> None:
        per_volume, _ = self._gathered_metrics(self.trainer.limit_test_batches)
        if not per_volume[MODEL_KEY]:
            return
        dm = self.trainer.datamodule
        acquisitions = {v.path.name: v.acquisition for v in dm.evaluation_volumes()} if dm is not None else {}
        self.test_results = EvaluationResults(
            {self.method_name: per_volume[MODEL_KEY], ZERO_FILLED_KEY: per_volume[ZERO_FILLED_KEY]},
            acquisitions, getattr(dm, "test_split", None))

    def predict_step(self, batch: KSpaceBatch, batch_idx: int) -> dict[str, Any]:
        return self._outputs(batch, self._evaluation_reconstruction(batch))

    @staticmethod
    def _outputs(batch: KSpaceBatch, recon: torch.Tensor) -> dict[str, Any]:
        """What a ReconstructionWriter needs of a batch."""
        return {"reconstruction": recon, "fname": batch.fname, "slice_num": batch.slice_num,
                "acceleration": batch.acceleration, "padding": batch.padding}

    # --- optimisation ---------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # The lr this step uses. Not in on_train_batch_end: Lightning steps epoch-interval
        # schedulers before that hook on an epoch's last batch, so it would show the next epoch's.
        # Straight to the logger, at the steps Lightning logs train/loss: self.log would put a
        # Python number on the GPU every step.
        trainer = self.trainer
        if trainer.optimizers and trainer.is_global_zero and self.logger is not None:
            step = internals.batches_that_stepped(trainer)
            if (step + 1) % max(trainer.log_every_n_steps, 1) == 0:
                self.logger.log_metrics({"train/lr": trainer.optimizers[0].param_groups[0]["lr"]}, step=step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)

