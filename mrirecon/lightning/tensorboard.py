"""What mrirecon adds to a run's TensorBoard besides Lightning's scalars.

* :func:`log_hparams_table`: the run's settings in TensorBoard's HParams plugin, with the
  validation metrics as its metric columns, so the runs of a study compare in one table (the
  values are the scalars' latest, which TensorBoard reads itself);
* :func:`log_test_results`: ``mrirecon test``'s numbers in the checkpoint's own run, at the
  checkpoint's step, instead of a new run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pytorch_lightning as pl
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from mrirecon.evaluation.results import acceleration_label
from mrirecon.internals import tensorboard_file_writer

METRIC_TAGS = ("val/ssim", "val/psnr", "val/nmse", "val/loss", "val/ssim_4x", "val/ssim_8x")


def _value(value: Any) -> Any:
    """TensorBoard's HParams take numbers, strings and booleans."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def log_hparams_table(logger: Any, table: Mapping[str, Any], metric_tags: tuple[str, ...] = METRIC_TAGS) -> None:
    """Writes the HParams plugin's records for ``table`` into a TensorBoardLogger's run."""
    experiment = getattr(logger, "experiment", None)
    writer = tensorboard_file_writer(experiment)
    if writer is None:
        return
    exp, ssi, sei = hparams({k: _value(v) for k, v in table.items()}, {tag: 0.0 for tag in metric_tags})
    for summary in (exp, ssi, sei):
        writer.add_summary(summary)
    experiment.flush()


def log_test_results(run_dir: Path, step: int, split: str, summary: Mapping[str, Mapping[float, Mapping[str, Any]]]) -> None:
    """``test/<split>/<method>/<metric>_<acc>`` scalars (the mean over volumes) at ``step``."""
    writer = SummaryWriter(log_dir=str(run_dir))
    try:
        for method, by_acc in summary.items():
            for acc, entry in by_acc.items():
                for metric in ("ssim", "psnr", "nmse"):
                    value = entry[metric]["mean"]
                    if isinstance(value, float):
                        writer.add_scalar(f"test/{split}/{method}/{metric}_{acceleration_label(acc)}", value, step)
    finally:
        writer.close()


def hparams_table(config: dict[str, Any], world_size: int) -> dict[str, Any]:
    """The settings a study compares runs by, flat, for TensorBoard's HParams plugin."""
    model, data, trainer = config.get("model", {}), config.get("data", {}), config.get("trainer", {})
    net = model.get("net") or {}
    optimizer = config.get("optimizer") or {}
    scheduler = config.get("lr_scheduler") or {}
    table: dict[str, Any] = {"net": str(net.get("class_path", "")).rsplit(".", 1)[-1]}
    table.update({f"net.{k}": v for k, v in (net.get("init_args") or {}).items() if isinstance(v, (bool, int, float, str))})
    table.update({
        "loss": model.get("loss"),
        "optimizer": str(optimizer.get("class_path", "")).rsplit(".", 1)[-1],
        **{f"optimizer.{k}": v for k, v in (optimizer.get("init_args") or {}).items() if isinstance(v, (bool, int, float))},
        "lr_scheduler": str(scheduler.get("class_path", "none")).rsplit(".", 1)[-1],
        "batch_size": data.get("batch_size"),
        "effective_batch_size": (data.get("batch_size") or 1) * world_size,
        "challenge": data.get("challenge"),
        "mask_type": data.get("mask_type"),
        "accelerations": data.get("accelerations"),
        "center_fractions": data.get("center_fractions"),
        "seed": config.get("seed_everything"),
        "precision": trainer.get("precision"),
    })
    return {k: v for k, v in table.items() if v is not None}


class HParamsTable(pl.Callback):
    """Writes a fit's settings (:func:`hparams_table` of its resolved config) into its
    TensorBoard run's HParams table when the fit starts, from the first process."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            log_hparams_table(trainer.logger, hparams_table(self.config, trainer.world_size))
