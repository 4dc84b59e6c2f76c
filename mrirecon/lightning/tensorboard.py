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

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

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
    if experiment is None or not hasattr(experiment, "_get_file_writer"):
        return
    exp, ssi, sei = hparams({k: _value(v) for k, v in table.items()}, {tag: 0.0 for tag in metric_tags})
    writer = experiment._get_file_writer()
    for summary in (exp, ssi, sei):
        writer.add_summary(summary)
    experiment.flush()


def log_test_results(run_dir: Path, step: int, split: str, summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
    """``test/<split>/<method>/<metric>_<acc>`` scalars (the mean over volumes) at ``step``."""
    writer = SummaryWriter(log_dir=str(run_dir))
    try:
        for method, by_acc in summary.items():
            for acc, entry in by_acc.items():
                for metric in ("ssim", "psnr", "nmse"):
                    value = entry[metric]["mean"]
                    if isinstance(value, float):
                        writer.add_scalar(f"test/{split}/{method}/{metric}_{acc}", value, step)
    finally:
        writer.close()
