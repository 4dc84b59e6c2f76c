"""The LightningModule: trains a given image-to-image network on zero-filled inputs.

It receives its network (LightningCLI's ``model.net`` with a ``class_path``), so the same module
trains any architecture. The optimiser and scheduler come from LightningCLI's standard
``optimizer:`` / ``lr_scheduler:`` sections; :meth:`ReconModule.configure_optimizers` is the
fallback (Adam, lr 1e-3) for use outside the CLI.

Validation and test score every volume per acceleration with fastMRI's metric definitions, in
image units on the cropped images, for the network and for its zero-filled input.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from fastmri.losses import SSIMLoss
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from mrirecon.data.dataset import ReconBatch
from mrirecon.data.transforms import unnormalize
from mrirecon.errors import UserError
from mrirecon.evaluation.metrics import VolumeMetricAccumulator
from mrirecon.evaluation.results import format_table, write_results
from mrirecon.models.unet import Unet
from mrirecon.training.image_logging import log_validation_grid

MODEL_KEY = "unet"
ZERO_FILLED_KEY = "zero-filled"


def describe_network(net: nn.Module) -> dict[str, Any]:
    """The class and constructor arguments of a network, for hyperparameter logging."""
    params = inspect.signature(type(net).__init__).parameters
    args = {name: getattr(net, name) for name in params if name != "self" and hasattr(net, name)}
    return {"class_path": f"{type(net).__module__}.{type(net).__qualname__}", "init_args": args}


class ReconModule(pl.LightningModule):
    """Supervised reconstruction from zero-filled magnitude images.

    Args:
        net: the network, mapping (B, 1, H, W) normalised zero-filled images to the target.
        loss: ``l1`` (fastMRI's U-Net loss) or ``ssim`` (1 - SSIM in image units).
        num_log_images: validation slices shown in TensorBoard each epoch (fixed slices).
        method_name: the name of this model in result tables.
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        loss: Literal["l1", "ssim"] = "l1",
        num_log_images: int = 4,
        method_name: str = MODEL_KEY,
    ) -> None:
        super().__init__()
        self.net = net if net is not None else Unet()
        self.save_hyperparameters(ignore=["net"])
        # A second call (not `self.hparams[...] = ...`) so that hparams_initial, which the
        # loggers write to hparams.yaml, holds the network too.
        self.save_hyperparameters({"net": describe_network(self.net)})
        self.loss_name = loss
        self.ssim_loss = SSIMLoss() if loss == "ssim" else None
        self.num_log_images = num_log_images
        self.method_name = method_name
        self.output_dir: Path | None = None  # set by the CLI for test/predict
        self._metrics = {MODEL_KEY: VolumeMetricAccumulator(), ZERO_FILLED_KEY: VolumeMetricAccumulator()}
        self._log_batches: set[int] = set()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def _loss(self, output: torch.Tensor, batch: ReconBatch) -> torch.Tensor:
        if self.ssim_loss is None:
            return F.l1_loss(output, batch.target)
        # SSIM is scale invariant once data_range scales too: dividing by the volume max keeps
        # the constants C1, C2 in a float32-friendly range for fastMRI's tiny intensities.
        scale = batch.max_value.float().clamp_min(1e-12)[:, None, None, None]
        pred = unnormalize(output, batch.mean, batch.std) / scale
        target = batch.target_image.unsqueeze(1) / scale
        return self.ssim_loss(pred, target, torch.ones_like(batch.max_value))

    def training_step(self, batch: ReconBatch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch.input), batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.input.shape[0])
        return loss

    # --- validation and test: per-volume metrics --------------------------------------------
    def _reset_metrics(self) -> None:
        for acc in self._metrics.values():
            acc.reset()

    def _evaluate_batch(self, batch: ReconBatch) -> tuple[torch.Tensor, torch.Tensor]:
        output = self(batch.input)
        loss = self._loss(output, batch)
        recon = unnormalize(output, batch.mean, batch.std).squeeze(1)
        keys = [(f, float(a)) for f, a in zip(batch.fname, batch.acceleration.tolist())]
        for name, image in ((MODEL_KEY, recon), (ZERO_FILLED_KEY, batch.zero_filled)):
            self._metrics[name].update(batch.target_image, image, batch.max_value, keys, batch.slice_num)
        return loss, recon

    def on_validation_epoch_start(self) -> None:
        self._reset_metrics()
        num_batches = self.trainer.num_val_batches[0] if self.trainer.num_val_batches else 0
        n = min(self.num_log_images, int(num_batches))
        # Evenly spaced batches of the unshuffled val loader: the same slices every epoch.
        self._log_batches = {round(i * (num_batches - 1) / max(n - 1, 1)) for i in range(n)} if n else set()
        self._log_images: list[tuple[torch.Tensor, ...]] = []

    def validation_step(self, batch: ReconBatch, batch_idx: int) -> None:
        loss, recon = self._evaluate_batch(batch)
        self.log("val/loss", loss, batch_size=batch.input.shape[0], sync_dist=True)
        if batch_idx in self._log_batches:
            self._log_images.append(
                (batch.target_image[0], batch.zero_filled[0], recon[0], batch.max_value[0])
            )

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            # The sanity check sees a few slices of one volume: no volume metric to report.
            self._reset_metrics()
            return
        per_volume = {name: acc.compute() for name, acc in self._metrics.items()}
        for name, prefix in ((MODEL_KEY, "val"), (ZERO_FILLED_KEY, "val_zero_filled")):
            volumes = per_volume[name]
            if not volumes:
                continue
            for metric in ("ssim", "psnr", "nmse"):
                values = [v[metric] for v in volumes.values()]
                self.log(f"{prefix}/{metric}", sum(values) / len(values), prog_bar=(name == MODEL_KEY and metric == "ssim"))
                for acc in sorted({a for _, a in volumes}):
                    sel = [v[metric] for (f, a), v in volumes.items() if a == acc]
                    self.log(f"{prefix}/{metric}_{acc:g}x", sum(sel) / len(sel))
        if self._log_images:
            log_validation_grid(self.logger, self._log_images, self.global_step)

    def on_test_epoch_start(self) -> None:
        self._reset_metrics()

    def test_step(self, batch: ReconBatch, batch_idx: int) -> None:
        if not bool(batch.has_target.all()):
            fname = next(f for f, t in zip(batch.fname, batch.has_target.tolist()) if not t)
            raise UserError(f"{fname}: no target to score against; reconstruct such files with `mrirecon predict`")
        self._evaluate_batch(batch)

    def on_test_epoch_end(self) -> None:
        per_volume = {self.method_name: self._metrics[MODEL_KEY].compute(), ZERO_FILLED_KEY: self._metrics[ZERO_FILLED_KEY].compute()}
        if not per_volume[self.method_name]:
            return
        out_dir = Path(self.output_dir or self.trainer.log_dir or ".")
        meta = {"split": getattr(self.trainer.datamodule, "test_split", None), "checkpoint": self.trainer.ckpt_path}
        summary = write_results(per_volume, out_dir, meta)
        if self.trainer.is_global_zero:
            print("\n" + format_table(summary["methods"]))
            print(f"\nper-volume metrics: {out_dir / 'metrics.csv'}\nsummary: {out_dir / 'summary.json'}")

    def predict_step(self, batch: ReconBatch, batch_idx: int) -> dict[str, Any]:
        recon = unnormalize(self(batch.input), batch.mean, batch.std).squeeze(1)
        return {
            "reconstruction": recon.float().cpu(),
            "fname": batch.fname,
            "slice_num": batch.slice_num.cpu(),
            "acceleration": batch.acceleration.cpu(),
        }

    # --- optimisation ---------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # The lr this step uses. Not in on_train_batch_end: Lightning steps epoch-interval
        # schedulers before that hook on an epoch's last batch, so it would show the next epoch's.
        if self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def configure_callbacks(self) -> list[pl.Callback]:
        # Best by validation SSIM plus the last one, so `--ckpt_path last` resumes. Only when
        # fitting: test and predict write no checkpoints.
        if self.trainer.state.fn != "fit":
            return []
        return [
            ModelCheckpoint(
                monitor="val/ssim",
                mode="max",
                filename="best-epoch={epoch}-step={step}",
                auto_insert_metric_name=False,
                save_last=True,
            ),
        ]
