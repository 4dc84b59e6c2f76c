"""Checkpoints a researcher can trust: verified on load, atomic on save, ``last.ckpt`` always last.

* :class:`SafeCheckpointIO` saves through :mod:`mrirecon.core.atomic` (a temporary file in the
  checkpoint's own folder, renamed into place: Lightning's own save becomes a copy when the
  run folder is on another filesystem than ``/tmp``, and a kill then truncates the file), and
  loads only after :func:`read_checkpoint` has checked the file.
* loads go through :func:`mrirecon.core.checkpoint_files.read_checkpoint`, which refuses
  damaged, foreign, code-carrying or non-finite checkpoints with one line.
* :class:`LastCheckpoint` writes ``last.ckpt`` at the end of every validation and epoch, every
  ``every_n_train_steps`` steps if asked, after the step at which ``max_steps`` or ``max_time``
  stops training, and on Ctrl-C or SIGTERM (a cluster's preemption): the running step finishes,
  is saved, and training stops (a second Ctrl-C stops at once). Mid-epoch saves happen at the end of a step, the one point from
  which Lightning resumes exactly. Lightning's ``ModelCheckpoint(save_last=True)`` with a monitored metric rewrites
  it only when a best checkpoint is saved, so a fit could end with ``last.ckpt`` epochs behind.
* :func:`resolve_checkpoint` turns ``--ckpt_path last`` / ``best`` into the newest run's file
  and :func:`run_folder_of` finds the run a checkpoint belongs to, so that a resumed fit
  continues in the same run folder and evaluation writes next to it.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint

from mrirecon.core import atomic
from mrirecon.core.checkpoint_files import peek_checkpoint, read_checkpoint
from mrirecon.errors import UserError
from mrirecon import internals
from mrirecon.internals import ModelCheckpointHooks

LAST = "last.ckpt"
# Ctrl-C, and what a cluster sends before it preempts or times out a job.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CHECKPOINT_FOLDER = "checkpoints"
_VERSION = re.compile(r"^version_(\d+)$")


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic saves, verified loads (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        # Serialised in memory first (as Lightning does), so that a failing write (disk full) is
        # our OSError, not an error from inside torch's zip writer.
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic.write_bytes(path, buffer.getbuffer())

    def load_checkpoint(self, path: Any, map_location: Optional[Callable] = None, weights_only: Optional[bool] = None) -> dict[str, Any]:
        # weights_only is always True: see read_checkpoint. The CLI refuses --weights_only false.
        return read_checkpoint(path, map_location=map_location if map_location is not None else "cpu")


# The entry of a checkpoint made by ``mrirecon import``: the state dict it holds the weights of.
IMPORTED_FROM = "imported_from"


class ImportRecord(pl.Callback):
    """Writes where imported weights came from (``imported_from``) and the data settings into
    the checkpoint: what a fit's checkpoint says of its DataModule (``reconstruct`` reads it)."""

    def __init__(self, record: dict[str, Any], datamodule: pl.LightningDataModule) -> None:
        self.record = record
        self.datamodule = datamodule

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[IMPORTED_FROM] = self.record
        checkpoint[self.datamodule.CHECKPOINT_HYPER_PARAMS_KEY] = dict(self.datamodule.hparams_initial)


def save_untrained_checkpoint(trainer: pl.Trainer, module: pl.LightningModule, datamodule: pl.LightningDataModule,
                              path: Path, record: dict[str, Any]) -> None:
    """A checkpoint of ``module`` as it is (weights set from outside, no step taken), in the
    format ``fit`` writes, so that test, predict, reconstruct, report and export read it alike."""
    trainer.callbacks.append(ImportRecord(record, datamodule))
    trainer.strategy.connect(module)  # what fit or test would do first; save_checkpoint needs it
    trainer.save_checkpoint(path)


def run_folder_of(checkpoint: str | Path) -> Path:
    """The run a checkpoint belongs to: ``<run>`` for ``<run>/checkpoints/x.ckpt``, else its folder."""
    checkpoint = Path(checkpoint).resolve()
    folder = checkpoint.parent
    return folder.parent if folder.name == CHECKPOINT_FOLDER else folder


