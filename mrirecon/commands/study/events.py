"""Reading a study's runs back from their TensorBoard event files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

def load_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Scalars of a run's event files as ``tag -> (steps, values)``.

    Steps count training steps done: TensorBoard's step is 0-based, so the validation logged
    at its step 49 is the one after 50 steps.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1, "tensors": 1, "histograms": 1})
    events.Reload()
    scalars = {}
    for tag in events.Tags()["scalars"]:
        entries = events.Scalars(tag)
        scalars[tag] = (np.array([e.step + 1 for e in entries]), np.array([e.value for e in entries], dtype=float))
    return scalars


@dataclass
class RunSummary:
    """Numbers of one finished run."""

    ssim: tuple[np.ndarray, np.ndarray]
    train_loss: tuple[np.ndarray, np.ndarray]
    best_ssim: float
    psnr_at_best: float
    zero_filled_ssim: float
    final_train_loss: float
    final_val_loss: float
    final_val_loss_batch_stats: float
    val_loss: tuple[np.ndarray, np.ndarray]
    val_loss_batch_stats: tuple[np.ndarray, np.ndarray]
    largest_drop: float

    def steps_to(self, target: float) -> Optional[int]:
        """Training steps until the first validation at or above ``target``; None if never."""
        reached = np.nonzero(self.ssim[1] >= target)[0]
        return int(self.ssim[0][reached[0]]) if reached.size else None


def summarise_run(scalars: dict[str, tuple[np.ndarray, np.ndarray]]) -> RunSummary:
    """Summarises one run's scalars.

    Args:
        scalars: The run's scalars, as :func:`load_scalars` returns them.

    Returns:
        The best validation SSIM and the PSNR of that validation, the final losses, the
        curves, and the largest fall of validation SSIM from one validation to the next (how
        steadily the run trains).
    """
    steps, ssim = scalars["val/ssim"]
    best = int(np.argmax(ssim))
    psnr_steps, psnr = scalars["val/psnr"]
    train_steps, train = scalars["train/loss"]
    # The last tenth of training, so that one noisy batch does not decide the number.
    tail = train[train_steps > train_steps[-1] * 0.9]
    val_loss = scalars["val/loss"]
    batch_stats = scalars.get("val/loss_batch_stats", val_loss)
    return RunSummary(
        ssim=(steps, ssim),
        train_loss=(train_steps, train),
        best_ssim=float(ssim[best]),
        psnr_at_best=float(psnr[psnr_steps == steps[best]][0]),
        zero_filled_ssim=float(scalars["val_zero_filled/ssim"][1][-1]),
        final_train_loss=float(tail.mean()),
        final_val_loss=float(val_loss[1][-1]),
        final_val_loss_batch_stats=float(batch_stats[1][-1]),
        val_loss=val_loss,
        val_loss_batch_stats=batch_stats,
        largest_drop=float(max(0.0, -np.diff(ssim).min())) if ssim.size > 1 else 0.0,
    )