def run_version(run: Path) -> Optional[int]:
    """N for a TensorBoard run folder ``version_N``, else None."""
    match = _VERSION.match(Path(run).name)
    return int(match.group(1)) if match else None


def newest_run(runs_root: Path) -> Optional[Path]:
    """The ``version_N`` folder with the highest N that holds a ``checkpoints/last.ckpt``."""
    if not runs_root.is_dir():
        return None
    runs = [p for p in runs_root.iterdir() if run_version(p) is not None and (p / CHECKPOINT_FOLDER / LAST).is_file()]
    return max(runs, key=lambda p: run_version(p)) if runs else None


def resolve_checkpoint(ckpt_path: str, runs_root: Path) -> Path:
    """A checkpoint file for ``--ckpt_path``: a path, or ``last``/``best`` of the newest run.

    Args:
        ckpt_path: a file, ``last`` or ``best``.
        runs_root: the logger's ``<save_dir>/<name>`` folder holding ``version_N`` runs.

    Raises:
        UserError: there is no such file, or no run with a ``last.ckpt`` under ``runs_root``.
    """
    if ckpt_path not in ("last", "best"):
        return Path(ckpt_path)
    run = newest_run(runs_root)
    if run is None:
        raise UserError(f"--ckpt_path {ckpt_path}: no run under {runs_root} has a {CHECKPOINT_FOLDER}/{LAST}; pass a checkpoint file")
    last = run / CHECKPOINT_FOLDER / LAST
    if ckpt_path == "last":
        return last
    best = sorted((run / CHECKPOINT_FOLDER).glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    for state in peek_checkpoint(last).get("callbacks", {}).values():
        if isinstance(state, dict) and state.get("best_model_path") and Path(state["best_model_path"]).is_file():
            return Path(state["best_model_path"])
    if best:
        return best[-1]
    raise UserError(f"--ckpt_path best: {run} has no best checkpoint yet (no validation has finished)")


class BestCheckpoint(ModelCheckpointHooks, ModelCheckpoint):
    """Lightning's top-k checkpoints by a validation metric, quiet when there is none to rank.

    A fit stopped in the middle of an epoch (``max_steps``, ``max_time``, Ctrl-C) still runs
    Lightning's epoch-end hooks without a new validation; ModelCheckpoint then warns that the
    metric is missing. ``last.ckpt`` holds that state; there is nothing to rank.
    """

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's own key, so that checkpoints of 0.1 (written by ModelCheckpoint)
        # restore the best-checkpoint state too.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def can_rank(self, monitor_candidates: dict[str, Any]) -> bool:
        return self.monitor is None or self.monitor in monitor_candidates

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the ranking of a resumed run whose checkpoint folder is now spelled otherwise.

        Lightning restores the best scores only when the stored folder is the same string:
        a run made with a relative ``save_dir`` (``runs``) and resumed through its absolute
        path, or a run folder moved since, would lose them, so the next validation, however
        poor, became the best and the earlier best files were never removed (two ``best-*``
        with ``save_top_k: 1``). The stored paths are moved onto this folder when every ranked
        file is found there: the same run, wherever it now lies.
        """
        stored, here = state_dict.get("dirpath"), self.dirpath
        ranked = state_dict.get("best_k_models") or {}
        if stored and here and stored != here and ranked and all(
                os.path.dirname(p) == stored and os.path.isfile(os.path.join(here, os.path.basename(p))) for p in ranked):
            def moved(path: str) -> str:
                return os.path.join(here, os.path.basename(path)) if path and os.path.dirname(path) == stored else path

            state_dict = {**state_dict, "dirpath": here, "best_k_models": {moved(p): v for p, v in ranked.items()},
                          **{key: moved(state_dict.get(key, "")) for key in ("best_model_path", "kth_best_model_path", "last_model_path")}}
        super().load_state_dict(state_dict)


class LastCheckpoint(Checkpoint):
    """Keeps ``<run>/checkpoints/last.ckpt`` the latest state of the run; see the module docstring.

    It also stores the random number generators' states, so a resumed run draws what the
    uninterrupted one would have (dropout); the data order and masks are resumed by the sampler.

    Args:
        every_n_train_steps: also save every this many optimiser steps (None: only at the end
            of validations, epochs and training). Long epochs on the real download want this.
    """

    def __init__(self, every_n_train_steps: Optional[int] = None) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise UserError(f"checkpoint.every_n_train_steps: must be at least 1, got {every_n_train_steps}")
        self.every_n_train_steps = every_n_train_steps
        self.dirpath: Optional[Path] = None
        self._saved_step = -1
        self._interrupted = False
        self._previous_handlers: dict[int, Any] = {}

    @property
    def path(self) -> Optional[Path]:
        return self.dirpath / LAST if self.dirpath is not None else None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        root = Path(trainer.log_dir or trainer.default_root_dir)
        self.dirpath = root / CHECKPOINT_FOLDER
        if trainer.is_global_zero:
            atomic.remove_stale_temporaries(self.dirpath)

    def save(self, trainer: pl.Trainer) -> None:
        """Writes ``last.ckpt`` unless it already holds this step (the module refuses a diverged state)."""
        if self.dirpath is None or trainer.sanity_checking or self._saved_step == trainer.global_step:
            return
        trainer.save_checkpoint(self.dirpath / LAST)
        self._saved_step = trainer.global_step

    # Ctrl-C and SIGTERM (preemption): finish the step, save, stop. -------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._interrupted:
            raise KeyboardInterrupt  # the second one: stop at once
        self._interrupted = True
        print(f"\n{signal.Signals(signum).name}: finishing this step, then saving last.ckpt "
              "(Ctrl-C again to stop at once)", file=sys.stderr)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._interrupted = False
        if threading.current_thread() is threading.main_thread():
            self._previous_handlers = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}

    def _restore_handler(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handler()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        # Lightning resumes mid-epoch only from a checkpoint written at the end of a step, so a
        # stop by max_steps or max_time (the Timer runs before checkpoint callbacks) saves here.
        periodic = self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0
        last_step = 0 < trainer.max_steps <= trainer.global_step
        interrupted = self._interrupted
        if trainer.world_size > 1:
            # Every process must stop at the same step (the save is collective); agreeing costs
            # an exchange, so it happens every log_every_n_steps steps only.
            every = max(trainer.log_every_n_steps, 1)
            interrupted = trainer.global_step % every == 0 and trainer.strategy.reduce_boolean_decision(interrupted, all=False)
        if periodic or last_step or trainer.should_stop or interrupted:
            self.save(trainer)
        if interrupted and not trainer.should_stop:
            # Stop the way max_steps does, after this step's metrics are logged.
            trainer.should_stop = True
            if trainer.is_global_zero and self.path is not None:
                print(f"interrupted after step {trainer.global_step}: resume with --ckpt_path {self.path}", file=sys.stderr)

    @property
    def interrupted(self) -> bool:
        """Whether a Ctrl-C stopped training (the CLI then exits as interrupted)."""
        return self._interrupted

    @staticmethod
    def _validation_ends_epochs(trainer: pl.Trainer) -> bool:
        """Whether validations run once at each epoch's end: then ModelCheckpoint saves the best
        checkpoint in ``on_train_epoch_end`` (its own rule, mirrored here), and last.ckpt must
        be written after it, so that it holds the updated best-checkpoint state."""
        if internals.validates_by_time(trainer) or trainer.check_val_every_n_epoch != 1:
            return False
        return trainer.val_check_interval == 1.0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not self._validation_ends_epochs(trainer):
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # A stop in the middle of a step (a second Ctrl-C, an error) saves nothing: the state is
        # between two steps' bookkeeping, and last.ckpt keeps the previous good one.
        self._restore_handler()

    def state_dict(self) -> dict[str, Any]:
        state = {"rng_cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng_cpu" in state_dict:
            torch.set_rng_state(state_dict["rng_cpu"])
        if "rng_cuda" in state_dict and torch.cuda.is_available() and len(state_dict["rng_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["rng_cuda"])

